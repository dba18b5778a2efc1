"""The pure parts of the commands: topic short names, publish's source and key rules, tail's
record JSON, sign's curl command."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.errors import ToolError
from schemas.topics import Topics
from streams.cli.pubsub import publish_source, read_events, record_json
from streams.cli.sign import curl_command
from streams.cli.topics import owned_topics, resolve_topic
from tests.support.topics import SHORT_NAMES

CONFIG = """
version: 1
kafka: {bootstrap_servers: "127.0.0.1:9", topic_prefix: demo}
sources:
  - name: keyed
    signature: {scheme: none}
    partition_key: customer.id
    type_field: event
  - name: unkeyed
    signature: {scheme: none}
    id_field: id
"""


@pytest.fixture
def config(tmp_path: Path) -> HookstreamConfig:
    path = tmp_path / "flows.yaml"
    path.write_text(CONFIG)
    return load_config(path, env={})


def publish_args(**given: object) -> argparse.Namespace:
    defaults = {"config": "flows.yaml", "key_field": None, "allow_random_key": False, "type": None}
    return argparse.Namespace(**{**defaults, **given})


# --- topic names ----------------------------------------------------------------------------


@pytest.mark.parametrize("short", SHORT_NAMES)
def test_every_short_name_is_the_prefixed_topic(short: str) -> None:
    assert resolve_topic("demo", short) == f"demo.{short}"


def test_every_topic_hookstream_names_has_a_short_name() -> None:
    names = Topics("demo")
    declared = {
        getattr(names, attr) for attr, value in vars(Topics).items() if isinstance(value, property)
    }
    assert declared == set(owned_topics("demo").values())
    assert list(owned_topics("demo")) == SHORT_NAMES


def test_a_full_name_is_taken_as_given() -> None:
    assert resolve_topic("demo", "other.dedupe") == "other.dedupe"
    assert resolve_topic("demo", "demo.events") == "demo.events"


def test_an_unknown_short_name_is_refused_with_the_list() -> None:
    with pytest.raises(ToolError) as refused:
        resolve_topic("demo", "dedup", option="--topic")
    message = str(refused.value)
    assert message.startswith("--topic 'dedup': not a topic hookstream owns")
    assert ", ".join(SHORT_NAMES) in message


# --- publish --------------------------------------------------------------------------------


def test_publish_refuses_a_source_that_is_not_configured(config: HookstreamConfig) -> None:
    with pytest.raises(ToolError, match=r"'nosuch' is not a source of flows.yaml; its sources: "):
        publish_source(config, publish_args(source="nosuch"))
    with pytest.raises(ToolError, match=r"its sources: keyed, unkeyed$"):
        publish_source(config, publish_args(source="nosuch"))


def test_publish_refuses_a_source_without_a_key_rule(config: HookstreamConfig) -> None:
    with pytest.raises(ToolError) as refused:
        publish_source(config, publish_args(source="unkeyed"))
    assert "source 'unkeyed' has no partition_key in flows.yaml" in str(refused.value)
    assert "--key-field" in str(refused.value)
    assert "--allow-random-key" in str(refused.value)


def test_publish_keys_by_the_sources_rule_or_by_key_field(config: HookstreamConfig) -> None:
    line = b'{"id": "w1", "event": "t.x", "customer": {"id": "c1"}, "account": "a9"}\n'
    keyed = publish_source(config, publish_args(source="keyed"))
    (event,) = read_events(publish_args(), keyed, line, "in.jsonl")
    assert (event.partitionkey, event.type) == ("c1", "t.x")

    args = publish_args(source="unkeyed", key_field="account", type="custom.type")
    unkeyed = publish_source(config, args)
    (event,) = read_events(args, unkeyed, line, "in.jsonl")
    # The source's own id rule still names the event: publishing it again is a duplicate.
    assert (event.partitionkey, event.id, event.type) == ("a9", "w1", "custom.type")


def test_allow_random_key_keys_each_event_by_its_id(config: HookstreamConfig) -> None:
    args = publish_args(source="unkeyed", allow_random_key=True)
    source = publish_source(config, args)
    events = read_events(args, source, b'{"id": "w1"}\n{"id": "w2"}\n', "in.jsonl")
    assert [e.partitionkey for e in events] == ["w1", "w2"]


def test_a_line_without_the_key_field_names_the_line_and_the_rule(
    config: HookstreamConfig,
) -> None:
    args = publish_args(source="unkeyed", key_field="account")
    source = publish_source(config, args)
    with pytest.raises(ToolError) as refused:
        read_events(args, source, b'{"account": "a"}\n\n{"id": "w2"}\n', "in.jsonl")
    assert str(refused.value) == "in.jsonl:3: the payload has no field 'account' (--key-field)"


# --- tail -----------------------------------------------------------------------------------


def test_record_json_has_every_field_and_parses_json_values() -> None:
    record = SimpleNamespace(
        topic="demo.events",
        partition=3,
        offset=17,
        timestamp=1_767_225_600_123,  # 2026-01-01T00:00:00.123Z
        key=b"cus_1",
        headers=[("hookstream-replay", b"r1")],
        value=b'{"a": [1, 2]}',
    )
    assert record_json(record) == {
        "topic": "demo.events",
        "partition": 3,
        "offset": 17,
        "timestamp": "2026-01-01T00:00:00.123Z",
        "key": "cus_1",
        "headers": {"hookstream-replay": "r1"},
        "value": {"a": [1, 2]},
    }
    record.value, record.key = b"not json", None
    shown = record_json(record)
    assert (shown["value"], shown["key"]) == ("not json", None)
    assert orjson.loads(orjson.dumps(shown)) == shown  # one JSON object, as --jsonl prints


# --- sign -----------------------------------------------------------------------------------


def test_the_curl_command_sends_the_file_byte_for_byte() -> None:
    command = curl_command(
        "http://127.0.0.1:8080/webhooks/helpdesk",
        {"Content-Type": "application/json", "X-Signature": "sha256=ab'c"},
        "my body.json",
    )
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:5] == ["curl", "-sS", "-X", "POST", "http://127.0.0.1:8080/webhooks/helpdesk"]
    assert words[5:9] == ["-H", "Content-Type: application/json", "-H", "X-Signature: sha256=ab'c"]
    assert words[9:] == ["--data-binary", "@my body.json"]
    assert " -d " not in command
