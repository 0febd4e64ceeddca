"""Broadgauge: an OpenPortal-compatible agent network in Python, with an Execution Planner."""

__version__ = "0.1.0"

#: The OpenPortal release whose wire protocol, grammar and Job JSON we match.
OPENPORTAL_VERSION = "0.32.2"
