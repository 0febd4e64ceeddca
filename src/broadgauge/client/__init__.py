"""A pure-Python client for the bridge API, drop-in for the official ``openportal`` module.

Switch with one import::

    import openportal as op          # the official compiled client
    import broadgauge.client as op   # this one

Same function names, arguments and meaning: ``load_config``, ``is_config_loaded``,
``run(command, max_ms=0)``, ``status``, ``get``, ``fetch_jobs``, ``fetch_job``,
``send_result``, ``health``, ``diagnostics``, ``restart``, ``get_portal``,
``get_offerings``, ``sync_offerings``, ``add_offerings``, ``remove_offerings``, ``notify``,
``fetch_notification``; ``Job.wait``/``update``/``completed``/``errored``/``to_json``/
``from_json``.  A 429 is retried after 100, 200, 400, 800 and 1600 ms; every other failure
raises :class:`BridgeError` (an ``OSError``, as the official client raises).
:class:`AsyncClient` is the asyncio variant.

Values are this project's grammar types (``broadgauge.grammar``), e.g. ``ProjectMapping``
for ``Job.completed``; ``str()`` of each is the same text as the official type's.
"""

from broadgauge.client import sync
from broadgauge.client._protocol import BridgeError
from broadgauge.client.aio import AsyncClient
from broadgauge.client.config import ClientConfig
from broadgauge.client.sync import *  # noqa: F403 - the module-level API: sync.__all__
from broadgauge.client.types import Diagnostics, Health, Job, RestartResponse, Status
from broadgauge.grammar import (
    AwardDetails,
    Destination,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    UserIdentifier,
    UserMapping,
)
from broadgauge.jobs.notification import Notification

__all__ = [
    "AsyncClient",
    "AwardDetails",
    "BridgeError",
    "ClientConfig",
    "Destination",
    "Diagnostics",
    "Health",
    "Job",
    "Notification",
    "PortalIdentifier",
    "ProjectIdentifier",
    "ProjectMapping",
    "RestartResponse",
    "Status",
    "UserIdentifier",
    "UserMapping",
]
__all__ += sync.__all__  # Client and the official module's functions
