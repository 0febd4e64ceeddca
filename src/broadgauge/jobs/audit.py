"""Deprecated alias of :mod:`broadgauge.runtime.audit` (goes in the next release)."""

from broadgauge.jobs._moved import alias

alias(__name__, "broadgauge.runtime.audit")
