"""The lifecycle state of a job (templemeads ``job::Status``)."""

from __future__ import annotations

from ._json import WireEnum

__all__ = ["Status"]


class Status(WireEnum):
    """A job's state; ``value`` is the exact wire spelling.

    Rust serialises the capitalised variant names and rejects any other
    spelling on input (the repository's docs show lowercase, which is wrong;
    notes §0 erratum 3).  ``str(status)`` gives the wire form; :attr:`display`
    gives Rust's lowercase ``Display`` form used in log lines.
    """

    CREATED = "Created"
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETE = "Complete"
    ERROR = "Error"
    DUPLICATE = "Duplicate"

    @property
    def is_finished(self) -> bool:
        """Complete or Error - the only terminal states (Duplicate is not one)."""
        return self in (Status.COMPLETE, Status.ERROR)
