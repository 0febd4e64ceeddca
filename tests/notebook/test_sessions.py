"""The session ledger: how notebook server time is counted from polls of the hub."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broadgauge.agents.notebook.sessions import SessionLedger

DAY = dt.date(2025, 3, 1)
NEXT = dt.date(2025, 3, 2)


def at(hour: int, minute: int = 0, second: int = 0, *, day: dt.date = DAY) -> dt.datetime:
    """A UTC time on ``day``."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=dt.UTC)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SessionLedger]:
    ledger = SessionLedger(tmp_path / "sessions.sqlite")
    yield ledger
    await ledger.close()


async def test_open_session_counts_from_started_to_now(ledger: SessionLedger) -> None:
    # First seen at 10:00, but the hub says it started at 09:00: that hour counts too.
    await ledger.observe(at(10), {"ann.p": (at(9), "p")})
    assert await ledger.usage("p", DAY, DAY, now=at(11)) == {DAY: {"ann.p": 7200}}
    assert await ledger.total("p", now=at(11)) == 7200
    assert await ledger.usage("other", DAY, DAY, now=at(11)) == {}


async def test_vanished_server_closes_at_last_seen(ledger: SessionLedger) -> None:
    await ledger.observe(at(10), {"ann.p": (at(9), "p")})
    await ledger.observe(at(10, 5), {"ann.p": (at(9), "p")})
    await ledger.observe(at(10, 10), {})
    # Closed at 10:05 (last seen), not 10:10, and no longer growing with now.
    expected = {DAY: {"ann.p": 3900}}
    assert await ledger.usage("p", DAY, DAY, now=at(12)) == expected
    assert await ledger.total("p", now=at(23)) == 3900
    # A closed session is not reopened by a late report of the same server.
    await ledger.observe(at(10, 15), {"ann.p": (at(9), "p")})
    assert await ledger.total("p", now=at(23)) == 3900


async def test_new_server_closes_old_session(ledger: SessionLedger) -> None:
    await ledger.observe(at(9), {"ann.p": (at(9), "p")})
    await ledger.observe(at(9, 30), {"ann.p": (at(9), "p")})
    # Between polls the old server stopped and a new one started at 9:40.
    await ledger.observe(at(10), {"ann.p": (at(9, 40), "p")})
    assert await ledger.total("p", now=at(10)) == 30 * 60 + 20 * 60
    await ledger.observe(at(11), {"ann.p": (at(9, 40), "p")})
    await ledger.observe(at(12), {})
    assert await ledger.usage("p", DAY, DAY, now=at(13)) == {DAY: {"ann.p": 30 * 60 + 80 * 60}}


async def test_stopped_closes_exactly(ledger: SessionLedger) -> None:
    await ledger.observe(at(9), {"ann.p": (at(9), "p"), "bob.p": (at(9), "p")})
    await ledger.stopped("ann.p", at(9, 17, 30))
    await ledger.stopped("ann.p", at(9, 50))  # no open session any more: nothing happens
    await ledger.stopped("ghost", at(9, 50))
    assert await ledger.usage("p", DAY, DAY, now=at(10)) == {
        DAY: {"ann.p": 17 * 60 + 30, "bob.p": 3600}
    }
    # The next poll no longer reports ann's server; its session stays closed at 9:17:30.
    await ledger.observe(at(10), {"bob.p": (at(9), "p")})
    assert await ledger.total("p", now=at(10)) == 17 * 60 + 30 + 3600


async def test_stop_before_start_counts_nothing(ledger: SessionLedger) -> None:
    await ledger.observe(at(9), {"ann.p": (at(9), "p")})
    await ledger.stopped("ann.p", at(8))  # the agent's clock behind the hub's
    assert await ledger.total("p", now=at(10)) == 0
    assert await ledger.usage("p", DAY, DAY, now=at(10)) == {}


async def test_sessions_are_split_at_midnight(ledger: SessionLedger) -> None:
    await ledger.observe(at(22, 30), {"ann.p": (at(22, 30), "p")})
    await ledger.stopped("ann.p", at(1, 15, day=NEXT))
    usage = await ledger.usage("p", DAY, NEXT, now=at(12, day=NEXT))
    assert usage == {DAY: {"ann.p": 90 * 60}, NEXT: {"ann.p": 75 * 60}}
    # Asking for one day gives only that day's part.
    assert await ledger.usage("p", NEXT, NEXT, now=at(12, day=NEXT)) == {NEXT: {"ann.p": 4500}}
    assert await ledger.total("p", now=at(12, day=NEXT)) == 165 * 60


