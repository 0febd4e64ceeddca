"""Declarative acceptance rules and the pure engine that evaluates them.

A service's TOML lists ``[[rules]]``.  Each rule names the task types it covers, the answer
to give, and conditions that must all hold:

* ``requires_capabilities`` - site capabilities (``[site] capabilities``), e.g. ``rucio``;
* ``[[rules.taskinfo]]`` - conditions on the task's ``taskinfo.*`` details;
* ``[rules.identity]`` - conditions on the caller's verified claims (groups, claims);
* ``requires_account = true`` - the caller must already have an account at this site.  Only
  the network planner (:mod:`broadgauge.planner.network`) can tell: it asks the site's
  OpenPortal instance.  A standalone service does not know, so it skips such rules.

Rules are tried in file order; the first whose task type, capabilities and taskinfo
conditions hold *and* whose identity conditions hold decides.  A rule that matched the task
but not the caller is remembered: if no later rule decides, the answer is the seed's
"allowed to ask, but not to run it here" NO, with ``reponseinfo {httpcode: 403, reason}``.
With no matching rule at all the answer is a plain NO, as the seed's examples show.
A rule that would have answered but for a missing account is remembered too, ahead of an
identity refusal: its NO says so, and the network planner adds where to provision the account.

Nothing here does I/O, so every edge case is tested without sockets; :func:`evaluate`
returns the answer together with an :class:`Explanation` saying which rule decided and why
each earlier rule did not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broadgauge.planner.answers import NO, Answer, Task

_TASKINFO_OPS = ("present", "equals", "one_of", "matches", "endswith_one_of")
_RULE_KEYS = {
    "name",
    "tasktypes",
    "answer",
    "servicetype",
    "serviceinfo",
    "reason",
    "requires_capabilities",
    "taskinfo",
    "identity",
    "deny_reason",
    "requires_account",
}
_IDENTITY_KEYS = {"authenticated", "groups_any", "groups_all", "claims"}


class RuleError(ValueError):
    """The rules in a service's configuration are malformed (message names the rule)."""


@dataclass(frozen=True)
class Identity:
    """A verified caller: the token's subject and claims.  ``None`` stands for anonymous."""

    subject: str
    claims: Mapping[str, Any] = field(default_factory=dict)

    def groups(self, claim: str = "groups") -> frozenset[str]:
        """The caller's groups from ``claim`` (a list of strings, or one space-separated one)."""
        value = self.claims.get(claim)
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list):
            return frozenset(str(v) for v in value)
        return frozenset()


@dataclass(frozen=True)
class TaskinfoCondition:
    """One condition on a ``taskinfo`` key; exactly one operator is set."""

    key: str
    op: str
    value: Any

    def check(self, taskinfo: Mapping[str, str]) -> str | None:
        """None when it holds, else why not (for the explanation)."""
        actual = taskinfo.get(self.key)
        if self.op == "present":
            if (actual is not None) == bool(self.value):
                return None
            return f"taskinfo.{self.key} is {'missing' if self.value else 'present'}"
        if actual is None:
            return f"taskinfo.{self.key} is missing"
        ok = (
            (self.op == "equals" and actual == self.value)
            or (self.op == "one_of" and actual in self.value)
            or (self.op == "matches" and re.fullmatch(self.value, actual) is not None)
            or (self.op == "endswith_one_of" and any(actual.endswith(s) for s in self.value))
        )
        return None if ok else f"taskinfo.{self.key}={actual!r} fails {self.op} {self.value!r}"


