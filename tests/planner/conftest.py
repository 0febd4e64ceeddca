"""Fixtures for the planner tests: the real OIDC provider and JupyterHub the suite starts."""

from tests.backends.jupyterhub import jupyterhub
from tests.backends.oidc import oidc_provider

__all__ = ["jupyterhub", "oidc_provider"]