async def test_open_session_over_several_days(ledger: SessionLedger) -> None:
    await ledger.observe(at(18), {"ann.p": (at(18), "p")})
    now = at(6, day=DAY + dt.timedelta(days=2))
    usage = await ledger.usage("p", DAY - dt.timedelta(days=1), DAY + dt.timedelta(days=5), now)
    assert usage == {
        DAY: {"ann.p": 6 * 3600},
        NEXT: {"ann.p": 86400},
        DAY + dt.timedelta(days=2): {"ann.p": 6 * 3600},
    }


async def test_groups_and_users_are_kept_apart(ledger: SessionLedger) -> None:
    await ledger.observe(at(9), {"ann.p": (at(9), "p"), "cat.q": (at(8), "q")})
    await ledger.observe(at(10), {"ann.p": (at(9), "p"), "cat.q": (at(8), "q")})
    await ledger.observe(at(11), {})
    assert await ledger.usage("p", DAY, DAY, now=at(12)) == {DAY: {"ann.p": 3600}}
    assert await ledger.usage("q", DAY, DAY, now=at(12)) == {DAY: {"cat.q": 7200}}


async def test_seconds_are_summed_before_rounding(ledger: SessionLedger) -> None:
    half = dt.timedelta(milliseconds=500)
    await ledger.observe(at(9), {"ann.p": (at(9), "p")})
    await ledger.stopped("ann.p", at(9) + half)
    await ledger.observe(at(10), {"ann.p": (at(10), "p")})
    await ledger.stopped("ann.p", at(10) + half)
    assert await ledger.usage("p", DAY, DAY, now=at(11)) == {DAY: {"ann.p": 1}}
    assert await ledger.total("p", now=at(11)) == 1


async def test_other_timezones_are_converted_to_utc(ledger: SessionLedger) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    # 01:00 at UTC+2 is 23:00 UTC the day before: the session belongs to DAY.
    started = dt.datetime(2025, 3, 2, 1, 0, tzinfo=plus_two)
    await ledger.observe(started, {"ann.p": (started, "p")})
    await ledger.stopped("ann.p", started + dt.timedelta(minutes=30))
    assert await ledger.usage("p", DAY, NEXT, now=at(12, day=NEXT)) == {DAY: {"ann.p": 1800}}


async def test_naive_times_are_refused(ledger: SessionLedger) -> None:
    with pytest.raises(ValueError, match="naive"):
        await ledger.observe(dt.datetime(2025, 3, 1, 9), {})
    with pytest.raises(ValueError, match="naive"):
        await ledger.stopped("ann.p", dt.datetime(2025, 3, 1, 9))


async def test_history_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite"
    first = SessionLedger(path)
    await first.observe(at(9), {"ann.p": (at(9), "p"), "bob.p": (at(9), "p")})
    await first.observe(at(9, 30), {"ann.p": (at(9), "p"), "bob.p": (at(9), "p")})
    await first.stopped("bob.p", at(9, 10))
    await first.close()

    second = SessionLedger(path)
    try:
        # ann's session is still open and counts up to now; bob's stays closed.
        assert await second.usage("p", DAY, DAY, now=at(10)) == {DAY: {"ann.p": 3600, "bob.p": 600}}
        await second.observe(at(10), {})  # the agent restarted after ann's server stopped
        assert await second.total("p", now=at(12)) == 1800 + 600
    finally:
        await second.close()


async def test_limits(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite"
    first = SessionLedger(path)
    assert await first.get_limit("p") == 0
    assert await first.set_limit("p", 36000) == 36000
    assert await first.set_limit("q", 100) == 100
    assert await first.set_limit("q", 0) == 0
    with pytest.raises(ValueError, match="negative"):
        await first.set_limit("p", -1)
    await first.close()

    second = SessionLedger(path)
    try:
        assert await second.get_limit("p") == 36000
        assert await second.get_limit("q") == 0
    finally:
        await second.close()
