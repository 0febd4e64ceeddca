"""Instruction grammar of OpenPortal 0.32.2: identifiers, values, instructions and results.

Pure value types and parsers (no I/O).  Every parser raises
:class:`GrammarError` (a :class:`ValueError`) on malformed input, and every
``str()`` is byte-identical to the canonical text OpenPortal produces.
"""

from .award import (
    Allocation,
    AwardDetails,
    DomainPattern,
    Link,
    MembershipControl,
    Note,
    ProjectDetails,
    ProjectTemplate,
)
from .calendar import Date, Timestamp
from .command import Command
from .destination import Destination, Destinations, Position
from .errors import GrammarError
from .extensions import EXTENSION_KEYWORDS
from .identifiers import (
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)
from .instructions import ALIASES, INSTRUCTION_TYPES, KEYWORDS, Instruction
from .notifications import EventKind, Notification, NotificationEvent
from .reports import (
    DailyProjectUsageReport,
    DailyStorageReport,
    ProjectStorageReport,
    ProjectUsageReport,
    StorageReport,
    UsageReport,
)
from .results import RESULT_TYPES, ResultError, decode_result, encode_result
from .values import DateRange, Quota, QuotaLimit, StorageSize, StorageUsage, Usage, Volume

__all__ = [
    "ALIASES",
    "EXTENSION_KEYWORDS",
    "INSTRUCTION_TYPES",
    "KEYWORDS",
    "RESULT_TYPES",
    "Allocation",
    "AwardDetails",
    "Command",
    "DailyProjectUsageReport",
    "DailyStorageReport",
    "Date",
    "DateRange",
    "Destination",
    "Destinations",
    "DomainPattern",
    "EventKind",
    "GrammarError",
    "Instruction",
    "Link",
    "MembershipControl",
    "Note",
    "Notification",
    "NotificationEvent",
    "PortalIdentifier",
    "Position",
    "ProjectDetails",
    "ProjectIdentifier",
    "ProjectMapping",
    "ProjectStorageReport",
    "ProjectTemplate",
    "ProjectUsageReport",
    "Quota",
    "QuotaLimit",
    "ResultError",
    "StorageReport",
    "StorageSize",
    "StorageUsage",
    "Timestamp",
    "Usage",
    "UsageReport",
    "UserIdentifier",
    "UserMapping",
    "Volume",
    "decode_result",
    "encode_result",
]
