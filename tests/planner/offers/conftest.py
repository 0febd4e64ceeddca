"""Fixtures for the offers tests: the real PostgreSQL the suite starts (when asked for)."""

from tests.backends.postgres import postgres

__all__ = ["postgres"]
