"""Jobs, boards and the templemeads wire commands (the pure core of the agent runtime).

* :class:`Job` / :class:`Status` - the job value and its state machine (notes §3.1-3.3)
* :func:`encode_command` / :func:`decode_command` - templemeads commands (§3.6)
* :class:`Notification` - fire-and-forget events (§3.9)
* :class:`Board` - one peer's board: replace rules, duplicates, cleaner, sync (§3.4-3.5)
* :class:`BoardStore` - durable boards, outbox and execution markers (SQLite, §7.2)

Nothing here performs network I/O or reads the clock: time is passed in.
"""

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
from .store import BoardStore, Execution, QueuedPayload

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
    "BoardStore",
    "Delete",
    "DiagnosticsReport",
    "DiagnosticsRequest",
    "DiagnosticsResponse",
    "ErrorCommand",
    "EventKind",
    "Execution",
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
    "QueuedPayload",
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
