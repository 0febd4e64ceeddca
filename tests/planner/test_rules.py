"""The pure rule engine and the request/answer shapes: no sockets, no event loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadgauge.planner.answers import (
    Answer,
    AnswerError,
    Task,
    TaskError,
    answer_from_json,
    task_from_pairs,
)
from broadgauge.planner.config import load, parse_config
from broadgauge.planner.rules import Identity, RuleError, evaluate, parse_ruleset
from tests.planner.rulesets import escape_members_only, yes_rule

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "planner"

JUPYTER = {
    "reponseword": "YES",
    "servicetype": "jupyter-hub",
    "serviceinfo": {"endpoint": "http://jupyter.example.org/"},
}
BINDER = {
    "reponseword": "YES",
    "servicetype": "binder-hub",
    "serviceinfo": {"endpoint": "http://binder.example.org/"},
}
ESCAPE = {
    "reponseword": "YES",
    "servicetype": "binder-hub",
    "serviceinfo": {"endpoint": "http://binder.example.eu/"},
}
NO = {"reponseword": "NO"}

# The seed's answers, service by service and task type by task type.
SEED = {
    "jupyterhub": {"jupyter-notebook": JUPYTER, "binder-notebook": NO, "esap-notebook": NO},
    "binderhub": {"jupyter-notebook": BINDER, "binder-notebook": BINDER, "esap-notebook": NO},
    "esap": {"jupyter-notebook": ESCAPE, "binder-notebook": ESCAPE, "esap-notebook": ESCAPE},
}


def decide(config: dict[str, Any], tasktype: str, identity: Identity | None = None, **info: str):
    ruleset = parse_ruleset(config)
    return evaluate(ruleset, Task(tasktype, info), identity)


@pytest.mark.parametrize(
    ("service", "tasktype"), [(s, t) for s, answers in SEED.items() for t in answers]
)
def test_sample_configs_give_the_seeds_answers(service: str, tasktype: str) -> None:
    config = load(EXAMPLES / f"{service}.toml")
    answer, why = evaluate(config.ruleset, Task(tasktype), None)
    assert answer.to_json() == SEED[service][tasktype]
    assert (why.decided_by is None) == (answer.to_json() == NO)


def test_binder_dependency_file_conditions() -> None:
    ruleset = load(EXAMPLES / "binderhub.toml").ruleset
    for good in ("requirements.txt", "environment.yml", "binder/environment.yml"):
        answer, why = evaluate(ruleset, Task("binder-notebook", {"dependencies": good}), None)
        assert answer.to_json() == BINDER
        assert why.decided_by == "binder-notebooks-with-dependencies"
    for bad in ("setup.py", "myrequirements.txt", "requirements.txt.bak"):
        answer, why = evaluate(ruleset, Task("binder-notebook", {"dependencies": bad}), None)
        assert answer.to_json() == NO, bad
        assert why.decided_by is None
        assert [s.outcome for s in why.steps] == ["skipped", "skipped", "skipped"]


def test_unknown_task_types_ignore_taskinfo() -> None:
    ruleset = load(EXAMPLES / "esap.toml").ruleset
    answer, why = evaluate(ruleset, Task("zeppelin-notebook", {"anything": "x"}), None)
    assert answer.to_json() == NO
    assert why.summary == "no rule accepts 'zeppelin-notebook': NO"


RESTRICTED = {"site": {"capabilities": ["rucio"]}, "rules": [escape_members_only("members")]}


def test_identity_conditions_give_a_403_no_not_a_plain_no() -> None:
    anonymous, why = decide(RESTRICTED, "esap-notebook")
    assert anonymous.to_json() == {
        "reponseword": "NO",
        "reponseinfo": {"httpcode": 403, "reason": "ESCAPE members only"},
    }
    assert why.decided_by == "members"
    outsider, _ = decide(RESTRICTED, "esap-notebook", Identity("bob", {"groups": ["lofar"]}))
    assert outsider.httpcode == 403
    member, why = decide(RESTRICTED, "esap-notebook", Identity("al", {"groups": ["escape"]}))
    assert member.to_json() == ESCAPE
    assert why.steps[-1].outcome == "decided"


def test_a_later_rule_can_still_accept_a_caller_an_earlier_rule_refused() -> None:
    config = {
        "rules": [
            *RESTRICTED["rules"],
            yes_rule(
                "fallback",
                "esap-notebook",
                servicetype="binder-hub",
                endpoint="http://public.example/",
            ),
        ],
        "site": {"capabilities": ["rucio"]},
    }
    answer, why = decide(config, "esap-notebook")
    assert answer.serviceinfo == {"endpoint": "http://public.example/"}
    assert [s.outcome for s in why.steps] == ["identity-denied", "decided"]


def test_missing_capability_skips_the_rule() -> None:
    config = {**RESTRICTED, "site": {"capabilities": []}}
    answer, why = decide(config, "esap-notebook", Identity("al", {"groups": ["escape"]}))
    assert answer.to_json() == NO
    assert why.steps[0].detail == "site lacks ['rucio']"


def test_groups_claim_as_a_space_separated_string_and_a_custom_claim_name() -> None:
    config = {**RESTRICTED, "site": {"capabilities": ["rucio"], "groups_claim": "wlcg.groups"}}
    who = Identity("al", {"wlcg.groups": "/atlas /escape escape"})
    assert decide(config, "esap-notebook", who)[0].accepted


def test_claims_and_groups_all_conditions() -> None:
    config = {
        "rules": [
            yes_rule(
                "r",
                "t",
                identity={
                    "groups_all": ["a", "b"],
                    "claims": {"email_verified": "True", "idp": ["x", "y"]},
                },
            )
        ]
    }
    ok = Identity("u", {"groups": ["a", "b", "c"], "email_verified": True, "idp": "y"})
    assert decide(config, "t", ok)[0].accepted
    for claims in (
        {"groups": ["a"], "email_verified": True, "idp": "y"},
        {"groups": ["a", "b"], "email_verified": False, "idp": "y"},
        {"groups": ["a", "b"], "email_verified": True},
        {"groups": ["a", "b"], "email_verified": True, "idp": ["z"]},
    ):
        answer, _ = decide(config, "t", Identity("u", claims))
        assert answer.httpcode == 403, claims


def test_an_explicit_no_rule_answers_with_its_reason_and_stops() -> None:
    config = {
        "rules": [
            {"name": "deny", "tasktypes": ["t"], "answer": "NO", "reason": "maintenance"},
            yes_rule("ok", "t"),
        ]
    }
    answer, why = decide(config, "t")
    assert answer.to_json() == {"reponseword": "NO", "reponseinfo": {"reason": "maintenance"}}
    assert why.decided_by == "deny"


@pytest.mark.parametrize(
    ("condition", "info", "holds"),
    [
        ({"present": True}, {}, False),
        ({"present": True}, {"k": ""}, True),
        ({"present": False}, {}, True),
        ({"equals": "x"}, {"k": "x"}, True),
        ({"equals": "x"}, {"k": "X"}, False),
        ({"equals": "x"}, {}, False),
        ({"one_of": ["a", "b"]}, {"k": "b"}, True),
        ({"one_of": "a"}, {"k": "a"}, True),
        ({"one_of": ["a"]}, {"k": "ab"}, False),
        ({"matches": "a+"}, {"k": "aaa"}, True),
        ({"matches": "a+"}, {"k": "aab"}, False),  # full match, not search
        ({"endswith_one_of": [".yml"]}, {"k": "env.yml"}, True),
        ({"endswith_one_of": [".yml"]}, {"k": "env.yaml"}, False),
    ],
)
def test_taskinfo_operators(condition: dict[str, Any], info: dict[str, str], holds: bool) -> None:
    config = {"rules": [yes_rule("r", "t", taskinfo=[{"key": "k", **condition}])]}
    assert decide(config, "t", **info)[0].accepted is holds


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"name": "r", "servicetype": "s", "serviceinfo": {"endpoint": "e"}}], "task type"),
        ([{"name": "r", "tasktypes": []}], "task type"),
        ([{"name": "r", "tasktypes": ["t"]}], "servicetype"),
        ([{"name": "r", "tasktypes": ["t"], "servicetype": "s"}], "endpoint"),
        ([{"name": "r", "tasktypes": ["t"], "answer": "MAYBE"}], "YES"),
        ([{"name": "r", "tasktypes": ["t"], "answer": "NO", "colour": 1}], "unknown keys"),
        (
            [{"name": "r", "tasktypes": ["t"], "answer": "NO", "taskinfo": [{"key": "k"}]}],
            "exactly one",
        ),
        (
            [
                {
                    "name": "r",
                    "tasktypes": ["t"],
                    "answer": "NO",
                    "taskinfo": [{"key": "k", "equals": "a", "one_of": ["a"]}],
                }
            ],
            "exactly one",
        ),
        (
            [
                {
                    "name": "r",
                    "tasktypes": ["t"],
                    "answer": "NO",
                    "taskinfo": [{"key": "k", "matches": "("}],
                }
            ],
            "regular expression",
        ),
        (
            [{"name": "r", "tasktypes": ["t"], "answer": "NO", "identity": {"group": ["a"]}}],
            "unknown keys",
        ),
        (
            [
                {"name": "r", "tasktypes": ["t"], "answer": "NO"},
                {"name": "r", "tasktypes": ["u"], "answer": "NO"},
            ],
            "unique",
        ),
        ("not a list", "array of tables"),
    ],
)
def test_malformed_rules_are_refused_with_a_message(rules: Any, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_ruleset({"rules": rules})


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ({"mode": "sometimes"}, "auth.mode"),
        ({"mode": "required"}, "issuer"),
        ({"issuer": "http://i"}, "audience"),
        ({"issuer": "http://i", "audience": "a", "algorithms": ["HS256"]}, "asymmetric"),
        ({"issuer": "http://i", "audience": "a", "algorithms": ["none"]}, "asymmetric"),
    ],
)
def test_malformed_auth_is_refused(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_config({"auth": auth})


def test_unknown_top_level_table_is_refused() -> None:
    with pytest.raises(RuleError, match="unknown top-level"):
        parse_config({"rule": []})


def test_task_from_query_form_and_json_shapes() -> None:
    flat = task_from_pairs(
        [("tasktype", "binder-notebook"), ("taskinfo.repository", "https://g/x"), ("other", "x")]
    )
    nested = task_from_pairs(
        {"tasktype": "binder-notebook", "taskinfo": {"repository": "https://g/x"}}.items()
    )
    assert flat == nested == Task("binder-notebook", {"repository": "https://g/x"})
    deep = task_from_pairs({"tasktype": "t", "taskinfo": {"a": {"b": 1, "c": True}}}.items())
    assert deep.taskinfo == {"a.b": "1", "a.c": "true"}
    assert flat.as_params() == [
        ("tasktype", "binder-notebook"),
        ("taskinfo.repository", "https://g/x"),
    ]


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("tasktype", "")],
        [("tasktype", "  ")],
        [("tasktype", 3)],
        [("tasktype", "t"), ("taskinfo", "x")],
        [("tasktype", "t"), ("taskinfo", {"a": [1]})],
        [("tasktype", "t"), ("taskinfo.a", None)],
    ],
)
def test_bad_tasks_are_refused(pairs: list[tuple[str, Any]]) -> None:
    with pytest.raises(TaskError):
        task_from_pairs(pairs)


def test_answer_parsing_is_strict_about_garbage() -> None:
    assert answer_from_json(JUPYTER) == Answer(True, "jupyter-hub", JUPYTER["serviceinfo"])
    assert answer_from_json({"reponseword": "NO", "reponseinfo": {"httpcode": 403}}).httpcode == 403
    for garbage in (
        [],
        "YES",
        {"responseword": "YES"},  # the "corrected" spelling is not the seed's
        {"reponseword": "yes"},
        {"reponseword": "YES", "servicetype": "x"},
        {"reponseword": "YES", "servicetype": "x", "serviceinfo": {"endpoint": 3}},
    ):
        with pytest.raises(AnswerError):
            answer_from_json(garbage)


words = st.text(alphabet="abcxyz-", min_size=1, max_size=6)


@given(
    tasktypes=st.lists(words, min_size=1, max_size=3),
    asked=words,
    groups=st.lists(words, max_size=3),
    needed=st.lists(words, max_size=2),
    info=st.dictionaries(words, words, max_size=3),
)
def test_property_yes_only_from_a_rule_that_covers_the_task_and_the_caller(
    tasktypes: list[str], asked: str, groups: list[str], needed: list[str], info: dict[str, str]
) -> None:
    config = {"rules": [yes_rule("r", *tasktypes, identity={"groups_any": needed})]}
    answer, why = decide(config, asked, Identity("u", {"groups": groups}), **info)
    covered = asked in tasktypes
    allowed = not needed or bool(set(needed) & set(groups))
    assert answer.accepted == (covered and allowed)
    assert answer.httpcode == (403 if covered and not allowed else None)
    assert (why.decided_by == "r") == covered


def test_the_rule_engine_and_answer_shapes_do_no_io() -> None:
    """rules.py and answers.py import nothing that can touch the network or an event loop."""
    import ast

    import broadgauge.planner.answers as answers_module
    import broadgauge.planner.rules as rules_module

    forbidden = {"asyncio", "socket", "httpx", "starlette", "uvicorn", "jwt", "sqlite3", "os"}
    for module in (answers_module, rules_module):
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & forbidden, (module.__name__, imported & forbidden)
