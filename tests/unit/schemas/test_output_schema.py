"""A flow's ``ai.output`` at config load: a valid JSON Schema (draft 2020-12), and sink templates
reading ``result.<field>`` checked against it, each problem as ``file:LINE: field.path: reason``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.config_ai import AITaskConfig
from schemas.config_loader import load_config
from schemas.errors import ConfigError
from schemas.output_schema import result_field_problem, schema_problems

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
    model: sim-1
flows:
  - name: triage
    match: {source: helpdesk}
    ai:
      provider: default
      prompt: "{{ data.message }}"
      output:
        type: object
        properties:
          category: {type: string, enum: [billing, bug, other]}
          score: {type: number, minimum: 0, maximum: 10}
          customer:
            type: object
            properties:
              name: {type: string}
          tags: {type: array, items: {type: string}}
        required: [category]
    sinks:
      - name: crm
        url: "http://127.0.0.1:8092/tickets/{{ data.customer_id }}"
        allow_private: true
        body:
          category: "{{ result.category }}"
          who: "{{ result.customer.name }}"
          first_tag: "{{ result.tags.0 }}"
      - name: slack
        kind: slack
        webhook_url_env: SLACK_URL
        text: "{{ result.category }}: {{ data.message }}"
"""
ENV = {"SLACK_URL": "https://hooks.slack.example/T/B/x"}


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "flows.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=ENV)
    return [p.replace(f"{path}:", "LINE ") for p in info.value.problems]


def test_the_base_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "flows.yaml"
    path.write_text(BASE, encoding="utf-8")
    ai = load_config(path, env=ENV).flows[0].ai
    assert ai is not None
    assert ai.output["required"] == ["category"]


# --- the schema itself ----------------------------------------------------------------------


def test_a_bad_keyword_value_is_named_with_its_line(tmp_path: Path) -> None:
    text = BASE.replace("maximum: 10}", 'maximum: "ten"}')
    assert problems_of(tmp_path, text) == [
        "LINE 20: flows[0].ai.output.properties.score.maximum: not valid JSON Schema "
        "(draft 2020-12): 'ten' is not of type 'number'"
    ]


def test_every_bad_keyword_is_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("maximum: 10}", 'maximum: "ten"}').replace(
        "items: {type: string}", 'items: {type: string, pattern: "(["}'
    )
    assert problems_of(tmp_path, text) == [
        "LINE 20: flows[0].ai.output.properties.score.maximum: not valid JSON Schema "
        "(draft 2020-12): 'ten' is not of type 'number'",
        "LINE 25: flows[0].ai.output.properties.tags.items.pattern: '([' is not a valid "
        "regular expression",
    ]


def test_a_misspelt_keyword_is_refused(tmp_path: Path) -> None:
    # JSON Schema ignores unknown keys: "maximun" would silently switch the bound off.
    text = BASE.replace("maximum: 10}", "maximun: 10}")
    assert problems_of(tmp_path, text) == [
        "LINE 20: flows[0].ai.output.properties.score.maximun: unknown keyword 'maximun'; "
        "did you mean 'maximum'? (JSON Schema would ignore it, and its check with it)"
    ]


def test_annotations_and_extension_keys_are_allowed() -> None:
    schema = {
        "type": "object",
        "title": "Triage",
        "properties": {"score": {"type": "number", "example": 3, "x-unit": "points"}},
    }
    assert schema_problems(schema) == []


def test_a_ref_that_leads_nowhere_is_refused(tmp_path: Path) -> None:
    text = BASE.replace(
        "          tags: {type: array, items: {type: string}}\n",
        "          tags: {$ref: '#/$defs/tags'}\n",
    )
    assert problems_of(tmp_path, text) == [
        "LINE 25: flows[0].ai.output.properties.tags.$ref: $ref '#/$defs/tags' leads "
        "nowhere in this schema"
    ]


def test_the_model_refuses_a_bad_schema_without_the_loader_too() -> None:
    with pytest.raises(ValidationError) as info:
        AITaskConfig.model_validate(
            {
                "provider": "p",
                "prompt": "x",
                "output": {
                    "type": "object",
                    "properties": {"n": {"type": "integer", "minimum": "0"}},
                },
            }
        )
    [error] = info.value.errors()
    assert error["loc"] == ("output", "properties", "n", "minimum")


# --- templates reading result.<field> --------------------------------------------------------


def test_a_misspelt_result_field_names_the_nearest(tmp_path: Path) -> None:
    text = BASE.replace('text: "{{ result.category }}', 'text: "{{ result.categroy }}')
    assert problems_of(tmp_path, text) == [
        "LINE 38: flows[0].sinks[1].text: {{ result.categroy }}: the flow's ai.output declares "
        "no field 'categroy'; did you mean 'category'?"
    ]


def test_a_misspelt_nested_result_field_in_a_body(tmp_path: Path) -> None:
    text = BASE.replace("result.customer.name", "result.customer.nmae")
    assert problems_of(tmp_path, text) == [
        "LINE 33: flows[0].sinks[0].body.who: {{ result.customer.nmae }}: the flow's ai.output "
        "declares no field 'nmae' in result.customer; did you mean 'name'?"
    ]


def test_a_field_below_a_scalar_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("result.tags.0", "result.score.value")
    assert problems_of(tmp_path, text) == [
        "LINE 34: flows[0].sinks[0].body.first_tag: {{ result.score.value }}: result.score "
        "is a number: it has no field 'value'"
    ]


def test_result_fields_are_not_checked_against_a_bad_schema(tmp_path: Path) -> None:
    # One problem, the schema's: the template check would only guess from a broken schema.
    text = BASE.replace("maximum: 10}", 'maximum: "ten"}').replace(
        "result.customer.name", "result.customer.nmae"
    )
    assert len(problems_of(tmp_path, text)) == 1


SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"person": {"type": "object", "properties": {"name": {"type": "string"}}}},
    "properties": {
        "owner": {"$ref": "#/$defs/person"},
        "either": {"anyOf": [{"$ref": "#/$defs/person"}, {"type": "null"}]},
        "pairs": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "object"}]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "free": {"type": "object"},
        "by_code": {"type": "object", "patternProperties": {"^[A-Z]{2}$": {"type": "integer"}}},
    },
}


@pytest.mark.parametrize(
    "path",
    [
        ("owner", "name"),
        ("either", "name"),
        ("pairs", "0"),
        ("pairs", "1", "anything"),
        ("labels", "any_key"),
        ("free", "what", "ever"),
        ("by_code", "FR"),
    ],
)
def test_paths_an_answer_may_have(path: tuple[str, ...]) -> None:
    assert result_field_problem(SCHEMA, path) is None


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (("owner", "nam"), "declares no field 'nam' in result.owner; did you mean 'name'?"),
        (("either", "nmae"), "declares no field 'nmae' in result.either; did you mean 'name'?"),
        (("pairs", "0", "x"), "result.pairs.0 is a string: it has no field 'x'"),
        (("labels", "k", "x"), "result.labels.k is a string: it has no field 'x'"),
        (("by_code", "fr"), "declares no field 'fr' in result.by_code"),
        (("nothing",), "declares no field 'nothing'; it has: by_code, either, free, labels,"),
    ],
)
def test_paths_no_answer_has(path: tuple[str, ...], reason: str) -> None:
    problem = result_field_problem(SCHEMA, path)
    assert problem is not None
    assert reason in problem
