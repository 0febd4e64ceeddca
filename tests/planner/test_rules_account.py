"""Rules that need an account, and the network planner's pure parts: no sockets.

``requires_account = true`` rules in the pure engine (unknown, present and missing accounts,
and how a missing account ranks against identity refusals); the ``provision`` an answer may
carry; the network planner's configuration, identities, catalogue and combined answer; and
:class:`NetworkPlanner` over an in-memory :class:`NetworkSource` with a fake clock.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Mapping
from typing import Any

import pytest

from broadgauge.grammar import UserIdentifier
from broadgauge.jobs.published import PublishedRules
from broadgauge.planner.answers import Answer, Task, answer_from_json
from broadgauge.planner.network import (
    AccountCheckError,
    NetworkConfig,
    NetworkPlanner,
    NetworkSettings,
    Offering,
    Verdict,
    catalogue_from,
    combine,
    load_network_config,
    parse_network_config,
    user_identities,
)
from broadgauge.planner.rules import (
    Identity,
    RuleError,
    evaluate,
    needs_account,
    parse_ruleset,
)
from broadgauge.runtime.rules_sweep import SweepResult
from tests.planner.test_rules import EXAMPLES

#: A hang guard only: nothing here should take more than a moment.
GUARD = 10.0

HUB = {"endpoint": "https://hub.example/"}
OPEN = {"endpoint": "https://open.example/"}
ACCOUNT_RULE: dict[str, Any] = {
    "name": "hub-for-account-holders",
    "tasktypes": ["jupyter-notebook"],
    "servicetype": "jupyter-hub",
    "serviceinfo": HUB,
    "requires_account": True,
}
OPEN_RULE: dict[str, Any] = {
    "name": "open-notebooks",
    "tasktypes": ["jupyter-notebook"],
    "servicetype": "binder-hub",
    "serviceinfo": OPEN,
}
MEMBERS_RULE: dict[str, Any] = {
    "name": "members-only",
    "tasktypes": ["jupyter-notebook"],
    "servicetype": "escape-hub",
    "serviceinfo": {"endpoint": "https://escape.example/"},
    "identity": {"groups_any": ["escape"]},
    "deny_reason": "ESCAPE members only",
}

ALICE = Identity("alice", {"sub": "alice", "groups": ["physics"]})
NOTEBOOK = Task("jupyter-notebook")


def rules(*raw: Mapping[str, Any]) -> Any:
    return parse_ruleset({"rules": [dict(r) for r in raw]})


def outcomes(why: Any) -> list[tuple[str, str]]:
    return [(s.rule, s.outcome) for s in why.steps]


# --- the pure engine ------------------------------------------------------------------------


def test_unknown_account_status_skips_the_rule_and_says_so() -> None:
    answer, why = evaluate(rules(ACCOUNT_RULE), NOTEBOOK, ALICE, has_account=None)
    assert answer.to_json() == {"reponseword": "NO"}
    assert why.decided_by is None
    assert why.account_missing is False
    assert outcomes(why) == [("hub-for-account-holders", "skipped")]
    assert "account status is not known" in why.steps[0].detail
    # The default for has_account is "not known".
    assert evaluate(rules(ACCOUNT_RULE), NOTEBOOK, ALICE) == (answer, why)


def test_unknown_account_status_lets_a_later_rule_decide() -> None:
    answer, why = evaluate(rules(ACCOUNT_RULE, OPEN_RULE), NOTEBOOK, ALICE, has_account=None)
    assert answer.accepted and answer.serviceinfo == OPEN
    assert why.decided_by == "open-notebooks"
    assert outcomes(why) == [
        ("hub-for-account-holders", "skipped"),
        ("open-notebooks", "decided"),
    ]


def test_an_existing_account_decides_yes() -> None:
    answer, why = evaluate(rules(ACCOUNT_RULE, OPEN_RULE), NOTEBOOK, ALICE, has_account=True)
    assert answer.to_json() == {
        "reponseword": "YES",
        "servicetype": "jupyter-hub",
        "serviceinfo": HUB,
    }
    assert why.decided_by == "hub-for-account-holders"
    assert why.account_missing is False
    assert outcomes(why) == [("hub-for-account-holders", "decided")]


def test_a_missing_account_gives_no_403_naming_the_rule() -> None:
    answer, why = evaluate(rules(ACCOUNT_RULE), NOTEBOOK, ALICE, has_account=False)
    assert not answer.accepted
    assert answer.httpcode == 403
    assert answer.reason and "no account" in answer.reason
    assert answer.provision is None  # the engine does not know where to provision
    assert why.account_missing is True
    assert why.decided_by == "hub-for-account-holders"
    assert "hub-for-account-holders" in why.summary
    assert outcomes(why) == [("hub-for-account-holders", "account-missing")]
    assert why.to_json()["account_missing"] is True


def test_a_missing_account_outranks_an_earlier_identity_refusal() -> None:
    ruleset = rules(MEMBERS_RULE, ACCOUNT_RULE)
    answer, why = evaluate(ruleset, NOTEBOOK, ALICE, has_account=False)
    assert outcomes(why) == [
        ("members-only", "identity-denied"),
        ("hub-for-account-holders", "account-missing"),
    ]
    assert why.account_missing is True
    assert why.decided_by == "hub-for-account-holders"
    assert answer.httpcode == 403
    assert answer.reason != "ESCAPE members only"
    # With the account, the same caller is accepted by the second rule.
    answer, why = evaluate(ruleset, NOTEBOOK, ALICE, has_account=True)
    assert answer.serviceinfo == HUB
    assert why.decided_by == "hub-for-account-holders"


def test_identity_refusal_still_wins_when_the_account_is_not_known() -> None:
    answer, why = evaluate(rules(MEMBERS_RULE, ACCOUNT_RULE), NOTEBOOK, ALICE, has_account=None)
    assert answer.to_json() == {
        "reponseword": "NO",
        "reponseinfo": {"httpcode": 403, "reason": "ESCAPE members only"},
    }
    assert why.decided_by == "members-only"
    assert why.account_missing is False


def test_a_later_yes_without_account_wins_over_an_earlier_missing_account() -> None:
    answer, why = evaluate(rules(ACCOUNT_RULE, OPEN_RULE), NOTEBOOK, ALICE, has_account=False)
    assert answer.accepted and answer.servicetype == "binder-hub"
    assert why.decided_by == "open-notebooks"
    assert why.account_missing is False
    assert outcomes(why) == [
        ("hub-for-account-holders", "account-missing"),
        ("open-notebooks", "decided"),
    ]


@pytest.mark.parametrize("has_account", [None, False, True])
def test_anonymous_caller_is_identity_denied_not_account_missing(has_account: Any) -> None:
    answer, why = evaluate(rules(ACCOUNT_RULE), NOTEBOOK, None, has_account=has_account)
    assert outcomes(why) == [("hub-for-account-holders", "identity-denied")]
    assert "sign in" in why.steps[0].detail
    assert why.account_missing is False
    assert why.decided_by == "hub-for-account-holders"
    assert answer.to_json() == {
        "reponseword": "NO",
        "reponseinfo": {"httpcode": 403, "reason": "Not authorised"},
    }


def test_requires_account_must_be_a_toml_boolean() -> None:
    good = tomllib.loads(
        """
        [[rules]]
        name = "hub"
        tasktypes = ["jupyter-notebook"]
        servicetype = "jupyter-hub"
        serviceinfo = { endpoint = "https://hub.example/" }
        requires_account = true
        """
    )
    assert parse_ruleset(good).rules[0].requires_account is True
    assert parse_ruleset({"rules": [OPEN_RULE]}).rules[0].requires_account is False
    for value in ('"yes"', '"true"', "1"):
        bad = tomllib.loads(
            f"""
            [[rules]]
            name = "hub"
            tasktypes = ["jupyter-notebook"]
            servicetype = "jupyter-hub"
            serviceinfo = {{ endpoint = "https://hub.example/" }}
            requires_account = {value}
            """
        )
        with pytest.raises(RuleError, match=r"rule 'hub'\.requires_account must be true or false"):
            parse_ruleset(bad)


def test_needs_account_when_the_deciding_rule_requires_one() -> None:
    assert needs_account(rules(ACCOUNT_RULE), NOTEBOOK, ALICE) is True
    assert needs_account(rules(ACCOUNT_RULE, OPEN_RULE), NOTEBOOK, ALICE) is True
    # An earlier refusal does not stop a later account rule from mattering.
    assert needs_account(rules(MEMBERS_RULE, ACCOUNT_RULE), NOTEBOOK, ALICE) is True


def test_needs_account_false_cases() -> None:
    # An earlier rule decides without an account.
    assert needs_account(rules(OPEN_RULE, ACCOUNT_RULE), NOTEBOOK, ALICE) is False
    # No rule requires one.
    assert needs_account(rules(OPEN_RULE), NOTEBOOK, ALICE) is False
    # The account rule does not cover the task.
    assert needs_account(rules(ACCOUNT_RULE), Task("esap-notebook"), ALICE) is False
    # Anonymous callers are refused before any account matters.
    assert needs_account(rules(ACCOUNT_RULE), NOTEBOOK, None) is False
    # The account rule refuses this caller on identity anyway.
    gated = {**ACCOUNT_RULE, "identity": {"groups_any": ["escape"]}}
    assert needs_account(rules(gated), NOTEBOOK, ALICE) is False
    member = Identity("m", {"groups": ["escape"]})
    assert needs_account(rules(gated), NOTEBOOK, member) is True
    # A taskinfo condition that fails.
    conditional = {**ACCOUNT_RULE, "taskinfo": [{"key": "gpu", "present": True}]}
    assert needs_account(rules(conditional), NOTEBOOK, ALICE) is False
    assert needs_account(rules(conditional), Task("jupyter-notebook", {"gpu": "1"}), ALICE)


# --- the provision an answer carries ------------------------------------------------------

PROVISION = {
    "destination": "portal.provider.platform.instance",
    "instruction": "add_user a.p.portal",
}


def test_answer_with_provision_round_trips() -> None:
    answer = Answer(False, httpcode=403, reason="no account yet", provision=PROVISION)
    wire = answer.to_json()
    assert wire == {
        "reponseword": "NO",
        "reponseinfo": {"httpcode": 403, "reason": "no account yet", "provision": PROVISION},
    }
    assert answer_from_json(wire) == answer
    # A provision alone is enough to send reponseinfo.
    bare = Answer(False, provision=PROVISION)
    assert bare.to_json() == {"reponseword": "NO", "reponseinfo": {"provision": PROVISION}}
    assert answer_from_json(bare.to_json()) == bare


@pytest.mark.parametrize(
    "provision",
    [
        "add_user a.p.portal",
        ["portal.provider.platform.instance", "add_user a.p.portal"],
        {"destination": "portal.provider.platform.instance"},
        {"instruction": "add_user a.p.portal"},
        {"destination": 7, "instruction": "add_user a.p.portal"},
        {"destination": "portal.provider.platform.instance", "instruction": None},
        None,
    ],
)
def test_a_malformed_provision_is_dropped(provision: Any) -> None:
    body = {
        "reponseword": "NO",
        "reponseinfo": {"httpcode": 403, "reason": "r", "provision": provision},
    }
    assert answer_from_json(body) == Answer(False, httpcode=403, reason="r")


# --- the network planner's configuration ----------------------------------------------------


def test_network_config_defaults() -> None:
    config = parse_network_config({})
    assert config.network == NetworkSettings()
    assert config.network.refresh == 30.0
    assert config.network.user_claim == "openportal_users"
    assert config.network.port == 8401
    assert config.network.host == "127.0.0.1"
    assert config.service.name == "planner"
    assert config.service.ruleset.rules == ()
    assert config.service.auth.mode == "anonymous"


def test_network_config_values() -> None:
    config = parse_network_config(
        {
            "service": {"name": "brics"},
            "site": {"groups_claim": "entitlements"},
            "network": {
                "refresh": 5,
                "budget": 0.5,
                "account_timeout": 3,
                "account_ttl": 0,
                "missing_account_ttl": 1.5,
                "user_claim": "op_users",
                "host": "::1",
                "port": 0,
            },
        }
    )
    assert config.service.name == "brics"
    assert config.service.ruleset.groups_claim == "entitlements"
    assert config.network == NetworkSettings(
        refresh=5.0,
        budget=0.5,
        user_claim="op_users",
        account_timeout=3.0,
        account_ttl=0.0,
        missing_account_ttl=1.5,
        host="::1",
        port=0,
    )
    assert isinstance(config.network.refresh, float)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"network": {"refesh": 5}}, r"unknown keys \['refesh'\]"),
        ({"network": {"listen": "0.0.0.0"}}, r"unknown keys \['listen'\]"),
        ({"network": {"refresh": -1}}, r"network\.refresh must be a number >= 0"),
        ({"network": {"account_ttl": -0.5}}, r"network\.account_ttl must be a number >= 0"),
        ({"network": {"budget": True}}, r"network\.budget must be a number >= 0"),
        ({"network": {"missing_account_ttl": "5"}}, r"missing_account_ttl must be a number"),
        ({"network": {"port": True}}, r"network\.port must be a port number"),
        ({"network": {"port": -1}}, r"network\.port must be a port number"),
        ({"network": {"port": 65536}}, r"network\.port must be a port number"),
        ({"network": {"port": 8401.0}}, r"network\.port must be a port number"),
        ({"network": {"user_claim": ""}}, r"network\.user_claim must be a non-empty string"),
        ({"network": {"host": 127}}, r"network\.host must be a non-empty string"),
        ({"network": "fast"}, r"\[network\] must be a table"),
        ({"rules": [OPEN_RULE]}, r"no \[\[rules\]\] of its own"),
        ({"reules": []}, r"unknown top-level tables"),
    ],
)
def test_network_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_network_config(raw)


# --- the caller's OpenPortal identities ---------------------------------------------------


def users(identity: Identity | None, claim: str = "openportal_users") -> list[str]:
    return [str(u) for u in user_identities(identity, claim, "portal")]


def test_user_identities_from_a_list_claim() -> None:
    who = Identity("a", {"openportal_users": ["alice.physics.portal", "alice.chem.portal"]})
    assert users(who) == ["alice.physics.portal", "alice.chem.portal"]
    assert user_identities(who, "openportal_users", "portal")[0] == UserIdentifier(
        "alice", "physics", "portal"
    )


def test_user_identities_from_a_space_separated_claim() -> None:
    who = Identity("a", {"op": " alice.physics.portal  alice.chem.portal "})
    assert users(who, "op") == ["alice.physics.portal", "alice.chem.portal"]


def test_user_identities_ignore_other_portals_and_invalid_entries() -> None:
    who = Identity(
        "a",
        {
            "openportal_users": [
                "alice.physics.otherportal",
                "not-an-identifier",
                "too.many.dots.here",
                "alice..portal",
                42,
                None,
                "bob.physics.portal",
            ]
        },
    )
    assert users(who) == ["bob.physics.portal"]


def test_user_identities_without_a_usable_claim() -> None:
    assert users(None) == []
    assert users(Identity("a", {})) == []
    assert users(Identity("a", {"openportal_users": 7})) == []
    assert users(Identity("a", {"openportal_users": {"user": "alice.physics.portal"}})) == []
    # Another claim is not read.
    assert users(Identity("a", {"groups": ["alice.physics.portal"]})) == []


# --- the catalogue and the combined answer --------------------------------------------------

INSTANCE = "portal.provider.platform.instance"
PLATFORM = "portal.provider.platform"
OTHER = "portal.provider.other"


def test_catalogue_keeps_unparseable_documents_as_errors() -> None:
    result = SweepResult(
        published=(
            PublishedRules(PLATFORM, {"rules": [{"name": "x"}]}),
            PublishedRules(INSTANCE, {"rules": [ACCOUNT_RULE]}),
        ),
        silent=(OTHER,),
    )
    catalogue = catalogue_from(result, taken_at=12.5)
    assert catalogue.taken_at == 12.5
    assert catalogue.silent == (OTHER,)
    bad, good = catalogue.offerings
    assert bad.destination == PLATFORM
    assert bad.ruleset is None
    assert bad.error and "rule 'x'" in bad.error and "tasktypes" in bad.error
    assert good.destination == INSTANCE
    assert good.error is None
    assert good.ruleset is not None and good.ruleset.rules[0].requires_account
    assert good.portal == "portal"


def offering(destination: str) -> Offering:
    return Offering(destination, rules(OPEN_RULE))


def yes(destination: str, endpoint: str) -> Verdict:
    return Verdict(
        offering(destination), Answer(True, servicetype="hub", serviceinfo={"endpoint": endpoint})
    )


def test_combine_takes_the_first_yes_in_order() -> None:
    verdicts = [
        Verdict(offering(OTHER), Answer(False)),
        yes(PLATFORM, "https://platform.example/"),
        yes(INSTANCE, "https://instance.example/"),
    ]
    body = combine(verdicts, ())
    assert body["reponseword"] == "YES"
    assert body["servicetype"] == "hub"
    assert body["serviceinfo"] == {"endpoint": "https://platform.example/"}
    assert "reponseinfo" not in body
    assert [a["destination"] for a in body["answers"]] == [PLATFORM, INSTANCE]
    assert body["answers"][1] == {
        "destination": INSTANCE,
        "reponseword": "YES",
        "servicetype": "hub",
        "serviceinfo": {"endpoint": "https://instance.example/"},
    }
    assert body["provisionable"] == []
    assert body["failures"] == []
    assert body["asked"] == 3
    assert body["noes"] == 1


def test_combine_with_only_a_provisionable_no_carries_the_provision() -> None:
    provision = {"destination": INSTANCE, "instruction": "add_user a.p.portal"}
    answer = Answer(False, httpcode=403, reason="no account yet", provision=provision)
    body = combine(
        [Verdict(offering(INSTANCE), answer), Verdict(offering(OTHER), Answer(False))], ()
    )
    assert body["reponseword"] == "NO"
    assert body["reponseinfo"] == {
        "httpcode": 403,
        "reason": "no account yet",
        "provision": provision,
    }
    assert "destination" not in body
    assert body["provisionable"] == [{"destination": INSTANCE, **answer.to_json()}]
    assert body["answers"] == []
    assert body["asked"] == 2
    assert body["noes"] == 1


def test_combine_prefers_a_yes_over_a_provisionable_no() -> None:
    provision = {"destination": INSTANCE, "instruction": "add_user a.p.portal"}
    verdicts = [
        Verdict(offering(INSTANCE), Answer(False, httpcode=403, provision=provision)),
        yes(PLATFORM, "https://platform.example/"),
    ]
    body = combine(verdicts, ())
    assert body["reponseword"] == "YES"
    assert "reponseinfo" not in body
    assert len(body["provisionable"]) == 1
    assert body["noes"] == 0


def test_combine_lists_silent_and_failed_destinations() -> None:
    broken = Offering(PLATFORM, None, "rule 'x' must list at least one task type")
    verdicts = [
        Verdict(broken, None, status="invalid-rules", detail=broken.error),
        Verdict(offering(INSTANCE), None, status="account-check", detail="timed out"),
        Verdict(offering(OTHER), Answer(False)),
    ]
    body = combine(verdicts, ("portal.quiet", "portal.provider.mute"))
    assert body["reponseword"] == "NO"
    assert "reponseinfo" not in body
    assert body["failures"] == [
        {"destination": "portal.quiet", "status": "silent", "detail": "did not answer the sweep"},
        {
            "destination": "portal.provider.mute",
            "status": "silent",
            "detail": "did not answer the sweep",
        },
        {"destination": PLATFORM, "status": "invalid-rules", "detail": broken.error},
        {"destination": INSTANCE, "status": "account-check", "detail": "timed out"},
    ]
    assert body["asked"] == 5
    assert body["noes"] == 1


def test_combine_with_nothing_published() -> None:
    assert combine([], ()) == {
        "reponseword": "NO",
        "answers": [],
        "provisionable": [],
        "failures": [],
        "asked": 0,
        "noes": 0,
    }


# --- NetworkPlanner over an in-memory source ------------------------------------------------


class FakeSource:
    """A network in memory: what each destination publishes, and who has accounts where."""

    def __init__(
        self,
        published: Mapping[str, Mapping[str, Any]],
        accounts: set[tuple[str, str]] | None = None,
        silent: tuple[str, ...] = (),
    ) -> None:
        self.published = dict(published)
        self.accounts = accounts or set()
        self.silent = silent
        self.sweeps = 0
        self.budgets: list[float] = []
        self.account_calls: list[tuple[str, str]] = []
        #: When set, sweeps wait for it (to hold several requests on one sweep).
        self.release: asyncio.Event | None = None
        self.sweep_started = asyncio.Event()
        #: When set, account checks never return; when an exception, they raise it.
        self.hang_accounts = False
        self.account_error: Exception | None = None
        self.cancelled_checks = 0

    async def sweep(self, budget: float) -> SweepResult:
        self.sweeps += 1
        self.budgets.append(budget)
        self.sweep_started.set()
        if self.release is not None:
            await self.release.wait()
        entries = tuple(PublishedRules(d, doc) for d, doc in self.published.items())
        return SweepResult(entries, self.silent)

    async def has_account(self, destination: str, user: UserIdentifier) -> bool:
        self.account_calls.append((destination, str(user)))
        if self.account_error is not None:
            raise self.account_error
        if self.hang_accounts:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled_checks += 1
                raise
        return (destination, str(user)) in self.accounts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


SITE = {"rules": [ACCOUNT_RULE]}


def planner(source: FakeSource, clock: Clock | None = None, **settings: Any) -> NetworkPlanner:
    config = NetworkConfig(parse_network_config({}).service, NetworkSettings(**settings))
    return NetworkPlanner(config, source, clock=clock or Clock())


def caller(*users: str) -> Identity:
    return Identity(users[0] if users else "nobody", {"openportal_users": list(users)})


async def ask(network: NetworkPlanner, identity: Identity | None, **info: str) -> dict[str, Any]:
    async with asyncio.timeout(GUARD):
        return await network.answer(Task("jupyter-notebook", info), identity)


async def test_the_sweep_is_reused_within_refresh_and_repeated_after() -> None:
    source = FakeSource({INSTANCE: {"rules": [OPEN_RULE]}})
    clock = Clock()
    network = planner(source, clock, refresh=30.0, budget=0.7)
    first = await ask(network, None)
    assert first["reponseword"] == "YES"
    assert source.sweeps == 1
    assert source.budgets == [0.7]
    clock.now += 29.0
    await ask(network, None)
    assert source.sweeps == 1
    # What the site publishes now is not seen until the next sweep.
    source.published[INSTANCE] = {"rules": []}
    assert (await ask(network, None))["reponseword"] == "YES"
    clock.now += 1.5
    after = await ask(network, None)
    assert source.sweeps == 2
    assert after["reponseword"] == "NO"
    assert after["noes"] == 1
    # forget() drops the cached sweep at once.
    network.forget()
    await ask(network, None)
    assert source.sweeps == 3


async def test_refresh_zero_sweeps_for_every_question() -> None:
    source = FakeSource({INSTANCE: {"rules": [OPEN_RULE]}})
    network = planner(source, refresh=0.0)
    for _ in range(3):
        await ask(network, None)
    assert source.sweeps == 3


async def test_concurrent_questions_share_one_sweep() -> None:
    source = FakeSource({INSTANCE: {"rules": [OPEN_RULE]}})
    source.release = asyncio.Event()
    network = planner(source, refresh=0.0)
    questions = [asyncio.ensure_future(ask(network, None)) for _ in range(5)]
    async with asyncio.timeout(GUARD):
        await source.sweep_started.wait()
    for _ in range(5):
        await asyncio.sleep(0)  # let every question reach the shared sweep
    assert source.sweeps == 1
    assert not any(q.done() for q in questions)
    source.release.set()
    async with asyncio.timeout(GUARD):
        bodies = await asyncio.gather(*questions)
    assert source.sweeps == 1
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["reponseword"] == "YES"


async def test_a_cancelled_question_does_not_cancel_the_shared_sweep() -> None:
    source = FakeSource({INSTANCE: {"rules": [OPEN_RULE]}})
    source.release = asyncio.Event()
    network = planner(source, refresh=60.0)
    impatient = asyncio.ensure_future(ask(network, None))
    patient = asyncio.ensure_future(ask(network, None))
    async with asyncio.timeout(GUARD):
        await source.sweep_started.wait()
    impatient.cancel()
    source.release.set()
    async with asyncio.timeout(GUARD):
        body = await patient
    assert body["reponseword"] == "YES"
    assert source.sweeps == 1
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_existing_accounts_are_cached_for_account_ttl() -> None:
    alice = "alice.physics.portal"
    source = FakeSource({INSTANCE: SITE}, accounts={(INSTANCE, alice)})
    clock = Clock()
    network = planner(source, clock, refresh=1e9, account_ttl=60.0, missing_account_ttl=5.0)
    assert (await ask(network, caller(alice)))["reponseword"] == "YES"
    assert source.account_calls == [(INSTANCE, alice)]
    clock.now += 59.0
    # Even if the account went away meanwhile, the cached answer holds until the TTL.
    source.accounts.clear()
    assert (await ask(network, caller(alice)))["reponseword"] == "YES"
    assert len(source.account_calls) == 1
    clock.now += 2.0
    body = await ask(network, caller(alice))
    assert len(source.account_calls) == 2
    assert body["reponseword"] == "NO"
    assert body["provisionable"][0]["reponseinfo"]["provision"]["instruction"] == (
        f"add_user {alice}"
    )


async def test_missing_accounts_are_cached_for_missing_account_ttl() -> None:
    carol = "carol.physics.portal"
    source = FakeSource({INSTANCE: SITE})
    clock = Clock()
    network = planner(source, clock, refresh=1e9, account_ttl=60.0, missing_account_ttl=5.0)
    assert (await ask(network, caller(carol)))["reponseword"] == "NO"
    source.accounts.add((INSTANCE, carol))  # provisioned just now
    clock.now += 4.0
    assert (await ask(network, caller(carol)))["reponseword"] == "NO"
    assert source.account_calls == [(INSTANCE, carol)]
    clock.now += 2.0
    assert (await ask(network, caller(carol)))["reponseword"] == "YES"
    assert source.account_calls == [(INSTANCE, carol)] * 2
    # Each user has their own cache entry.
    dave = "dave.physics.portal"
    await ask(network, caller(dave))
    assert source.account_calls[-1] == (INSTANCE, dave)


async def test_a_hanging_account_check_becomes_an_account_check_failure() -> None:
    source = FakeSource({INSTANCE: SITE, PLATFORM: {"rules": [OPEN_RULE]}})
    source.hang_accounts = True
    network = planner(source, refresh=1e9, account_timeout=0.1)
    body = await ask(network, caller("alice.physics.portal"))
    # The other site's answer is not held up by the hanging one.
    assert body["reponseword"] == "YES"
    assert [a["destination"] for a in body["answers"]] == [PLATFORM]
    assert len(body["failures"]) == 1
    failure = body["failures"][0]
    assert failure["destination"] == INSTANCE
    assert failure["status"] == "account-check"
    assert "is_existing_user alice.physics.portal" in failure["detail"]
    assert body["asked"] == 2
    assert body["noes"] == 0
    assert source.cancelled_checks == 1  # the hanging check was abandoned, not leaked
    # A failed check is not cached as an answer: the next question asks again.
    source.hang_accounts = False
    source.accounts.add((INSTANCE, "alice.physics.portal"))
    again = await ask(network, caller("alice.physics.portal"))
    assert [a["destination"] for a in again["answers"]] == [INSTANCE, PLATFORM]
    assert again["failures"] == []


async def test_a_site_that_cannot_say_becomes_an_account_check_failure() -> None:
    source = FakeSource({INSTANCE: SITE})
    source.account_error = AccountCheckError("is_existing_user returned 'maybe'")
    network = planner(source, refresh=1e9)
    body = await ask(network, caller("alice.physics.portal"))
    assert body["reponseword"] == "NO"
    assert body["failures"] == [
        {
            "destination": INSTANCE,
            "status": "account-check",
            "detail": "is_existing_user returned 'maybe'",
        }
    ]
    assert body["provisionable"] == []


async def test_account_checks_only_for_users_of_the_destinations_portal() -> None:
    source = FakeSource({INSTANCE: SITE})
    network = planner(source, refresh=1e9)
    body = await ask(network, caller("alice.physics.elsewhere"))
    assert source.account_calls == []
    assert body["reponseword"] == "NO"
    assert body["provisionable"] == []
    assert body["noes"] == 1
    assert "reponseinfo" not in body  # a plain NO on top: nothing to provision
    # The destination's own answer says why: the token names no user of its portal.
    [verdict], _ = await network.verdicts(NOTEBOOK, caller("alice.physics.elsewhere"))
    assert verdict.answer is not None and verdict.answer.httpcode == 403
    assert "no user of portal 'portal'" in (verdict.answer.reason or "")
    assert "openportal_users" in (verdict.answer.reason or "")
    assert verdict.answer.provision is None
    # Anonymous callers are never checked either.
    anonymous = await ask(network, None)
    assert source.account_calls == []
    assert anonymous["reponseword"] == "NO"
    assert anonymous["provisionable"] == []


async def test_a_site_with_no_account_rule_is_never_asked_about_accounts() -> None:
    source = FakeSource({INSTANCE: {"rules": [OPEN_RULE, ACCOUNT_RULE]}})
    network = planner(source, refresh=1e9)
    body = await ask(network, caller("alice.physics.portal"))
    assert body["reponseword"] == "YES"
    assert source.account_calls == []


async def test_the_project_taskinfo_picks_the_identity_to_provision() -> None:
    users = ("alice.chem.portal", "alice.physics.portal")
    source = FakeSource({INSTANCE: SITE})
    network = planner(source, refresh=1e9, missing_account_ttl=0.0)

    body = await ask(network, caller(*users), project="physics")
    provision = body["reponseinfo"]["provision"]
    assert provision == {"destination": INSTANCE, "instruction": "add_user alice.physics.portal"}
    assert source.account_calls == [(INSTANCE, "alice.physics.portal")]

    # Without a project, every identity is checked and the first is offered.
    source.account_calls.clear()
    body = await ask(network, caller(*users))
    assert body["reponseinfo"]["provision"]["instruction"] == "add_user alice.chem.portal"
    assert sorted(source.account_calls) == [(INSTANCE, u) for u in users]

    # A project the caller has no identity in falls back to all of them.
    body = await ask(network, caller(*users), project="biology")
    assert body["reponseinfo"]["provision"]["instruction"] == "add_user alice.chem.portal"

    # With an account in the chosen project, the answer is YES.
    source.accounts.add((INSTANCE, "alice.physics.portal"))
    assert (await ask(network, caller(*users), project="physics"))["reponseword"] == "YES"
    # ...but not for the other project, whose identity still has no account.
    chem = await ask(network, caller(*users), project="chem")
    assert chem["reponseword"] == "NO"
    assert chem["reponseinfo"]["provision"]["instruction"] == "add_user alice.chem.portal"


async def test_any_of_the_callers_accounts_is_enough_without_a_project() -> None:
    users = ("alice.chem.portal", "alice.physics.portal")
    source = FakeSource({INSTANCE: SITE}, accounts={(INSTANCE, "alice.physics.portal")})
    network = planner(source, refresh=1e9)
    assert (await ask(network, caller(*users)))["reponseword"] == "YES"


async def test_judge_reports_invalid_rules_and_silent_destinations() -> None:
    source = FakeSource(
        {PLATFORM: {"rules": [{"name": "x"}]}, INSTANCE: {"rules": [OPEN_RULE]}},
        silent=(OTHER,),
    )
    network = planner(source, refresh=1e9)
    body = await ask(network, None)
    assert body["reponseword"] == "YES"
    assert [a["destination"] for a in body["answers"]] == [INSTANCE]
    assert [(f["destination"], f["status"]) for f in body["failures"]] == [
        (OTHER, "silent"),
        (PLATFORM, "invalid-rules"),
    ]
    assert "tasktypes" in body["failures"][1]["detail"]
    assert body["asked"] == 3
    verdicts, catalogue = await network.verdicts(NOTEBOOK, None)
    assert [v.status for v in verdicts] == ["invalid-rules", "answered"]
    assert catalogue.silent == (OTHER,)


async def test_concurrent_questions_about_one_account_share_one_check() -> None:
    alice = "alice.physics.portal"
    source = FakeSource({INSTANCE: SITE}, accounts={(INSTANCE, alice)})
    network = planner(source, refresh=1e9, account_ttl=0.0)
    await ask(network, None)  # take the sweep first, so only the account check is shared
    bodies = await asyncio.gather(*(ask(network, caller(alice)) for _ in range(5)))
    assert [b["reponseword"] for b in bodies] == ["YES"] * 5
    assert source.account_calls == [(INSTANCE, alice)]
    # Once it has answered (and with no caching), the next question asks again.
    await ask(network, caller(alice))
    assert len(source.account_calls) == 2


async def test_a_failed_shared_check_fails_every_question_waiting_on_it() -> None:
    source = FakeSource({INSTANCE: SITE})
    source.account_error = AccountCheckError("site unreachable")
    network = planner(source, refresh=1e9)
    bodies = await asyncio.gather(*(ask(network, caller("a.p.portal")) for _ in range(3)))
    for body in bodies:
        assert body["failures"] == [
            {"destination": INSTANCE, "status": "account-check", "detail": "site unreachable"}
        ]
    assert len(source.account_calls) == 1


async def test_the_cluster_and_network_samples_work_together() -> None:
    settings = load_network_config(str(EXAMPLES / "network.toml")).network
    assert (settings.port, settings.user_claim) == (8401, "openportal_users")
    sample = tomllib.loads((EXAMPLES / "cluster.toml").read_text())
    alice, bob = "alice.physics.portal", "bob.physics.portal"
    source = FakeSource({INSTANCE: sample}, accounts={(INSTANCE, alice)})
    network = planner(source, refresh=1e9)

    def member(user: str, group: str) -> Identity:
        return Identity(user, {"openportal_users": [user], "groups": [group]})

    async def gpu(identity: Identity) -> dict[str, Any]:
        async with asyncio.timeout(GUARD):
            return await network.answer(Task("gpu-batch"), identity)

    assert (await gpu(member(alice, "physics")))["serviceinfo"] == {
        "endpoint": "ssh://login.cluster.example.org/"
    }
    hint = (await gpu(member(bob, "astro")))["reponseinfo"]["provision"]
    assert hint == {"destination": INSTANCE, "instruction": f"add_user {bob}"}
    refused = await gpu(member(alice, "chemistry"))
    assert refused["reponseword"] == "NO" and refused["provisionable"] == []
    assert refused["noes"] == 1


async def test_an_account_check_that_breaks_fails_only_its_own_destination() -> None:
    other = "portal.provider.platform.other"
    source = FakeSource({INSTANCE: SITE, other: {"rules": [OPEN_RULE]}})
    source.account_error = ValueError("garbage from the site")
    network = planner(source, refresh=1e9)
    body = await ask(network, caller("a.p.portal"))
    assert body["reponseword"] == "YES"  # the other site still answers
    assert body["answers"][0]["destination"] == other
    assert body["failures"] == [
        {
            "destination": INSTANCE,
            "status": "account-check",
            "detail": "ValueError: garbage from the site",
        }
    ]
