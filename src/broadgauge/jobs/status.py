"""The lifecycle state of a job (templemeads ``job::Status``)."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.Enum):
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

    def __str__(self) -> str:
        return self.value

    @property
    def display(self) -> str:
        """Rust's ``Display`` form (``pending``), for human-facing text only."""
        return self.value.lower()

    @property
    def is_finished(self) -> bool:
        """Complete or Error - the only terminal states (Duplicate is not one)."""
        return self in (Status.COMPLETE, Status.ERROR)

    @classmethod
    def from_wire(cls, value: object) -> Status:
        """Decode the wire spelling exactly; anything else raises ``ValueError``.

        Rust (serde) would also take the map form ``{"Pending": null}``; no
        Rust writer produces it, so we deliberately accept only the string.
        """
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        expected = ", ".join(f"`{s.value}`" for s in cls)
        raise ValueError(f"unknown variant {value!r}, expected one of {expected}")
