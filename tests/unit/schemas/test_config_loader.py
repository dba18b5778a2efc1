"""The config file loader: every problem as ``file:LINE: field.path: reason``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from schemas import config_loader
from schemas.config import HookstreamConfig
from schemas.config_loader import format_location, load_config
from schemas.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flows.yaml"
EXAMPLE_ENV = {
    "HELPDESK_WEBHOOK_SECRET": "helpdesk-secret-value-1234",
    "PAYMENTS_WEBHOOK_SECRET": "payments-secret-value-5678",
    "AI_API_KEY": "sk-ai-key-value-9012",
}

# Line numbers below refer to this text (line 1 is "version: 1").
VALID = """\
version: 1
sources:
  - name: helpdesk
    signature:
      scheme: hmac-sha256
      secret_env: HELPDESK_SECRET
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
    ai:
      provider: default
      prompt: "{{ data.message }}"
      output:
        type: object
        properties:
          summary: {type: string}
      max_concurrency: 4
"""
VALID_ENV = {"HELPDESK_SECRET": "hd-secret-abc", "AI_KEY": "ai-key-xyz"}
# Every signature scheme, as a refusal lists them (sorted): the sender presets included.
SCHEMES = (
    "github, gitlab, hmac-sha256, hubspot, intercom, linear, none, paddle, shopify, slack, "
    "square, standard-webhooks, stripe, twilio, zendesk"
)


def write(tmp_path: Path, text: str, name: str = "flows.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, env: dict[str, str], **kwargs: bool) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env, **kwargs)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# --- valid files --------------------------------------------------------------------------


def test_valid_file_loads_with_secrets_from_the_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env=VALID_ENV)
    source = config.sources[0]
    assert source.name == "helpdesk"
    assert source.signature.secret is not None
    assert source.signature.secret.get_secret_value() == "hd-secret-abc"
    provider = config.provider("default")
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "ai-key-xyz"
    assert config.flow("triage").max_concurrency == 4
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"


def test_secrets_never_appear_in_repr_str_or_dump(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env=VALID_ENV)
    assert isinstance(config.sources[0].signature.secret, SecretStr)
    for text in (
        repr(config),
        str(config),
        repr(config.sources[0]),
        str(config.providers[0]),
        config.model_dump_json(),
        str(config.model_dump()),
    ):
        assert "hd-secret-abc" not in text
        assert "ai-key-xyz" not in text


def test_require_secrets_false_loads_without_the_variables(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env={}, require_secrets=False)
    assert config.sources[0].signature.secret is None
    assert config.providers[0].api_key is None


def test_example_flows_file_loads(tmp_path: Path) -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    assert [s.name for s in config.sources] == ["helpdesk", "payments"]
    assert [f.name for f in config.flows] == ["feedback-triage", "payment-followup"]
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.kafka.produce_timeout_s == 10.0
    payments = config.source("payments")
    assert payments is not None
    assert payments.signature.secret is not None
    assert payments.signature.secret.get_secret_value() == "payments-secret-value-5678"
    assert config.providers[0].base_url == "http://127.0.0.1:8091/v1"
    assert config.flow("feedback-triage").enrich[0].url == (
        "http://127.0.0.1:8092/customers/{{ data.customer_id }}"
    )
    assert [f.name for f in config.flows_for("helpdesk", "ticket.created")] == ["feedback-triage"]
    assert config.flows_for("helpdesk", "payment.failed") == []
    for secret in EXAMPLE_ENV.values():
        assert secret not in repr(config)
        assert secret not in str(config)


def test_example_flows_file_names_each_missing_secret() -> None:
    env = {k: v for k, v in EXAMPLE_ENV.items() if k != "PAYMENTS_WEBHOOK_SECRET"}
    problems = problems_of(EXAMPLE, env)
    assert problems == [
        f"{EXAMPLE}:34: sources[1].signature.secret_env: "
        "environment variable PAYMENTS_WEBHOOK_SECRET is not set"
    ]


# --- environment interpolation ------------------------------------------------------------


def test_env_default_is_used_when_the_variable_is_unset(tmp_path: Path) -> None:
    text = "kafka:\n  topic_prefix: ${PREFIX:-fallback}\n" + VALID.removeprefix("version: 1\n")
    assert load_config(write(tmp_path, text), env=VALID_ENV).kafka.topic_prefix == "fallback"
    env = {**VALID_ENV, "PREFIX": "staging"}
    assert load_config(write(tmp_path, text), env=env).kafka.topic_prefix == "staging"


def test_env_interpolation_inside_a_longer_string(tmp_path: Path) -> None:
    text = VALID.replace(
        "http://127.0.0.1:8091/v1", "http://${AI_HOST}:${AI_PORT:-8091}/${AI_PATH:-v1}"
    )
    env = {**VALID_ENV, "AI_HOST": "ai.internal", "AI_PATH": "v2"}
    config = load_config(write(tmp_path, text), env=env)
    assert config.providers[0].base_url == "http://ai.internal:8091/v2"


def test_env_variable_without_default_must_be_set(tmp_path: Path) -> None:
    text = VALID.replace("model: sim-1", "model: ${AI_MODEL}")
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:12: providers[0].model: "
        "environment variable AI_MODEL is not set and has no default"
    ]


def test_kafka_bootstrap_env_overrides_the_file(tmp_path: Path) -> None:
    text = "kafka:\n  bootstrap_servers: file-broker:9092\n" + VALID.removeprefix("version: 1\n")
    path = write(tmp_path, text)
    assert load_config(path, env=VALID_ENV).kafka.bootstrap_servers == "file-broker:9092"
    env = {**VALID_ENV, "KAFKA_BOOTSTRAP_SERVERS": "env-broker:29092"}
    assert load_config(path, env=env).kafka.bootstrap_servers == "env-broker:29092"


def test_kafka_bootstrap_env_applies_without_a_kafka_section(tmp_path: Path) -> None:
    env = {**VALID_ENV, "KAFKA_BOOTSTRAP_SERVERS": "env-broker:29092"}
    config = load_config(write(tmp_path, VALID), env=env)
    assert config.kafka.bootstrap_servers == "env-broker:29092"


# --- field problems, with line numbers ----------------------------------------------------


def test_max_concurrency_zero_names_the_field_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("max_concurrency: 4", "max_concurrency: 0"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:24: flows[0].ai.max_concurrency: must be at least 1, got 0"
    ]


def test_unknown_provider_reference(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("provider: default", "provider: gpt"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:18: flows[0].ai.provider: unknown provider 'gpt'; expected one of: default"
    ]


def test_unknown_source_reference(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("source: helpdesk", "source: billing"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:16: flows[0].match.source: unknown source 'billing'; expected one of: helpdesk"
    ]


def test_missing_secret_env_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert problems_of(path, {"AI_KEY": "k"}) == [
        f"{path}:6: sources[0].signature.secret_env: "
        "environment variable HELPDESK_SECRET is not set"
    ]


def test_empty_secret_variable_counts_as_unset(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    assert problems_of(path, {**VALID_ENV, "AI_KEY": ""}) == [
        f"{path}:11: providers[0].api_key_env: environment variable AI_KEY is not set"
    ]


def test_inline_secret_is_refused_even_when_the_variable_is_set(tmp_path: Path) -> None:
    text = VALID.replace(
        "      secret_env: HELPDESK_SECRET\n",
        "      secret_env: HELPDESK_SECRET\n      secret: hunter2-inline\n",
    )
    path = write(tmp_path, text)
    problems = problems_of(path, VALID_ENV)
    assert problems == [
        f"{path}:7: sources[0].signature.secret: secrets are not written in the file: "
        "put it in an environment variable or a file and give its name in secret_env or "
        "secret_file"
    ]
    assert "hunter2-inline" not in "\n".join(problems)


def test_inline_api_key_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("    api_key_env: AI_KEY\n", "    api_key: sk-inline-key\n")
    path = write(tmp_path, text)
    problems = problems_of(path, VALID_ENV)
    assert problems == [
        f"{path}:11: providers[0].api_key: secrets are not written in the file: "
        "put it in an environment variable or a file and give its name in api_key_env or "
        "api_key_file"
    ]
    assert "sk-inline-key" not in "\n".join(problems)


def test_template_with_unknown_root_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("{{ data.message }}", "{{ foo.bar }}"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:19: flows[0].ai.prompt: template refers to ['foo']; "
        "it may use ['data', 'enrichment', 'event']"
    ]


def test_malformed_placeholder_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("{{ data.message }}", "{{ data.message | uper }}"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:19: flows[0].ai.prompt: placeholder '{{{{ data.message | uper }}}}': unknown "
        "filter 'uper'; known filters: default, json, lower, truncate, upper"
    ]


def test_sink_may_use_result_but_a_lookup_may_not(tmp_path: Path) -> None:
    text = VALID + (
        "    enrich:\n"
        "      - name: customer\n"
        "        url: http://crm/{{ result.id }}\n"
        "    sinks:\n"
        "      - name: crm\n"
        "        url: http://crm/{{ data.customer_id }}/{{ enrichment.customer.id }}\n"
        '        body: {sentiment: "{{ result.summary }}", n: ["{{ ai.model }}"]}\n'
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:27: flows[0].enrich[0].url: template refers to ['result']; "
        "it may use ['data', 'event']"
    ]


def test_sink_body_template_with_unknown_root_is_refused(tmp_path: Path) -> None:
    text = VALID + (
        "    sinks:\n"
        "      - name: crm\n"
        "        url: http://crm/x\n"
        '        body: {ok: "{{ result.summary }}", leak: ["{{ env.HOME }}"]}\n'
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:28: flows[0].sinks[0].body: template refers to ['env']; "
        "it may use ['ai', 'data', 'enrichment', 'event', 'result', 'steps']"
    ]


def test_output_schema_must_be_type_object(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("type: object", "type: array"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:21: flows[0].ai.output.type: the top level must be type: object (the answer "
        "is a mapping), got 'array'"
    ]


def test_output_property_type_must_be_a_json_type(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("summary: {type: string}", "summary: {type: text}"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:23: flows[0].ai.output.properties.summary.type: unknown JSON type 'text'; "
        "expected one of: array, boolean, integer, null, number, object, string"
    ]


def test_output_required_must_name_known_properties(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        VALID.replace(
            "          summary: {type: string}\n",
            "          summary: {type: string}\n        required: [summary, sumary]\n",
        ),
    )
    assert problems_of(path, VALID_ENV) == [
        f"{path}:24: flows[0].ai.output.required[1]: 'sumary' is required but not among the "
        "properties; did you mean 'summary'?"
    ]


def test_duplicate_source_names_are_refused(tmp_path: Path) -> None:
    text = VALID.replace(
        "providers:\n",
        "  - name: helpdesk\n    signature: {scheme: none}\nproviders:\n",
    )
    path = write(tmp_path, text)
    problems = problems_of(path, VALID_ENV)
    assert len(problems) == 1
    lines = text.splitlines()
    line = lines.index("  - name: helpdesk", lines.index("  - name: helpdesk") + 1) + 1
    assert problems[0] == (
        f"{path}:{line}: sources[1].name: 'helpdesk' is already the name of sources[0]"
    )


def test_duplicate_flow_names_are_refused(tmp_path: Path) -> None:
    flow = VALID[VALID.index("  - name: triage") :]
    path = write(tmp_path, VALID + flow)
    problems = problems_of(path, VALID_ENV)
    assert len(problems) == 1
    assert problems[0].endswith("flows[1].name: 'triage' is already the name of flows[0]")


def test_duplicate_names_are_reported_alongside_field_problems(tmp_path: Path) -> None:
    text = VALID.replace(
        "providers:\n",
        "  - name: helpdesk\n    signature: {scheme: none}\nproviders:\n",
    ).replace("max_concurrency: 4", "max_concurrency: 0")
    path = write(tmp_path, text)
    problems = problems_of(path, VALID_ENV)
    assert len(problems) == 2
    assert any(
        p.endswith("sources[1].name: 'helpdesk' is already the name of sources[0]")
        for p in problems
    )
    assert problems[-1] == (f"{path}:26: flows[0].ai.max_concurrency: must be at least 1, got 0")


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("    model: sim-1\n", "    model: sim-1\n    modle: x\n"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:13: providers[0]: unknown field 'modle'; did you mean 'model'?"
    ]


def test_forwarded_headers_may_not_carry_credentials(tmp_path: Path) -> None:
    text = "gateway:\n  forwarded_headers: [user-agent, X-Signature]\n" + VALID
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:2: gateway.forwarded_headers: "
        "headers ['x-signature'] may carry credentials and are never forwarded"
    ]


def test_several_problems_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        VALID.replace("max_concurrency: 4", "max_concurrency: 0")
        .replace("base_url: http://127.0.0.1:8091/v1", "base_url: ftp://nope")
        .replace("scheme: hmac-sha256", "scheme: rot13")
        .replace("{{ data.message }}", "{{ foo.bar }}")
    )
    path = write(tmp_path, text)
    problems = problems_of(path, {"AI_KEY": "k"})
    assert problems == [
        f"{path}:5: sources[0].signature.scheme: unknown signature scheme 'rot13'; "
        f"expected one of: {SCHEMES}",
        f"{path}:6: sources[0].signature.secret_env: "
        "environment variable HELPDESK_SECRET is not set",
        f"{path}:10: providers[0].base_url: must start with http:// or https://, got 'ftp://nope'",
        f"{path}:19: flows[0].ai.prompt: template refers to ['foo']; "
        "it may use ['data', 'enrichment', 'event']",
        f"{path}:24: flows[0].ai.max_concurrency: must be at least 1, got 0",
    ]


def test_reference_problems_are_reported_alongside_field_problems(tmp_path: Path) -> None:
    # Cross-references are checked on the raw data, so an unknown provider is reported in the
    # same run as a field error, not only after the field error is fixed.
    text = VALID.replace("max_concurrency: 4", "max_concurrency: 0").replace(
        "provider: default", "provider: gpt"
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:18: flows[0].ai.provider: unknown provider 'gpt'; expected one of: default",
        f"{path}:24: flows[0].ai.max_concurrency: must be at least 1, got 0",
    ]


# --- file-level problems ------------------------------------------------------------------


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "sources:\n  - name: x\n   bad: [\n")
    problems = problems_of(path, {})
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:3:4: invalid YAML: ")


def test_unclosed_flow_sequence_gives_its_position(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nsources: [\n")
    problems = problems_of(path, {})
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:3:1: invalid YAML: ")


def test_yaml_errors_keep_the_pure_python_parsers_wording(tmp_path: Path) -> None:
    # libyaml reads valid files; a broken one is explained by PyYAML's own parser, which
    # names the alias (libyaml says only "found undefined alias").
    path = write(tmp_path, "version: 1\nsources: *nodes\n")
    assert problems_of(path, {}) == [f"{path}:2:10: invalid YAML: found undefined alias 'nodes'"]


def test_the_config_is_parsed_by_libyaml_when_pyyaml_has_it() -> None:
    assert yaml.__with_libyaml__  # the wheels PyYAML ships are built with it
    assert config_loader._FAST_LOADER is yaml.CSafeLoader


def test_anchors_tags_and_line_numbers_with_the_fast_parser(tmp_path: Path) -> None:
    text = VALID.replace("partition_key: customer_id", "partition_key: &key customer_id")
    text += "      max_attempts: !!int '0'\n"
    text = text.replace("provider: default\n", "provider: default\n      system: *key\n")
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:26: flows[0].ai.max_attempts: must be at least 1, got 0"
    ]
    path = write(tmp_path, text.replace("!!int '0'", "2"))
    config = load_config(path, env=VALID_ENV)
    ai = config.flows[0].ai
    assert ai is not None
    assert ai.system == "customer_id"
    assert ai.max_attempts == 2


def test_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- just\n- a list\n")
    assert problems_of(path, {}) == [
        f"{path}:1: (top level): the file must be a YAML mapping with sources, providers and flows"
    ]


def test_missing_sources_section(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n")
    assert problems_of(path, {}) == [f"{path}:1: (top level): missing required field 'sources'"]


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert problems_of(path, {}) == [
        f"{path}: cannot read the config file: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("location", "text"),
    [
        ((), "(top level)"),
        (("kafka",), "kafka"),
        (("flows", 0, "ai", "max_concurrency"), "flows[0].ai.max_concurrency"),
        (("sources", 2), "sources[2]"),
    ],
)
def test_format_location(location: tuple[str | int, ...], text: str) -> None:
    assert format_location(location) == text


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID), env=VALID_ENV)
    assert isinstance(config, HookstreamConfig)
    with pytest.raises(ValueError, match="frozen"):
        config.kafka.partitions = 3


# --- messages in the file's terms (allowed values, nearest field, what was read) ----------


def with_sink(*lines: str) -> str:
    """VALID with one sink; its first line is line 26, the next ones 27, 28, ..."""
    return VALID + "    sinks:\n      - " + "\n        ".join(lines) + "\n"


def test_unknown_sink_kind_lists_the_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, with_sink("name: crm", "kind: webhook", "url: http://crm/x"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:26: flows[0].sinks[0]: unknown sink kind 'webhook'; "
        "expected one of: http, postgres, slack"
    ]


def test_misspelt_sink_kind_suggests_the_nearest(tmp_path: Path) -> None:
    path = write(tmp_path, with_sink("name: crm", "kind: postgress", "url: http://crm/x"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:26: flows[0].sinks[0]: unknown sink kind 'postgress'; "
        "expected one of: http, postgres, slack (did you mean 'postgres'?)"
    ]


def test_unknown_provider_kind_lists_the_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("    model: sim-1\n", "    model: sim-1\n    kind: gpt\n"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:13: providers[0].kind: unknown provider kind 'gpt'; "
        "expected one of: anthropic, openai"
    ]


def test_signature_scheme_in_the_wrong_case_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("scheme: hmac-sha256", "scheme: GitHub"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:5: sources[0].signature.scheme: unknown signature scheme 'GitHub'; "
        f"expected one of: {SCHEMES} (did you mean 'github'?)"
    ]


def test_literal_values_are_listed_for_any_field(tmp_path: Path) -> None:
    text = VALID.replace(
        "      secret_env: HELPDESK_SECRET\n",
        "      secret_env: HELPDESK_SECRET\n      encoding: b32\n",
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:7: sources[0].signature.encoding: unknown signature encoding 'b32'; "
        "expected one of: base64, hex"
    ]
    path = write(tmp_path, with_sink("name: crm", "method: GET", "url: http://crm/x"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:27: flows[0].sinks[0].method: unknown sink method 'GET'; "
        "expected one of: PATCH, POST, PUT"
    ]


def test_yaml_null_where_the_string_null_is_meant(tmp_path: Path) -> None:
    text = VALID.replace(
        "    ai:\n",
        "    enrich:\n      - {name: crm, url: 'http://crm/x', on_not_found: null}\n    ai:\n",
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:18: flows[0].enrich[0].on_not_found: unknown lookup on_not_found null; "
        "expected one of: fail, null (write it in quotes: 'null')"
    ]


def test_a_single_allowed_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("version: 1", "version: 2"))
    assert problems_of(path, VALID_ENV) == [f"{path}:1: version: must be 1, got 2"]


def test_misspelt_field_suggests_the_nearest(tmp_path: Path) -> None:
    text = VALID.replace("    model: sim-1\n", "    model: sim-1\n    timout_s: 3\n")
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:13: providers[0]: unknown field 'timout_s'; did you mean 'timeout_s'?"
    ]


def test_misspelt_top_level_section_suggests_the_nearest(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("flows:", "flow:").split("flow:")[0] + "flow: []\n")
    assert problems_of(path, VALID_ENV) == [
        f"{path}:13: (top level): unknown field 'flow'; did you mean 'flows'?"
    ]


def test_unknown_field_with_nothing_close_lists_the_fields(tmp_path: Path) -> None:
    text = VALID.replace(
        "      secret_env: HELPDESK_SECRET\n", "      secret_env: HELPDESK_SECRET\n      zzz: 1\n"
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:7: sources[0].signature: unknown field 'zzz'; allowed fields: encoding, "
        "header, prefix, scheme, secret_env, secret_file, timestamp_header, tolerance_s, url"
    ]


def test_a_field_of_another_sink_kind_names_that_kind(tmp_path: Path) -> None:
    # A Slack sink whose kind was forgotten is an HTTP sink: say where its fields belong.
    path = write(tmp_path, with_sink("name: alerts", "webhook_url_env: SLACK_URL", "text: hi"))
    assert problems_of(path, {**VALID_ENV, "SLACK_URL": "https://hooks.slack.test/x"}) == [
        f"{path}:26: flows[0].sinks[0]: missing required field 'url'",
        f"{path}:27: flows[0].sinks[0]: unknown field 'webhook_url_env' for kind http; "
        "it is a field of kind slack",
        f"{path}:28: flows[0].sinks[0]: unknown field 'text' for kind http; "
        "it is a field of kind slack",
    ]


def test_wrong_types_say_what_was_expected_and_what_was_read(tmp_path: Path) -> None:
    text = (
        "kafka:\n"
        "  partitions: abc\n"
        "  produce_timeout_s: abc\n"
        "  linger_ms: 1.5\n"
        "  bootstrap_servers: 9092\n"
        "  replication_factor: two\n"
        "gateway:\n"
        "  reuse_port: maybe\n"
        "  forwarded_headers: user-agent\n"
        "  trusted_proxies: [10.0.0.0/33]\n"
        "worker: [1]\n"
    ) + VALID
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:2: kafka.partitions: expected a whole number, got 'abc'",
        f"{path}:3: kafka.produce_timeout_s: expected a number, got 'abc'",
        f"{path}:4: kafka.linger_ms: expected a whole number, got 1.5",
        f"{path}:5: kafka.bootstrap_servers: expected a string, got 9092 (write it in quotes)",
        f"{path}:6: kafka.replication_factor: expected a whole number, got 'two'",
        f"{path}:8: gateway.reuse_port: expected true or false, got 'maybe'",
        f"{path}:9: gateway.forwarded_headers: expected a list, got 'user-agent'",
        f"{path}:10: gateway.trusted_proxies[0]: "
        "expected a network like 10.0.0.0/8 or 2001:db8::/32, got '10.0.0.0/33'",
        f"{path}:11: worker: expected a mapping of fields (key: value), got a list",
    ]


def test_long_values_are_shortened(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  partitions: " + "x" * 100 + "\n" + VALID)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:2: kafka.partitions: expected a whole number, got '{'x' * 37}...'"
    ]


def test_bounds_and_patterns_in_words(tmp_path: Path) -> None:
    text = (
        "kafka:\n  topic_prefix: my prefix\n  produce_timeout_s: 0\ngateway:\n  port: 70000\n"
    ) + VALID.replace("name: helpdesk", "name: Helpdesk").replace(
        "source: helpdesk", "source: Helpdesk"
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:2: kafka.topic_prefix: must be 1 to 100 letters, digits, '.', '_' or '-', "
        "got 'my prefix'",
        f"{path}:3: kafka.produce_timeout_s: must be more than 0, got 0",
        f"{path}:5: gateway.port: must be at most 65535, got 70000",
        f"{path}:8: sources[0].name: must be 1 to 63 lowercase letters, digits, '-' or '_', "
        "starting with a letter or digit, got 'Helpdesk'",
        f"{path}:21: flows[0].match.source: must be 1 to 63 lowercase letters, digits, "
        "'-' or '_', starting with a letter or digit, got 'Helpdesk'",
    ]


def test_postgres_sink_table_key_and_column_names(tmp_path: Path) -> None:
    text = with_sink(
        "name: db",
        "kind: postgres",
        "dsn_env: PG_DSN",
        "table: public.tickets.x",
        "key: []",
        "columns: {bad-col: '{{ result.summary }}'}",
    )
    path = write(tmp_path, text)
    assert problems_of(path, {**VALID_ENV, "PG_DSN": "postgresql://u:pw@db/x"}) == [
        f"{path}:29: flows[0].sinks[0].table: must be a table name, optionally schema.table: "
        "each a letter or '_', then letters, digits or '_' (at most 63), "
        "got 'public.tickets.x'",
        f"{path}:30: flows[0].sinks[0].key: needs at least 1 item(s), got 0",
        f"{path}:31: flows[0].sinks[0].columns: key 'bad-col' must be a column name: "
        "a letter or '_', then letters, digits or '_' (at most 63)",
    ]


def test_missing_required_fields_are_named_on_their_parent(tmp_path: Path) -> None:
    text = VALID.replace('      prompt: "{{ data.message }}"\n', "").replace(
        "      scheme: hmac-sha256\n", ""
    )
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:4: sources[0].signature: missing required field 'scheme' (one of: {SCHEMES})",
        f"{path}:16: flows[0].ai: missing required field 'prompt'",
    ]


def test_misspelt_provider_reference_suggests_the_nearest(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("provider: default", "provider: defualt"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:18: flows[0].ai.provider: unknown provider 'defualt'; "
        "expected one of: default (did you mean 'default'?)"
    ]


def test_missing_slack_webhook_variable_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path, with_sink("name: alerts", "kind: slack", "webhook_url_env: SLACK_URL", "text: hi")
    )
    assert problems_of(path, VALID_ENV) == [
        f"{path}:28: flows[0].sinks[0].webhook_url_env: environment variable SLACK_URL is not set"
    ]


def test_a_secret_pasted_into_an_env_field_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("api_key_env: AI_KEY", "api_key_env: sk-live-4f9a2b"))
    problems = problems_of(path, VALID_ENV)
    assert problems == [
        f"{path}:11: providers[0].api_key_env: must be the name of an environment variable "
        "(letters, digits and '_', like API_KEY), not the secret itself"
    ]
    assert "sk-live-4f9a2b" not in "\n".join(problems)


def test_env_fields_never_show_their_value_in_a_type_error(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("api_key_env: AI_KEY", "api_key_env: [s3cr3t-value]"))
    problems = problems_of(path, VALID_ENV)
    assert problems == [f"{path}:11: providers[0].api_key_env: expected a string"]


def test_no_message_keeps_pydantics_wording(tmp_path: Path) -> None:
    # One file with a problem of every kind pydantic reports for it: none of its phrases
    # (nor the union's discriminator function) reach the user.
    text = (
        (
            "flow: []\nkafka: {partitions: abc, linger_ms: 1.5, topic_prefix: 'a b'}\n"
            "gateway: {reuse_port: maybe, trusted_proxies: [x], forwarded_headers: x}\n"
            "worker: {dedupe: {ttl_s: -1}}\n"
        )
        + with_sink("name: crm", "kind: webhook")
        .replace("version: 1", "version: 2")
        .replace(
            "    model: sim-1\n",
            "    model: 5\n    kind: gpt\n    budget: {requests_per_minute: x}\n",
        )
        + "      - notamap\n      - {name: s, timeout_s: abc, url: 'http://x', typo: 1}\n"
    )
    path = write(tmp_path, text)
    problems = problems_of(path, VALID_ENV)
    assert len(problems) == 16
    for phrase in ("Input should", "Extra inputs", "Field required", "_sink_kind", "String should"):
        assert not [p for p in problems if phrase in p], phrase


def test_reference_when_the_file_declares_none(tmp_path: Path) -> None:
    text = VALID.replace(VALID[VALID.index("providers:") : VALID.index("flows:")], "")
    path = write(tmp_path, text)
    assert problems_of(path, VALID_ENV) == [
        f"{path}:13: flows[0].ai.provider: unknown provider 'default'; the file declares none"
    ]