@dataclass(frozen=True)
class IdentityCondition:
    """Conditions on who is asking; an empty condition holds for everyone, even anonymous."""

    authenticated: bool = False
    groups_any: frozenset[str] = frozenset()
    groups_all: frozenset[str] = frozenset()
    claims: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when the condition demands nothing of the caller."""
        return not (self.authenticated or self.groups_any or self.groups_all or self.claims)

    def check(self, identity: Identity | None, groups_claim: str = "groups") -> str | None:
        """None when ``identity`` satisfies every condition, else why not."""
        if self.empty:
            return None
        if identity is None:
            return "an authenticated identity is required"
        groups = identity.groups(groups_claim)
        if self.groups_any and not (groups & self.groups_any):
            return f"not in any of the groups {sorted(self.groups_any)}"
        if self.groups_all and not self.groups_all <= groups:
            return f"not in all of the groups {sorted(self.groups_all)}"
        for claim, allowed in self.claims.items():
            value = identity.claims.get(claim)
            values = [str(v) for v in value] if isinstance(value, list) else [str(value)]
            if value is None or not set(values) & set(allowed):
                return f"claim {claim!r} is not one of {list(allowed)}"
        return None


@dataclass(frozen=True)
class Rule:
    """One acceptance rule, as parsed from a ``[[rules]]`` table."""

    name: str
    tasktypes: frozenset[str]
    answer: Answer
    requires_capabilities: frozenset[str] = frozenset()
    taskinfo: tuple[TaskinfoCondition, ...] = ()
    identity: IdentityCondition = IdentityCondition()
    deny_reason: str = "Not authorised"
    requires_account: bool = False


@dataclass(frozen=True)
class Step:
    """What happened to one rule during an evaluation."""

    rule: str
    outcome: str  # "skipped", "identity-denied", "account-missing" or "decided"
    detail: str


@dataclass(frozen=True)
class Explanation:
    """Which rule decided (None when no rule did) and the fate of every rule tried."""

    decided_by: str | None
    steps: tuple[Step, ...]
    summary: str
    #: The answer is NO only because the caller has no account at this site.
    account_missing: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON shown by ``GET /accepts/explain`` and ``broadgauge planner check``."""
        return {
            "decided_by": self.decided_by,
            "summary": self.summary,
            "account_missing": self.account_missing,
            "steps": [
                {"rule": s.rule, "outcome": s.outcome, "detail": s.detail} for s in self.steps
            ],
        }


@dataclass(frozen=True)
class Capacity:
    """What a site can hold at once (``[site] capacity``): offers reserve from it."""

    cores: int
    memory_mib: int


@dataclass(frozen=True)
class RuleSet:
    """A service's rules, its site capabilities and capacity, and the claim that carries
    groups."""

    rules: tuple[Rule, ...]
    capabilities: frozenset[str] = frozenset()
    groups_claim: str = "groups"
    capacity: Capacity | None = None


