"""Broadgauge's instructions beyond OpenPortal's 64: notebook servers.

The seed's protocol example of a task is "create notebook service", but the reference
grammar has no instruction to start or stop one user's notebook server.  These two are
Broadgauge extensions, parsed like every other instruction and carried in the same Job
JSON.  An OpenPortal agent cannot parse them: it logs the job as unreadable and ignores it,
the same way it treats the planner-rules commands (see ``docs/operators/wire.md``).  So only
send them to a notebook instance that runs Broadgauge.

``start_notebook <user>``
    start the user's notebook server and answer its URL (result type ``String``);
``stop_notebook <user>``
    stop it (result type ``None``; stopping a stopped server succeeds).

They are not in :data:`~broadgauge.grammar.instructions.KEYWORDS` (the reference's 64), but
:meth:`Instruction.parse` knows them; :data:`EXTENSION_KEYWORDS` lists them.
"""

from __future__ import annotations

from ._shapes import _UserRest


class StartNotebook(_UserRest, keyword="start_notebook", check="user", extension=True):
    """``start_notebook <user>``: start the user's notebook server (extension)."""


class StopNotebook(_UserRest, keyword="stop_notebook", check="user", extension=True):
    """``stop_notebook <user>``: stop the user's notebook server (extension)."""


#: The keywords Broadgauge adds to the reference grammar.
EXTENSION_KEYWORDS: tuple[str, ...] = (StartNotebook.keyword, StopNotebook.keyword)
