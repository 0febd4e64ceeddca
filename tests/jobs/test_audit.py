"""The hash-chained audit log: every change, removal or reordering is found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadgauge.runtime import audit
from broadgauge.runtime.audit import GENESIS, AuditLog, verify


def _write(path: Path, count: int) -> AuditLog:
    log = AuditLog(path, "instance")
    for i in range(count):
        log.append(time=float(i), job=f"j{i}", action="finished", outcome="ok", path=["a", "b"])
    return log


def test_a_written_log_verifies_and_chains_from_genesis(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5).close()
    result = verify(path)
    assert result.ok and result.entries == 5
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["prev"] == GENESIS
    assert [e["prev"] for e in lines[1:]] == [e["hash"] for e in lines[:-1]]
    assert path.stat().st_mode & 0o777 == 0o600


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = _write(path, 3)
    head = first.head
    first.close()
    second = AuditLog(path, "instance")
    entry = second.append(time=9.0, action="resumed")
    second.close()
    assert entry["prev"] == head and entry["seq"] == 4
    assert verify(path).ok


@pytest.mark.parametrize(
    ("damage", "line", "reason"),
    [
        ("alter", 3, "altered"),
        ("delete", 3, "does not follow"),
        ("swap", 2, "does not follow"),
        ("garbage", 4, "not valid JSON"),
    ],
)
def test_damage_is_reported_at_the_first_broken_entry(
    tmp_path: Path, damage: str, line: int, reason: str
) -> None:
    path = tmp_path / "audit.jsonl"
    _write(path, 5).close()
    lines = path.read_text().splitlines()
    if damage == "alter":
        entry = json.loads(lines[2])
        entry["outcome"] = "forged"
        lines[2] = json.dumps(entry)
    elif damage == "delete":
        del lines[2]
    elif damage == "swap":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines[3] = lines[3][:20]
    path.write_text("\n".join(lines) + "\n")
    result = verify(path)
    assert not result.ok
    assert result.first_bad_line == line
    assert reason in result.reason


def test_recomputing_one_hash_does_not_hide_an_edit(tmp_path: Path) -> None:
    # An editor who fixes the altered entry's own hash still breaks the next link.
    from broadgauge.runtime.audit import _digest

    path = tmp_path / "audit.jsonl"
    _write(path, 4).close()
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["outcome"] = "forged"
    entry["hash"] = _digest(entry)
    lines[1] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    result = verify(path)
    assert (result.ok, result.first_bad_line) == (False, 3)


_FIELD_VALUES = (
    st.none()
    | st.booleans()
    | st.text()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.text(), max_size=4)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@settings(max_examples=500)
@given(st.dictionaries(st.text(max_size=12), _FIELD_VALUES, max_size=12))
def test_an_entry_is_hashed_over_the_same_bytes_whichever_encoder_writes_it(
    entry: dict[str, object],
) -> None:
    # The quick encoder takes the usual values and the json one the rest; a log written with
    # either must verify with either, so both must write the same bytes for every entry.
    assert audit._canonical(entry) == audit._CANONICAL.encode(entry).encode()


def test_the_usual_entry_goes_through_the_quick_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_: object) -> str:
        raise AssertionError("the usual entry should not need the json encoder")

    monkeypatch.setattr(audit._CANONICAL, "encode", refuse)
    entry = {"seq": 3, "time": 1_796_680_234.5, "job": "x", "path": ["a", "b"], "prev": GENESIS}
    assert json.loads(audit._canonical(entry)) == entry
