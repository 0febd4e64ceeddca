"""Result encoding and decoding by ``result_type`` (notes §3.8)."""

from __future__ import annotations

import json

import pytest

from broadgauge.grammar import (
    RESULT_TYPES,
    Destinations,
    GrammarError,
    ProjectIdentifier,
    ProjectUsageReport,
    Quota,
    QuotaLimit,
    ResultError,
    StorageSize,
    Usage,
    UserIdentifier,
    UserMapping,
    Volume,
    decode_result,
    encode_result,
)

NOTES_REPORT = {
    "project": "p.portal",
    "reports": {
        "2024-01-02": {
            "reports": {"alice": {"seconds": 7200}},
            "components": {},
            "user_job_counts": {"alice": 3},
            "user_wait_seconds": {"alice": 60},
            "num_jobs": 3,
            "total_wait_seconds": 60,
            "is_complete": True,
        }
    },
    "users": {"alice.p.portal": "alice"},
}

NAMES_FROM_NOTES = [
    "None",
    "Error",
    "String",
    "bool",
    "Vec<String>",
    "UserIdentifier",
    "ProjectIdentifier",
    "PortalIdentifier",
    "UserMapping",
    "ProjectMapping",
    "Vec<UserMapping>",
    "Vec<ProjectMapping>",
    "Vec<UserIdentifier>",
    "Vec<ProjectIdentifier>",
    "Vec<PortalIdentifier>",
    "ProjectDetails",
    "Vec<ProjectDetails>",
    "ProjectTemplate",
    "Usage",
    "Vec<Usage>",
    "DateRange",
    "UsageReport",
    "ProjectUsageReport",
    "DailyProjectUsageReport",
    "StorageReport",
    "ProjectStorageReport",
    "Quota",
    "Vec<Quota>",
    "QuotaLimit",
    "StorageSize",
    "StorageUsage",
    "Volume",
    "Vec<Volume>",
    "Destination",
    "Destinations",
]


@pytest.mark.parametrize("name", NAMES_FROM_NOTES)
def test_every_documented_name_is_known(name: str) -> None:
    assert name in RESULT_TYPES or name in ("None", "Error")
    assert "HashMap<Volume, Quota>" in RESULT_TYPES


def test_user_mapping_example() -> None:
    mapping = UserMapping.parse("alice.proj.portal:alice.proj:portal.proj")
    encoded = encode_result(mapping)
    assert encoded == ('"alice.proj.portal:alice.proj:portal.proj"', "UserMapping")
    assert decode_result(*encoded) == mapping


def test_none_error_and_plain_values() -> None:
    assert encode_result(None) == (None, "None")
    assert decode_result(None, "None") is None
    assert encode_result(ResultError("Job expired")) == ("Job expired", "Error")
    assert decode_result("Job expired", "Error") == ResultError("Job expired")
    assert encode_result(True) == ("true", "bool")
    assert encode_result("/home/a") == ('"/home/a"', "String")
    assert encode_result(Usage(36000)) == ('{"seconds":36000}', "Usage")


def test_list_types_are_inferred() -> None:
    users = [UserIdentifier.parse("a.b.c"), UserIdentifier.parse("d.b.c")]
    assert encode_result(users) == ('["a.b.c","d.b.c"]', "Vec<UserIdentifier>")
    assert encode_result(["x"]) == ('["x"]', "Vec<String>")
    with pytest.raises(GrammarError, match="empty list"):
        encode_result([])
    assert encode_result([], "Vec<ProjectMapping>") == ("[]", "Vec<ProjectMapping>")


def test_quota_map() -> None:
    quotas = {Volume("home"): Quota(QuotaLimit.parse("100GB"), StorageSize.parse("1.5GB"))}
    text, name = encode_result(quotas)
    assert name == "HashMap<Volume, Quota>"
    assert json.loads(text or "") == {"home": {"limit": "100.00 GB", "usage": "1.50 GB"}}
    assert decode_result(text, name) == quotas


def test_destinations_are_a_json_array() -> None:
    offerings = Destinations.parse("a.b.c,d.e.f")
    assert encode_result(offerings) == ('["a.b.c","d.e.f"]', "Destinations")


def test_storage_usage_needs_explicit_name() -> None:
    assert encode_result(StorageSize(10)) == ('"10 B"', "StorageSize")
    assert encode_result(StorageSize(10), "StorageUsage") == ('"10 B"', "StorageUsage")
    assert decode_result("2048", "StorageUsage") == StorageSize(2048)


def test_project_usage_report_shape() -> None:
    report = decode_result(json.dumps(NOTES_REPORT), "ProjectUsageReport")
    assert isinstance(report, ProjectUsageReport)
    assert report.project == ProjectIdentifier("p", "portal")
    (day,) = report.reports.values()
    assert day.total_usage == Usage(7200)
    assert report.users == {UserIdentifier("alice", "p", "portal"): "alice"}
    text, _ = encode_result(report)
    assert json.loads(text or "") == NOTES_REPORT


def test_daily_report_defaults() -> None:
    day = decode_result('{"reports":{},"is_complete":false}', "DailyProjectUsageReport")
    assert json.loads(encode_result(day)[0] or "") == {
        "reports": {},
        "components": {},
        "user_job_counts": {},
        "user_wait_seconds": {},
        "num_jobs": 0,
        "total_wait_seconds": 0,
        "is_complete": False,
    }


@pytest.mark.parametrize(
    ("result", "result_type"),
    [
        ('"a.b"', "UserIdentifier"),
        ("1", "String"),
        ("1", "bool"),
        ('{"seconds":-1}', "Usage"),
        ('{"seconds":1.5}', "Usage"),
        ('{"reports":{}}', "DailyProjectUsageReport"),
        ('{"limit":5}', "Quota"),
        ("not json", "String"),
        (None, "String"),
        ('"x"', "Vec<String>"),
        ('{"x":1}', "Vec<String>"),
        ('"x"', "NoSuchType"),
        ('"\\ud800"', "String"),
    ],
)
def test_decode_errors(result: str | None, result_type: str) -> None:
    with pytest.raises(GrammarError):
        decode_result(result, result_type)


def test_encode_type_mismatch() -> None:
    with pytest.raises(GrammarError):
        encode_result("x", "Usage")
    with pytest.raises(GrammarError):
        encode_result(True, "String")
    with pytest.raises(GrammarError):
        encode_result(object())
