"""The config's template language: parsing, lookup and the three renderings."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.errors import TemplateError
from schemas.templates import lookup, parse, render_json, render_text, render_url, templates_in

CONTEXT: dict[str, Any] = {
    "event": {"id": "evt-1", "type": "ticket.created"},
    "data": {
        "customer": {"id": 42, "name": "Ada Lovelace"},
        "items": [{"sku": "A-1"}, {"sku": "B-2"}],
        "note": None,
        "vip": True,
        "score": 0.5,
        "tags": ["x", "y"],
        "path": "a/b?c=1#frag",
    },
}


# --- parse --------------------------------------------------------------------------------


def test_parse_splits_literals_and_paths() -> None:
    template = parse("Hello {{ data.customer.name }}, order {{data.items.0.sku}}!")
    assert template.literals == ("Hello ", ", order ", "!")
    assert template.paths == (("data", "customer", "name"), ("data", "items", "0", "sku"))
    assert template.roots == {"data"}
    assert not template.is_single_placeholder


def test_parse_plain_text_has_no_paths() -> None:
    template = parse("no placeholders here")
    assert template.paths == ()
    assert template.literals == ("no placeholders here",)


def test_single_placeholder_is_recognised_only_without_surrounding_text() -> None:
    assert parse("{{ data.customer }}").is_single_placeholder
    assert not parse(" {{ data.customer }}").is_single_placeholder
    assert not parse("{{ data.a }}{{ data.b }}").is_single_placeholder


@pytest.mark.parametrize(
    "placeholder",
    [
        "{{ data.customer.id + 1 }}",
        "{{ data['x'] }}",
        "{{ }}",
        "{{ data..id }}",
        "{{ data.id() }}",
        "{{ 1data }}",
        "{{ data.x upper }}",
    ],
)
def test_parse_refuses_anything_but_a_dotted_path(placeholder: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(f"text {placeholder} text")
    message = str(info.value)
    assert repr(placeholder) in message
    assert "dotted field path" in message


@pytest.mark.parametrize(
    "source",
    [
        "Hello {{ data.customer.id",
        "{{ data.a }} and {{ data.b",
    ],
)
def test_parse_refuses_an_unclosed_placeholder(source: str) -> None:
    with pytest.raises(TemplateError, match="unclosed"):
        parse(source)


@pytest.mark.parametrize(
    "source",
    [
        'Answer like {"a": {"b": 1}} about {{ data.a }}',
        "{{ data.a }} trailing }}",
    ],
)
def test_closing_braces_alone_are_text_so_json_examples_fit_in_prompts(source: str) -> None:
    template = parse(source)
    assert render_text(template, {"data": {"a": "X"}}) == source.replace("{{ data.a }}", "X")


def test_templates_in_finds_every_string_of_a_json_body() -> None:
    body = {"a": "{{ data.x }}", "b": [1, "{{ result.y }} z", {"c": "plain"}], "d": None}
    found = templates_in(body)
    assert sorted(t.source for t in found) == ["plain", "{{ data.x }}", "{{ result.y }} z"]


def test_templates_in_reports_a_bad_placeholder_deep_in_the_body() -> None:
    with pytest.raises(TemplateError):
        templates_in({"outer": [{"inner": "{{ not valid }}"}]})


# --- lookup -------------------------------------------------------------------------------


def test_lookup_follows_dicts_and_list_indices() -> None:
    assert lookup(CONTEXT, ("data", "customer", "id")) == 42
    assert lookup(CONTEXT, ("data", "items", "1", "sku")) == "B-2"
    assert lookup(CONTEXT, ("data", "tags")) == ["x", "y"]


def test_lookup_returns_none_for_a_present_null_field() -> None:
    assert lookup(CONTEXT, ("data", "note")) is None


@pytest.mark.parametrize(
    ("path", "missing"),
    [
        (("data", "customer", "email"), "data.customer.email"),
        (("data", "items", "5", "sku"), "data.items.5"),
        (("data", "items", "first"), "data.items.first"),
        (("data", "items", "-1"), "data.items.-1"),
        (("data", "customer", "name", "first"), "data.customer.name.first"),
        (("result",), "result"),
    ],
)
def test_lookup_of_a_missing_field_names_the_first_missing_step(
    path: tuple[str, ...], missing: str
) -> None:
    with pytest.raises(TemplateError) as info:
        lookup(CONTEXT, path)
    message = str(info.value)
    assert f"no field {missing!r}" in message
    assert f"template path {'.'.join(path)}" in message


# --- render_text --------------------------------------------------------------------------


def test_render_text_substitutes_scalars() -> None:
    template = parse("{{ data.customer.name }} (#{{ data.customer.id }}) vip={{ data.vip }}")
    assert render_text(template, CONTEXT) == "Ada Lovelace (#42) vip=true"


def test_render_text_renders_none_as_empty_and_floats_as_numbers() -> None:
    assert render_text(parse("[{{ data.note }}]"), CONTEXT) == "[]"
    assert render_text(parse("{{ data.score }}"), CONTEXT) == "0.5"


def test_render_text_renders_objects_and_lists_as_json() -> None:
    assert render_text(parse("c={{ data.customer }}"), CONTEXT) == (
        'c={"id":42,"name":"Ada Lovelace"}'
    )
    assert render_text(parse("{{ data.tags }}"), CONTEXT) == '["x","y"]'


def test_render_text_raises_on_a_missing_field() -> None:
    with pytest.raises(TemplateError, match=r"'data\.missing'"):
        render_text(parse("x {{ data.missing }}"), CONTEXT)


# --- render_url ---------------------------------------------------------------------------


def test_render_url_percent_encodes_values_so_they_cannot_change_the_path() -> None:
    url = render_url(parse("http://crm.local/customers/{{ data.path }}/notes"), CONTEXT)
    assert url == "http://crm.local/customers/a%2Fb%3Fc%3D1%23frag/notes"


def test_render_url_keeps_literal_text_and_encodes_spaces() -> None:
    url = render_url(parse("http://crm.local/c/{{ data.customer.name }}?v=1"), CONTEXT)
    assert url == "http://crm.local/c/Ada%20Lovelace?v=1"


def test_render_url_with_a_number() -> None:
    assert render_url(parse("/c/{{ data.customer.id }}"), CONTEXT) == "/c/42"


# --- render_json --------------------------------------------------------------------------


def test_render_json_single_placeholder_keeps_the_value_type() -> None:
    body = {
        "id": "{{ data.customer.id }}",
        "vip": "{{data.vip}}",
        "customer": "{{ data.customer }}",
        "note": "{{ data.note }}",
        "tags": "{{ data.tags }}",
    }
    assert render_json(body, CONTEXT) == {
        "id": 42,
        "vip": True,
        "customer": {"id": 42, "name": "Ada Lovelace"},
        "note": None,
        "tags": ["x", "y"],
    }


def test_render_json_mixed_strings_are_text_rendered() -> None:
    body = {"label": "customer {{ data.customer.id }}", "both": "{{ data.vip }}{{ data.score }}"}
    assert render_json(body, CONTEXT) == {"label": "customer 42", "both": "true0.5"}


def test_render_json_walks_lists_and_leaves_keys_and_non_strings_alone() -> None:
    body = {"{{ data.customer.id }}": ["{{ event.type }}", 7, None, False, {"n": 1.5}]}
    assert render_json(body, CONTEXT) == {
        "{{ data.customer.id }}": ["ticket.created", 7, None, False, {"n": 1.5}]
    }


def test_render_json_raises_on_a_missing_field() -> None:
    with pytest.raises(TemplateError, match=r"'data\.nope'"):
        render_json({"a": ["{{ data.nope }}"]}, CONTEXT)


# --- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ data.ticket_id | default("n/a") }}', "n/a"),  # missing
        ("{{ data.note | default('none') }}", "none"),  # null
        ('{{ data.customer.name | default("n/a") }}', "Ada Lovelace"),  # there: unchanged
        ('{{ data.vip | default("n/a") }}', "true"),
        ('{{ data.ticket_id | default("a|b}") }}', "a|b}"),  # | and } inside the argument
        ("{{ data.customer.name | upper }}", "ADA LOVELACE"),
        ("{{ data.customer.name | lower }}", "ada lovelace"),
        ("{{ data.customer.name | truncate(3) }}", "Ada"),
        ("{{ data.customer.name | truncate(100) }}", "Ada Lovelace"),
        ("{{ data.customer.id | truncate(1) }}", "4"),  # a number's text
        ("{{ data.customer | json }}", '{"id":42,"name":"Ada Lovelace"}'),
        ("{{ data.customer.name | json }}", '"Ada Lovelace"'),
        ("{{ data.note | json }}", "null"),
        ("{{data.ticket_id|default('Open ticket')|upper|truncate(4)}}", "OPEN"),  # a chain
        ("{{ data.note | upper }}", ""),  # null's text is empty
    ],
)
def test_filters_render(source: str, expected: str) -> None:
    assert render_text(parse(source), CONTEXT) == expected


def test_a_filter_after_a_missing_field_without_default_first_raises() -> None:
    with pytest.raises(TemplateError, match=r"data\.ticket_id"):
        render_text(parse("{{ data.ticket_id | upper }}"), CONTEXT)
    with pytest.raises(TemplateError, match=r"data\.ticket_id"):
        render_text(parse('{{ data.ticket_id | upper | default("x") }}'), CONTEXT)


def test_render_json_keeps_the_type_of_a_filtered_single_placeholder() -> None:
    body = {
        "n": "{{ data.count | default(0) }}",
        "flag": "{{ data.flag | default(false) }}",
        "none": "{{ data.other | default(null) }}",
        "name": "{{ data.customer.name | upper }}",
        "raw": "{{ data.customer | json }}",
    }
    assert render_json(body, CONTEXT) == {
        "n": 0,
        "flag": False,
        "none": None,
        "name": "ADA LOVELACE",
        "raw": '{"id":42,"name":"Ada Lovelace"}',
    }


def test_render_url_encodes_a_filtered_value() -> None:
    template = parse("http://crm/{{ data.path | upper }}/{{ data.x | default('a b') }}")
    assert render_url(template, CONTEXT) == "http://crm/A%2FB%3FC%3D1%23FRAG/a%20b"


@pytest.mark.parametrize(
    ("placeholder", "reason"),
    [
        ("{{ data.x | uper }}", "unknown filter 'uper'; known filters: default, json, lower, "),
        ("{{ data.x | default }}", "filter default needs an argument"),
        ("{{ data.x | default() }}", "filter default needs an argument"),
        ("{{ data.x | upper(2) }}", "filter upper takes no argument"),
        ("{{ data.x | truncate(0) }}", "truncate takes a whole number of characters >= 1"),
        ("{{ data.x | truncate(2.5) }}", "truncate takes a whole number"),
        ('{{ data.x | truncate("3") }}', "truncate takes a whole number"),
        ("{{ data.x | default(n/a) }}", "its argument must be one JSON literal"),
        ("{{ data.x | }}", "expected '| filter'"),
        ("{{ data.x || upper }}", "expected '| filter'"),
    ],
)
def test_filter_errors_name_the_placeholder(placeholder: str, reason: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse(f"text {placeholder} text")
    assert repr(placeholder) in str(info.value)
    assert reason in str(info.value)
