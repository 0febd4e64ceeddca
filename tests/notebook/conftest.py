"""Fixtures for the notebook tests: the real JupyterHub the suite starts."""

from tests.backends.jupyterhub import jupyterhub

__all__ = ["jupyterhub"]
