"""Quotas, limits, reports, directories and look-ups, checked against the backends."""

from __future__ import annotations

import datetime as dt

from broadgauge.grammar import (
    Date,
    DateRange,
    PortalIdentifier,
    ProjectIdentifier,
    ProjectStorageReport,
    ProjectUsageReport,
    Quota,
    QuotaLimit,
    StorageReport,
    Usage,
    UsageReport,
    Volume,
)

from .helpers import Site, identity, mapping, project_mapping

PROJECT = "physics.portal"
ALICE = "alice.physics.portal"
BOB = "bob.physics.portal"
GROUP = "portal.physics"


def utc_today() -> dt.date:
    """The scheduler ledger counts days in UTC."""
    return dt.datetime.now(dt.UTC).date()


async def add_both(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    await site.run(f"add_user {BOB}")


# --- quotas ----------------------------------------------------------------------------------


async def test_project_quota_set_get_clear_in_the_quota_ledger(site: Site) -> None:
    await site.run(f"add_project {PROJECT}")
    path = str(site.project_dir(PROJECT))
    ten_gb = QuotaLimit.parse("10 GB")

    quota = await site.result(f"set_project_quota {PROJECT} projects 10 GB", Quota)

    assert quota.limit == ten_gb
    assert quota.usage is not None  # measured on the real directory
    assert site.quota_engine.limit(path, GROUP, True) == ten_gb
    assert site.quota_rows() == [(path, GROUP, "group", 10 * 2**30)]

    got = await site.value(f"get_project_quota {PROJECT} projects")
    assert isinstance(got, Quota) and got.limit == ten_gb
    quotas = await site.run(f"get_project_quotas {PROJECT}")
    assert quotas.result_type == "HashMap<Volume, Quota>"
    value = quotas.result_value()
    assert isinstance(value, dict) and list(value) == [Volume("projects")]
    assert value[Volume("projects")].limit == ten_gb

    cleared = await site.run(f"clear_project_quota {PROJECT} projects")

    # "No result": the runtime encodes None as result null with result type "None".
    assert (cleared.result, cleared.result_type, cleared.result_value()) == (None, "None", None)
    wire = cleared.to_json_value()
    assert (wire["result"], wire["result_type"]) == (None, "None")
    assert site.quota_rows() == []
    assert site.quota_engine.limit(path, GROUP, True).is_unlimited
    after = await site.value(f"get_project_quota {PROJECT} projects")
    assert isinstance(after, Quota) and after.limit.is_unlimited


async def test_user_quota_set_get_clear_in_the_quota_ledger(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    home = str(site.home(ALICE))
    five_gb = QuotaLimit.parse("5 GB")

    quota = await site.value(f"set_user_quota {ALICE} home 5 GB")

    assert isinstance(quota, Quota) and quota.limit == five_gb
    assert site.quota_engine.limit(home, "alice.physics", False) == five_gb
    assert site.quota_rows() == [(home, "alice.physics", "user", 5 * 2**30)]
    got = await site.value(f"get_user_quota {ALICE} home")
    assert isinstance(got, Quota) and got.limit == five_gb
    quotas = await site.value(f"get_user_quotas {ALICE}")
    assert isinstance(quotas, dict) and {k: v.limit for k, v in quotas.items()} == {
        Volume("home"): five_gb
    }
    # Bob has no quota of his own.
    await site.run(f"add_user {BOB}")
    bobs = await site.value(f"get_user_quota {BOB} home")
    assert isinstance(bobs, Quota) and bobs.limit.is_unlimited

    cleared = await site.run(f"clear_user_quota {ALICE} home")

    assert (cleared.result, cleared.result_type, cleared.result_value()) == (None, "None", None)
    assert site.quota_rows() == []
    after = await site.value(f"get_user_quota {ALICE} home")
    assert isinstance(after, Quota) and after.limit.is_unlimited


# --- limits ----------------------------------------------------------------------------------


async def test_set_and_get_limit_in_the_scheduler_ledger(site: Site) -> None:
    await site.run(f"add_project {PROJECT}")
    assert (await site.value(f"get_limit {PROJECT}")) == Usage(0)

    job = await site.run(f"set_limit {PROJECT} 1000 hours")

    assert (job.result_type, job.result_value()) == ("Usage", Usage(3_600_000))
    assert await site.ledger.get_limit(project_mapping(PROJECT)) == Usage(3_600_000)
    assert site.ledger_rows("SELECT limit_seconds FROM accounts WHERE name = ?", GROUP) == [
        (3_600_000,)
    ]
    got = await site.run(f"get_limit {PROJECT}")
    assert (got.result_type, got.result_value()) == ("Usage", Usage(3_600_000))

    # A new limit replaces the old one.
    await site.run(f"set_limit {PROJECT} 90 minutes")
    assert await site.ledger.get_limit(project_mapping(PROJECT)) == Usage(5400)


# --- usage reports ---------------------------------------------------------------------------


async def test_usage_report_shows_recorded_usage_by_day_and_identity(site: Site) -> None:
    await add_both(site)
    today = utc_today()
    yesterday = today - dt.timedelta(days=1)
    await site.ledger.record_usage(mapping(ALICE), today, 9000, jobs=3, wait_seconds=60)
    await site.ledger.record_usage(mapping(BOB), yesterday, 600, jobs=1)
    await site.ledger.record_usage(mapping(BOB), today, 400, jobs=2)

    report = await site.result(
        f"get_usage_report {PROJECT} {yesterday}:{today}", ProjectUsageReport
    )

    assert report.project == ProjectIdentifier.parse(PROJECT)
    assert report.users == {identity(ALICE): "alice.physics", identity(BOB): "bob.physics"}
    day0, day1 = Date.from_python(yesterday), Date.from_python(today)
    assert list(report.reports) == [day0, day1]
    assert report.reports[day0].reports == {"bob.physics": Usage(600)}
    assert report.reports[day0].is_complete
    assert report.reports[day1].reports == {
        "alice.physics": Usage(9000),
        "bob.physics": Usage(400),
    }
    assert report.reports[day1].user_job_counts == {"alice.physics": 3, "bob.physics": 2}
    assert report.reports[day1].num_jobs == 5
    assert report.reports[day1].total_wait_seconds == 60
    assert not report.reports[day1].is_complete
    # The same numbers the ledger gives directly.
    direct = await site.ledger.get_usage_report(
        project_mapping(PROJECT), DateRange.parse(f"{yesterday}:{today}")
    )
    assert direct.reports == report.reports


async def test_usage_reports_cover_every_project_of_the_portal(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    await site.run("add_user carol.chem.portal")
    today = utc_today()
    await site.ledger.record_usage(mapping(ALICE), today, 100)
    await site.ledger.record_usage(mapping("carol.chem.portal"), today, 200, jobs=2)

    report = await site.result(f"get_usage_reports portal {today}:{today}", UsageReport)

    assert report.portal == PortalIdentifier.parse("portal")
    day = Date.from_python(today)
    totals = {
        str(project): project_report.reports[day].reports
        for project, project_report in report.reports.items()
    }
    assert totals == {
        "chem.portal": {"carol.chem": Usage(200)},
        PROJECT: {"alice.physics": Usage(100)},
    }


# --- storage reports -------------------------------------------------------------------------


async def test_storage_report_of_today_lists_project_and_user_quotas(site: Site) -> None:
    await add_both(site)
    await site.run(f"set_project_quota {PROJECT} projects 10 GB")
    await site.run(f"set_user_quota {ALICE} home 2 GB")
    (site.home(ALICE) / "data.bin").write_bytes(b"x" * 100_000)
    today = dt.date.today()

    report = await site.result(
        f"get_storage_report {PROJECT} {today}:{today}", ProjectStorageReport
    )

    assert report.project == ProjectIdentifier.parse(PROJECT)
    assert report.users == {identity(ALICE): "alice.physics", identity(BOB): "bob.physics"}
    assert {v: q.limit for v, q in report.project_quotas.items()} == {
        Volume("projects"): QuotaLimit.parse("10 GB")
    }
    alice = report.user_quotas[identity(ALICE)][Volume("home")]
    assert alice.limit == QuotaLimit.parse("2 GB")
    assert alice.usage is not None and alice.usage.bytes >= 100_000
    assert report.user_quotas[identity(BOB)][Volume("home")].limit.is_unlimited

    everything = await site.result(f"get_storage_reports portal {today}:{today}", StorageReport)
    assert list(everything.reports) == [ProjectIdentifier.parse(PROJECT)]
    assert everything.reports[ProjectIdentifier.parse(PROJECT)].users == report.users

    # Only today is supported (as in OpenPortal).
    yesterday = today - dt.timedelta(days=1)
    message = await site.refused(f"get_storage_report {PROJECT} {yesterday}:{yesterday}")
    assert message == (
        "RuntimeError{Storage reports only support today's date; requested range: "
        f"{yesterday}:{yesterday}}}"
    )


# --- directories and look-ups ----------------------------------------------------------------


async def test_directories_match_the_sandbox_and_the_directory(site: Site) -> None:
    await site.run(f"add_user {ALICE}")
    home = site.home(ALICE)

    job = await site.run(f"get_home_dir {ALICE}")

    assert (job.result_type, job.result_value()) == ("String", str(home))
    assert site.account("alice.physics")["home"] == str(home)
    assert home.is_dir()
    dirs = await site.run(f"get_user_dirs {ALICE}")
    assert (dirs.result_type, dirs.result_value()) == ("Vec<String>", [str(home)])
    projects = await site.run(f"get_project_dirs {PROJECT}")
    assert (projects.result_type, projects.result_value()) == (
        "Vec<String>",
        [str(site.project_dir(PROJECT))],
    )
    assert site.project_dir(PROJECT).is_dir()


async def test_look_ups_answer_from_the_directory(site: Site) -> None:
    await add_both(site)
    await site.run("add_user carol.chem.portal")

    users = await site.run(f"get_users {PROJECT}")
    assert (users.result_type, users.result_value()) == (
        "Vec<UserMapping>",
        [mapping(ALICE), mapping(BOB)],
    )
    assert users.result_value() == await site.accounts.get_users(ProjectIdentifier.parse(PROJECT))
    projects = await site.run("get_projects portal")
    assert (projects.result_type, projects.result_value()) == (
        "Vec<ProjectMapping>",
        [project_mapping("chem.portal"), project_mapping(PROJECT)],
    )
    project = await site.run(f"get_project_mapping {PROJECT}")
    assert (project.result_type, project.result_value()) == (
        "ProjectMapping",
        project_mapping(PROJECT),
    )
    user = await site.run(f"get_user_mapping {BOB}")
    assert (user.result_type, user.result_value()) == ("UserMapping", mapping(BOB))
    protected = await site.run(f"is_protected_user {ALICE}")
    assert (protected.result_type, protected.result_value()) == ("bool", False)
    # Mappings follow the naming rules even for identities that have no account yet.
    assert (await site.value("get_user_mapping zed.physics.portal")) == mapping(
        "zed.physics.portal"
    )
    assert site.user_row("zed.physics") is None