def _parse_capacity(raw: Any) -> Capacity | None:
    """``[site] capacity = {cores = N, memory = GiB}`` (the broker's offers need it)."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"cores", "memory"}:
        raise RuleError("site.capacity must be a table with cores and memory (GiB)")
    cores, memory = raw.get("cores"), raw.get("memory")
    if not isinstance(cores, int) or isinstance(cores, bool) or not 1 <= cores <= 10_000_000:
        raise RuleError("site.capacity.cores must be a whole number of cores, at least 1")
    if (
        not isinstance(memory, int | float)
        or isinstance(memory, bool)
        or not 0 < memory <= 1_000_000_000
    ):
        raise RuleError("site.capacity.memory must be a positive number of GiB")
    return Capacity(cores, int(memory * 1024))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RuleError(f"{where} must be a string or a list of strings")


def _parse_taskinfo(raw: Any, where: str) -> tuple[TaskinfoCondition, ...]:
    if not isinstance(raw, list):
        raise RuleError(f"{where}.taskinfo must be an array of tables ([[rules.taskinfo]])")
    conditions = []
    for i, item in enumerate(raw):
        here = f"{where}.taskinfo[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("key"), str):
            raise RuleError(f"{here} needs a string 'key'")
        ops = [op for op in _TASKINFO_OPS if op in item]
        extra = set(item) - {"key", *_TASKINFO_OPS}
        if len(ops) != 1 or extra:
            raise RuleError(f"{here} needs exactly one of {list(_TASKINFO_OPS)}")
        op = ops[0]
        value: Any = item[op]
        if op == "present" and not isinstance(value, bool):
            raise RuleError(f"{here}.present must be true or false")
        if op == "equals" and not isinstance(value, str):
            raise RuleError(f"{here}.equals must be a string")
        if op in ("one_of", "endswith_one_of"):
            value = _strings(value, f"{here}.{op}")
        if op == "matches":
            if not isinstance(value, str):
                raise RuleError(f"{here}.matches must be a string")
            try:
                re.compile(value)
            except re.error as exc:
                raise RuleError(f"{here}.matches is not a valid regular expression: {exc}") from exc
        conditions.append(TaskinfoCondition(key=item["key"], op=op, value=value))
    return tuple(conditions)


def _parse_identity(raw: Any, where: str) -> IdentityCondition:
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}.identity must be a table")
    unknown = set(raw) - _IDENTITY_KEYS
    if unknown:
        raise RuleError(f"{where}.identity has unknown keys {sorted(unknown)}")
    authenticated = raw.get("authenticated", False)
    if not isinstance(authenticated, bool):
        raise RuleError(f"{where}.identity.authenticated must be true or false")
    claims_raw = raw.get("claims", {})
    if not isinstance(claims_raw, Mapping):
        raise RuleError(f"{where}.identity.claims must be a table")
    return IdentityCondition(
        authenticated=authenticated,
        groups_any=frozenset(_strings(raw.get("groups_any", []), f"{where}.identity.groups_any")),
        groups_all=frozenset(_strings(raw.get("groups_all", []), f"{where}.identity.groups_all")),
        claims={k: _strings(v, f"{where}.identity.claims.{k}") for k, v in claims_raw.items()},
    )


def parse_identity_condition(raw: Any, where: str) -> IdentityCondition:
    """Parse an identity condition table (also used for ``[auth.may_ask]``)."""
    return _parse_identity(raw, where)


def parse_rule(raw: Any, index: int) -> Rule:
    """Parse one ``[[rules]]`` table; :class:`RuleError` names what is wrong."""
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where} must be a table")
    name = raw.get("name", where)
    if not isinstance(name, str) or not name:
        raise RuleError(f"{where}.name must be a non-empty string")
    where = f"rule {name!r}"
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise RuleError(f"{where} has unknown keys {sorted(unknown)}")
    tasktypes = _strings(raw.get("tasktypes"), f"{where}.tasktypes") if "tasktypes" in raw else ()
    if not tasktypes:
        raise RuleError(f"{where} must list at least one task type in 'tasktypes'")
    word = raw.get("answer", "YES")
    if word == "YES":
        servicetype = raw.get("servicetype")
        serviceinfo = raw.get("serviceinfo")
        if not isinstance(servicetype, str) or not servicetype:
            raise RuleError(f"{where} answers YES, so it needs a 'servicetype'")
        if not isinstance(serviceinfo, Mapping) or not isinstance(serviceinfo.get("endpoint"), str):
            raise RuleError(f"{where} answers YES, so it needs serviceinfo.endpoint")
        answer = Answer(True, servicetype=servicetype, serviceinfo=dict(serviceinfo))
    elif word == "NO":
        reason = raw.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise RuleError(f"{where}.reason must be a string")
        answer = Answer(False, reason=reason)
    else:
        raise RuleError(f'{where}.answer must be "YES" or "NO"')
    deny_reason = raw.get("deny_reason", "Not authorised")
    if not isinstance(deny_reason, str):
        raise RuleError(f"{where}.deny_reason must be a string")
    requires_account = raw.get("requires_account", False)
    if not isinstance(requires_account, bool):
        raise RuleError(f"{where}.requires_account must be true or false")
    return Rule(
        name=name,
        tasktypes=frozenset(tasktypes),
        answer=answer,
        requires_capabilities=frozenset(
            _strings(raw.get("requires_capabilities", []), f"{where}.requires_capabilities")
        ),
        taskinfo=_parse_taskinfo(raw.get("taskinfo", []), where),
        identity=_parse_identity(raw.get("identity", {}), where),
        deny_reason=deny_reason,
        requires_account=requires_account,
    )


def parse_ruleset(config: Mapping[str, Any]) -> RuleSet:
    """Parse the ``[site]`` and ``[[rules]]`` parts of a service configuration."""
    site = config.get("site", {})
    if not isinstance(site, Mapping):
        raise RuleError("[site] must be a table")
    raw_rules = config.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RuleError("rules must be an array of tables ([[rules]])")
    rules = tuple(parse_rule(raw, i) for i, raw in enumerate(raw_rules))
    names = [r.name for r in rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleError(f"rule names must be unique; repeated: {duplicates}")
    groups_claim = site.get("groups_claim", "groups")
    if not isinstance(groups_claim, str):
        raise RuleError("site.groups_claim must be a string")
    return RuleSet(
        rules=rules,
        capabilities=frozenset(_strings(site.get("capabilities", []), "site.capabilities")),
        groups_claim=groups_claim,
        capacity=_parse_capacity(site.get("capacity")),
    )


def evaluate(
    ruleset: RuleSet,
    task: Task,
    identity: Identity | None,
    has_account: bool | None = None,
) -> tuple[Answer, Explanation]:
    """Decide ``task`` for ``identity`` (None: anonymous); the answer and why.

    ``has_account`` is whether the caller has an account at this site: None when it is not
    known (a standalone service), which skips rules with ``requires_account``.
    """
    steps: list[Step] = []
    denied: Rule | None = None
    no_account: Rule | None = None
    for rule in ruleset.rules:
        if task.tasktype not in rule.tasktypes:
            steps.append(Step(rule.name, "skipped", f"does not cover {task.tasktype!r}"))
            continue
        missing = rule.requires_capabilities - ruleset.capabilities
        if missing:
            steps.append(Step(rule.name, "skipped", f"site lacks {sorted(missing)}"))
            continue
        failed = next((r for c in rule.taskinfo if (r := c.check(task.taskinfo))), None)
        if failed:
            steps.append(Step(rule.name, "skipped", failed))
            continue
        refused = rule.identity.check(identity, ruleset.groups_claim)
        if refused is None and rule.requires_account and identity is None:
            refused = "an account is required, so the caller must sign in"
        if refused:
            steps.append(Step(rule.name, "identity-denied", refused))
            denied = denied or rule
            continue
        if rule.requires_account and has_account is None:
            steps.append(Step(rule.name, "skipped", "account status is not known here"))
            continue
        if rule.requires_account and not has_account:
            steps.append(Step(rule.name, "account-missing", "the caller has no account here"))
            no_account = no_account or rule
            continue
        word = "YES" if rule.answer.accepted else "NO"
        steps.append(Step(rule.name, "decided", f"answers {word}"))
        return rule.answer, Explanation(
            rule.name, tuple(steps), f"rule {rule.name!r} answered {word}"
        )
    if no_account is not None:
        answer = Answer(False, httpcode=403, reason="You have no account at this site yet")
        summary = f"rule {no_account.name!r} would accept the task, but the caller has no account"
        return answer, Explanation(no_account.name, tuple(steps), summary, account_missing=True)
    if denied is not None:
        answer = Answer(False, httpcode=403, reason=denied.deny_reason)
        summary = f"rule {denied.name!r} covers the task but not this caller: NO (403)"
        return answer, Explanation(denied.name, tuple(steps), summary)
    return NO, Explanation(None, tuple(steps), f"no rule accepts {task.tasktype!r}: NO")


def needs_account(ruleset: RuleSet, task: Task, identity: Identity | None) -> bool:
    """Whether the answer for this caller turns on an account: the rule that would decide,
    were the account there, requires one."""
    _, why = evaluate(ruleset, task, identity, has_account=True)
    return turns_on_account(ruleset, why)


def turns_on_account(ruleset: RuleSet, why: Explanation) -> bool:
    """Whether an evaluation made with ``has_account=True`` was decided by a rule that
    requires an account (so the answer depends on whether the caller really has one).

    When it was not, the same evaluation holds whatever the caller's account status is.
    """
    rule = next((r for r in ruleset.rules if r.name == why.decided_by), None)
    return rule is not None and rule.requires_account and why.steps[-1].outcome == "decided"


def check_may_ask(
    condition: IdentityCondition, identity: Identity | None, groups_claim: str
) -> str | None:
    """Whether an authenticated caller may use this planner at all (None: yes)."""
    if identity is None or condition.empty:
        return None
    return condition.check(identity, groups_claim)


__all__: Sequence[str] = (
    "Explanation",
    "Identity",
    "IdentityCondition",
    "Rule",
    "RuleError",
    "RuleSet",
    "Step",
    "TaskinfoCondition",
    "check_may_ask",
    "evaluate",
    "needs_account",
    "parse_identity_condition",
    "parse_rule",
    "parse_ruleset",
    "turns_on_account",
)
