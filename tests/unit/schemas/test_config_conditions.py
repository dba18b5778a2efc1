"""match.where, a sink's when and template filters in a config file: accepted and evaluated
when right; refused at load with ``file:LINE: field.path: reason`` when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config_checks import _when_problems
from schemas.config_loader import load_config
from schemas.config_sinks import SlackSinkConfig
from schemas.errors import ConfigError

ENV = {"HELPDESK_SECRET": "hd-secret-abc", "AI_KEY": "ai-key-xyz", "SLACK_URL": "http://s/x"}

# Line numbers below refer to this text (line 1 is "version: 1").
BASE = """\
version: 1
sources:
  - name: helpdesk
    signature: {scheme: none}
    partition_key: customer_id
providers:
  - name: default
    base_url: http://127.0.0.1:8091/v1
    api_key_env: AI_KEY
    model: sim-1
flows:
  - name: triage
    match:
      source: helpdesk
      where:
        all:
          - {field: data.amount, gt: 100}
          - {field: data.currency, in: [EUR, USD]}
    ai:
      provider: default
      prompt: "{{ data.message | default('(no message)') | truncate(2000) }}"
      output:
        type: object
        properties:
          sentiment: {type: string, enum: [positive, neutral, negative]}
          summary: {type: string}
    sinks:
      - name: slack
        kind: slack
        webhook_url_env: SLACK_URL
        when:
          any:
            - {field: result.sentiment, equals: negative}
            - not: {field: data.vip, exists: false}
        text: "{{ data.ticket_id | default(\\"n/a\\") }}: {{ result.summary | upper }}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flows.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    return [p.replace(str(path), "FILE") for p in info.value.problems]


def test_where_when_and_filters_load_and_evaluate(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), env=ENV)
    flow = config.flow("triage")
    assert flow.match.where_holds({"data": {"amount": 120, "currency": "EUR"}})
    assert not flow.match.where_holds({"data": {"amount": 120, "currency": "GBP"}})
    assert not flow.match.where_holds({"data": {"amount": "120", "currency": "EUR"}})
    assert not flow.match.where_holds({"data": {}})
    [slack] = flow.sinks
    assert isinstance(slack, SlackSinkConfig)
    assert slack.when_holds({"result": {"sentiment": "negative"}, "data": {}})
    assert slack.when_holds({"result": {"sentiment": "positive"}, "data": {"vip": True}})
    assert not slack.when_holds({"result": {"sentiment": "positive"}, "data": {}})


def test_a_flow_without_where_takes_every_event_of_its_types(tmp_path: Path) -> None:
    text = BASE.replace(
        "      where:\n        all:\n          - {field: data.amount, gt: 100}\n"
        "          - {field: data.currency, in: [EUR, USD]}\n",
        "",
    )
    flow = load_config(write(tmp_path, text), env=ENV).flow("triage")
    assert not flow.match.has_where
    assert flow.match.where_holds({"data": {}})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (  # an unknown operator: its line, the known ones
            "{field: data.amount, gt: 100}",
            "{field: data.amount, gte: 100}",
            "FILE:17: flows[0].match.where.all[0].gte: unknown operator 'gte' (did you mean "
            "'gt'?); expected one of: equals, in, exists, lt, le, gt, ge, matches (beside "
            "field), or all, any, not",
        ),
        (
            "{field: data.currency, in: [EUR, USD]}",
            "{field: data.c, matches: '(['}",
            "FILE:18: flows[0].match.where.all[1].matches: bad regular expression '([': "
            "unterminated character set at position 1",
        ),
        (
            "gt: 100}",
            "gt: [100]}",
            "FILE:17: flows[0].match.where.all[0].gt: gt compares with a number or a string, "
            "got [100] (write it in quotes)",
        ),
        (  # where runs before the model: no result to read
            "{field: data.amount, gt: 100}",
            "{field: result.amount, gt: 100}",
            "FILE:17: flows[0].match.where.all[0].field: field 'result.amount' starts with "
            "'result'; it may use ['data', 'event']",
        ),
        (  # a when reading a result field the output schema lacks
            "{field: result.sentiment, equals",
            "{field: result.sentimnet, equals",
            "FILE:33: flows[0].sinks[0].when.any[0].field: result.sentimnet: the flow's "
            "ai.output declares no field 'sentimnet'; did you mean 'sentiment'?",
        ),
        (  # a value the output schema's enum does not allow: never true
            "{field: result.sentiment, equals: negative}",
            "{field: result.sentiment, in: [negative, negatve]}",
            "FILE:33: flows[0].sinks[0].when.any[0].in: result.sentiment: 'negatve' is not one "
            "of the values the flow's ai.output allows ('positive', 'neutral', 'negative')",
        ),
        (  # a comparison with a string field
            "{field: result.sentiment, equals: negative}",
            "{field: result.summary, gt: 3}",
            "FILE:33: flows[0].sinks[0].when.any[0].gt: result.summary: gt compares with 3, but "
            "the flow's ai.output makes it string: never true",
        ),
        (
            "not: {field: data.vip, exists: false}",
            "not: {field: data.vip}",
            "FILE:34: flows[0].sinks[0].when.any[1].not: needs an operator: one of equals, in, "
            "exists, lt, le, gt, ge, matches",
        ),
        (
            "result.summary | upper",
            "result.summary | capitalize",
            "FILE:35: flows[0].sinks[0].text: placeholder '{{ result.summary | capitalize }}': "
            "unknown filter 'capitalize'; known filters: default, json, lower, truncate, upper",
        ),
        (
            "truncate(2000)",
            "truncate('long')",
            "FILE:21: flows[0].ai.prompt: placeholder \"{{ data.message | default('(no "
            "message)') | truncate('long') }}\": truncate takes a whole number of characters "
            ">= 1, got 'long'",
        ),
    ],
)
def test_load_errors_name_file_line_and_place(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    assert old in BASE
    assert problems_of(tmp_path, BASE.replace(old, new)) == [expected]


def test_when_values_are_judged_only_where_the_schema_declares_them_plainly() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/s"},
            "b": {"type": ["string", "null"]},
            "n": {"type": "integer"},
            "c": {"const": "x"},
        },
        "$defs": {"s": {"enum": ["x"]}},
    }

    def problems(test: dict[str, object]) -> list[tuple[tuple[str | int, ...], str]]:
        return _when_problems(schema, {}, test, ("when",))

    assert problems({"field": "result.a", "equals": "y"}) == []  # behind a $ref: not judged
    assert problems({"field": "result.b", "matches": "^a"}) == []
    assert problems({"field": "result.n", "ge": 1.5}) == []
    assert problems({"field": "result.c", "equals": "x"}) == []
    assert problems({"field": "result.c", "equals": "y"}) == [
        (
            ("when", "equals"),
            "result.c: 'y' is not one of the values the flow's ai.output allows ('x')",
        )
    ]
    assert problems({"field": "result.n", "matches": "1"}) == [
        (
            ("when", "matches"),
            "result.n: matches reads strings, but the flow's ai.output "
            "makes it integer: never true",
        )
    ]
