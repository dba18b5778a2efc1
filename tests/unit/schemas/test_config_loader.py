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
    assert config.flow("triage").ai.max_concurrency == 4
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
        "put it in an environment variable and give its name in secret_env"
    ]
    assert "hunter2-inline" not in "\n".join(problems)


def test_inline_api_key_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("    api_key_env: AI_KEY\n", "    api_key: sk-inline-key\n")
    path = write(tmp_path, text)
    problems = problems_of(path, VALID_ENV)
    assert problems == [
        f"{path}:11: providers[0].api_key: secrets are not written in the file: "
        "put it in an environment variable and give its name in api_key_env"
    ]
    assert "sk-inline-key" not in "\n".join(problems)


def test_template_with_unknown_root_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("{{ data.message }}", "{{ foo.bar }}"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:19: flows[0].ai.prompt: template refers to ['foo']; "
        "it may use ['data', 'enrichment', 'event']"
    ]


def test_malformed_placeholder_is_refused_at_load(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("{{ data.message }}", "{{ data.message | upper }}"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:19: flows[0].ai.prompt: placeholder '{{{{ data.message | upper }}}}' "
        "is not a dotted field path like data.customer_id"
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
        "it may use ['ai', 'data', 'enrichment', 'event', 'result']"
    ]


def test_output_schema_must_be_type_object(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("type: object", "type: array"))
    assert problems_of(path, VALID_ENV) == [
        f"{path}:20: flows[0].ai.output: must be a JSON Schema with type: object and properties"
    ]


def test_output_property_needs_a_supported_type(tmp_path: Path) -> None:
    path = write(tmp_path, VALID.replace("summary: {type: string}", "summary: {type: text}"))
    problems = problems_of(path, VALID_ENV)
    assert problems == [
        f"{path}:20: flows[0].ai.output: property 'summary' needs a type among "
        "['array', 'boolean', 'integer', 'number', 'object', 'string']"
    ]


def test_output_required_must_name_known_properties(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        VALID.replace(
            "          summary: {type: string}\n",
            "          summary: {type: string}\n        required: [summary, mood]\n",
        ),
    )
    assert problems_of(path, VALID_ENV) == [
        f"{path}:20: flows[0].ai.output: required names unknown properties ['mood']"
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
    assert problems[-1] == (
        f"{path}:26: flows[0].ai.max_concurrency: must be at least 1, got 0"
    )


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
        "expected one of: github, hmac-sha256, none, standard-webhooks, stripe",
        f"{path}:6: sources[0].signature.secret_env: "
        "environment variable HELPDESK_SECRET is not set",
        f"{path}:10: providers[0].base_url: must start with http:// or https://, "
        "got 'ftp://nope'",
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
    assert config.flows[0].ai.system == "customer_id"
    assert config.flows[0].ai.max_attempts == 2


def test_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- just\n- a list\n")
    assert problems_of(path, {}) == [
        f"{path}:1: (top level): the file must be a YAML mapping with sources, providers and flows"
    ]


def test_missing_sources_section(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\n")
    assert problems_of(path, {}) == [
        f"{path}:1: (top level): missing required field 'sources'"
    ]


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
