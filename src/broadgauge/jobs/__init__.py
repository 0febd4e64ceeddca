"""Jobs, boards and the templemeads wire commands: the pure core of the agent network.

* :class:`Job` / :class:`Status` - the job value and its state machine (notes §3.1-3.3)
* :func:`encode_command` / :func:`decode_command` - templemeads commands (§3.6)
* :class:`Notification` - fire-and-forget events (§3.9)
* :class:`Board` - one peer's board: replace rules, duplicates, cleaner, sync (§3.4-3.5)

Nothing here performs I/O, reads the clock (time is passed in) or imports asyncio, sqlite3
or the wire: ``lint-imports`` holds that.  The engine that moves jobs between agents,
with the durable store, is :mod:`broadgauge.runtime`.
"""

import importlib
import warnings
from typing import Any

from .agent_type import AgentType
from .board import (
    AddOutcome,
    AddResult,
    Board,
    BoardChange,
    BoardStats,
    RemoveResult,
    SyncAction,
    SyncDecision,
)
from .commands import (
    HARD_RESTART,
    SOFT_RESTART,
    Delete,
    DiagnosticsRequest,
    DiagnosticsResponse,
    ErrorCommand,
    HealthCheck,
    HealthResponse,
    JobCommand,
    Notify,
    Put,
    Register,
    Restart,
    Sync,
    Update,
    WireCommand,
    decode_command,
    encode_command,
)
from .errors import (
    ExpiredError,
    InvalidStateError,
    JobDecodeError,
    JobsError,
    ProtocolError,
    StoreError,
)
from .health import (
    ENGINE,
    DiagnosticsReport,
    ExpiredJobEntry,
    FailedJobEntry,
    HealthInfo,
    LogEntry,
    NotificationStatistics,
    RunningJobEntry,
    SlowJobEntry,
)
from .job import DEFAULT_LIFETIME_SECONDS, Job, parse_uuid
from .notification import EventKind, Notification, NotificationEvent
from .status import Status

__all__ = [
    "DEFAULT_LIFETIME_SECONDS",
    "ENGINE",
    "HARD_RESTART",
    "SOFT_RESTART",
    "AddOutcome",
    "AddResult",
    "AgentType",
    "Board",
    "BoardChange",
    "BoardStats",
    "Delete",
    "DiagnosticsReport",
    "DiagnosticsRequest",
    "DiagnosticsResponse",
    "ErrorCommand",
    "EventKind",
    "ExpiredError",
    "ExpiredJobEntry",
    "FailedJobEntry",
    "HealthCheck",
    "HealthInfo",
    "HealthResponse",
    "InvalidStateError",
    "Job",
    "JobCommand",
    "JobDecodeError",
    "JobsError",
    "LogEntry",
    "Notification",
    "NotificationEvent",
    "NotificationStatistics",
    "Notify",
    "ProtocolError",
    "Put",
    "Register",
    "RemoveResult",
    "Restart",
    "RunningJobEntry",
    "SlowJobEntry",
    "Status",
    "StoreError",
    "Sync",
    "SyncAction",
    "SyncDecision",
    "Update",
    "WireCommand",
    "decode_command",
    "encode_command",
    "parse_uuid",
]

#: Names that moved to :mod:`broadgauge.runtime.store`, importable from here for one more
#: release (with a DeprecationWarning).
_MOVED = {"BoardStore", "Execution", "QueuedPayload"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"broadgauge.jobs.{name} moved to broadgauge.runtime.store.{name}; the old path "
            "goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        # By name, not by import: the core must not depend on the runtime.
        return getattr(importlib.import_module("broadgauge.runtime.store"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
