"""Aliases for the modules that moved from ``broadgauge.jobs`` to :mod:`broadgauge.runtime`.

Each old module is a two-line file calling :func:`alias`; importing it still works for one
more release, with a DeprecationWarning.  The target is imported by name, not by an import
statement, so the pure jobs core never depends on the runtime.
"""

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Make module ``old`` another name for module ``new``, warning the importer."""
    warnings.warn(
        f"{old} moved to {new}; the old path goes in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    sys.modules[old] = importlib.import_module(new)
