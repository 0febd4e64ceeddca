"""Hypothesis strategies producing result values (our Python types)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import strategies as st

from broadgauge.grammar import (
    AwardDetails,
    DailyProjectUsageReport,
    DateRange,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectMapping,
    ProjectStorageReport,
    ProjectTemplate,
    ProjectUsageReport,
    Quota,
    QuotaLimit,
    StorageReport,
    StorageSize,
    Timestamp,
    Usage,
    UsageReport,
    UserIdentifier,
    UserMapping,
    Volume,
)
from broadgauge.grammar.calendar import Date
from broadgauge.grammar.reports import DailyStorageReport

from .strategies import award_json, names

u64 = st.integers(0, 2**64 - 1)
small = st.integers(0, 10**9)
portals = names.map(PortalIdentifier)
projects = st.builds(ProjectIdentifier, names, names)
users = st.builds(UserIdentifier, names, names, names)
project_mappings = st.builds(ProjectMapping, projects, names)
user_mappings = st.builds(UserMapping, users, names, names)
dates = st.dates().map(Date.from_python)
timestamps = st.builds(
    lambda d, n: Timestamp.from_python(d).__class__(
        Timestamp.from_python(d).date,
        Timestamp.from_python(d).hour,
        Timestamp.from_python(d).minute,
        Timestamp.from_python(d).second,
        n,
    ),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.sampled_from([0, 500_000_000, 123_456_000, 1, 999_999_999]),
)
sizes = st.one_of(u64, st.integers(0, 5000), st.sampled_from([1024, 1025, 2**30])).map(StorageSize)
limits = st.one_of(st.just(QuotaLimit(None)), sizes.map(QuotaLimit))
quotas = st.builds(Quota, limits, st.one_of(st.none(), sizes))
volumes = st.one_of(st.sampled_from(["home", "scratch"]), names).map(Volume)
quota_maps = st.dictionaries(volumes, quotas, max_size=3)
usages = u64.map(Usage)

daily_usage = st.builds(
    DailyProjectUsageReport,
    reports=st.dictionaries(names, usages, max_size=3),
    components=st.dictionaries(names, st.dictionaries(names, usages, max_size=2), max_size=2),
    user_job_counts=st.dictionaries(names, small, max_size=2),
    user_wait_seconds=st.dictionaries(names, small, max_size=2),
    num_jobs=small,
    total_wait_seconds=small,
    is_complete=st.booleans(),
)
project_usage = st.builds(
    ProjectUsageReport,
    project=projects,
    reports=st.dictionaries(dates, daily_usage, max_size=2),
    users=st.dictionaries(users, names, max_size=3),
)
usage_reports = st.builds(
    UsageReport, portal=portals, reports=st.dictionaries(projects, project_usage, max_size=2)
)
# the fields a project's storage report shares with its daily snapshots
storage_snapshot: dict[str, st.SearchStrategy[Any]] = {
    "project": projects,
    "generated_at": timestamps,
    "project_quotas": quota_maps,
    "user_quotas": st.dictionaries(users, quota_maps, max_size=2),
}
daily_storage = st.builds(DailyStorageReport, **storage_snapshot)
project_storage = st.builds(
    ProjectStorageReport,
    **storage_snapshot,
    users=st.dictionaries(users, names, max_size=2),
    daily_reports=st.dictionaries(dates, daily_storage, max_size=2),
)
storage_reports = st.builds(
    StorageReport, portal=portals, reports=st.dictionaries(projects, project_storage, max_size=2)
)


def _details(text: str) -> AwardDetails | None:
    from broadgauge.grammar import GrammarError

    try:
        return AwardDetails.parse(text)
    except GrammarError:
        return None


award_details = award_json().map(_details).filter(lambda d: d is not None)

#: result_type -> strategy of values the wheel can both decode and re-encode
ROUND_TRIP: dict[str, st.SearchStrategy[Any]] = {
    "String": st.text(max_size=20),
    "bool": st.booleans(),
    "UserIdentifier": users,
    "ProjectIdentifier": projects,
    "PortalIdentifier": portals,
    "UserMapping": user_mappings,
    "ProjectMapping": project_mappings,
    "Vec<String>": st.lists(st.text(max_size=8), max_size=3),
    "Vec<UserIdentifier>": st.lists(users, max_size=3),
    "Vec<ProjectIdentifier>": st.lists(projects, max_size=3),
    "Vec<PortalIdentifier>": st.lists(portals, max_size=3),
    "Vec<UserMapping>": st.lists(user_mappings, max_size=3),
    "Vec<ProjectMapping>": st.lists(project_mappings, max_size=3),
    "ProjectDetails": award_details,
    "ProjectTemplate": names.map(ProjectTemplate),
    "Usage": usages,
    "DateRange": st.builds(DateRange, dates, dates),
    "UsageReport": usage_reports,
    "ProjectUsageReport": project_usage,
    "StorageReport": storage_reports,
    "ProjectStorageReport": project_storage,
    "Quota": quotas,
    "Vec<Quota>": st.lists(quotas, max_size=3),
    "QuotaLimit": limits,
    "Vec<QuotaLimit>": st.lists(limits, max_size=3),
    "StorageSize": sizes,
    "Vec<StorageSize>": st.lists(sizes, max_size=3),
    "StorageUsage": sizes,
    "Vec<StorageUsage>": st.lists(sizes, max_size=3),
    "Volume": volumes,
    "Vec<Volume>": st.lists(volumes, max_size=3),
    "HashMap<Volume, Quota>": quota_maps.filter(bool),
}
