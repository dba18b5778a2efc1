"""A lookup table's records (set, tombstone, invalid) and the Enricher's table lookups, without
Kafka; tests/integration/test_tables.py reads real topics with real workers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from prometheus_client import REGISTRY

from agents.outbound.lookups import Enricher
from agents.resources import Resources, tables_of
from agents.state.table import KafkaTable
from schemas.config import HookstreamConfig, KafkaSettings
from schemas.config_loader import load_config
from schemas.errors import StageError, TemplateError
from tests.unit.schemas.test_config_loader import VALID, VALID_ENV, problems_of, write


def invalid_count(topic: str) -> float:
    value = REGISTRY.get_sample_value(
        "hookstream_table_records_total", {"topic": topic, "outcome": "invalid"}
    )
    return value or 0.0


def test_records_set_replace_and_delete_keys() -> None:
    table = KafkaTable(KafkaSettings(), "unit.table.a")
    table.apply(b"c1", orjson.dumps({"plan": "free"}))
    table.apply(b"c2", orjson.dumps({"plan": "pro"}))
    table.apply(b"c1", orjson.dumps({"plan": "enterprise"}))
    table.apply(b"c2", None)  # tombstone
    table.apply(b"c3", b"null")  # JSON null: a value
    assert table.lookup("c1") == (True, {"plan": "enterprise"})
    assert table.lookup("c2") == (False, None)
    assert table.lookup("c3") == (True, None)
    assert table.lookup("nobody") == (False, None)
    assert len(table) == 2


def test_each_lookup_gets_its_own_copy() -> None:
    table = KafkaTable(KafkaSettings(), "unit.table.b")
    table.apply(b"c1", b'{"tags": ["a"]}')
    first = table.get("c1")
    first["tags"].append("changed")
    assert table.get("c1") == {"tags": ["a"]}


def test_a_value_that_is_not_json_is_skipped_counted_and_the_key_keeps_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = "unit.table.c"
    table = KafkaTable(KafkaSettings(), topic)
    before = invalid_count(topic)
    table.apply(b"c1", b'{"plan": "pro"}')
    table.apply(b"c1", b"not json {")
    table.apply(None, b'{"plan": "keyless"}')
    assert table.lookup("c1") == (True, {"plan": "pro"})
    assert len(table) == 1
    assert invalid_count(topic) - before == 2
    assert table.invalid == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("not JSON" in w and "'c1'" in w for w in warnings)


def table_config(tmp_path: Path, lookups: str) -> HookstreamConfig:
    text = VALID.replace("    ai:\n", f"    enrich:\n{lookups}    ai:\n")
    return load_config(write(tmp_path, text), env=VALID_ENV)


TWO_LOOKUPS = """\
      - name: customer
        table: {topic: crm.customers, key: "{{ data.customer_id }}"}
      - name: strict
        table: {topic: crm.customers, key: "{{ data.customer_id }}"}
        on_not_found: fail
"""


async def test_a_table_lookup_reads_the_rendered_key(tmp_path: Path) -> None:
    config = table_config(tmp_path, TWO_LOOKUPS)
    flow = config.flows[0]
    tables = tables_of(config)
    assert list(tables) == ["crm.customers"]  # one table for both lookups
    assert tables["crm.customers"].used_by == "flows[0].enrich[0].table, flows[0].enrich[1].table"
    tables["crm.customers"].apply(b"cus 1", b'{"name": "Ada"}')
    enricher = Enricher(config, lambda guard: pytest.fail("a table lookup made a request"), tables)
    customer, strict = flow.enrich
    # The key is plain text: no percent-encoding, unlike a URL.
    assert await enricher._lookup(flow, customer, {"data": {"customer_id": "cus 1"}}) == {
        "name": "Ada"
    }
    assert await enricher._lookup(flow, customer, {"data": {"customer_id": "nobody"}}) is None
    with pytest.raises(StageError, match=r"key not in table crm\.customers") as caught:
        await enricher._lookup(flow, strict, {"data": {"customer_id": "nobody"}})
    assert not caught.value.retriable
    with pytest.raises(TemplateError):
        await enricher._lookup(flow, customer, {"data": {}})
    assert enricher.target_for(flow, customer, {"data": {"customer_id": "c9"}}) == {
        "table": "crm.customers",
        "key": "c9",
    }


def test_only_the_worker_holds_tables(tmp_path: Path) -> None:
    config = table_config(tmp_path, TWO_LOOKUPS)
    assert list(Resources(config, client_id="w", state=True).tables) == ["crm.customers"]
    assert Resources(config, client_id="s", state=False).tables == {}


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        (
            "{name: c, url: 'http://crm/x', table: {topic: t, key: k}}",
            "flows[0].enrich[0]: set either url (an HTTP lookup) or table (a Kafka table)",
        ),
        ("{name: c}", "flows[0].enrich[0]: set either url"),
        (
            "{name: c, table: {topic: t, key: k}, headers: {a: b}, timeout_s: 3}",
            "flows[0].enrich[0]: headers, timeout_s: only for an HTTP lookup (url), not a table",
        ),
        (
            "{name: c, table: {topic: t, key: k}, cache: {ttl_s: 5}}",
            "flows[0].enrich[0]: cache: only for an HTTP lookup",
        ),
        ("{name: c, table: {topic: 'a/b', key: k}}", "flows[0].enrich[0].table.topic: "),
        (
            "{name: c, table: {topic: t, key: '{{ result.x }}'}}",
            "flows[0].enrich[0].table.key: template refers to ['result']",
        ),
    ],
)
def test_a_wrong_table_lookup_names_the_field(tmp_path: Path, lookup: str, expected: str) -> None:
    text = VALID.replace("    ai:\n", f"    enrich:\n      - {lookup}\n    ai:\n")
    [problem] = problems_of(write(tmp_path, text), VALID_ENV)
    assert expected in problem, problem


def test_lookups_of_one_topic_share_the_longest_partitions_timeout(tmp_path: Path) -> None:
    default = tables_of(table_config(tmp_path, TWO_LOOKUPS))["crm.customers"]
    assert default.partitions_timeout_s == 30
    timed = """\
      - name: customer
        table: {topic: crm.customers, key: "{{ data.customer_id }}", partitions_timeout_s: 5}
      - name: strict
        table: {topic: crm.customers, key: "{{ data.customer_id }}", partitions_timeout_s: 2}
"""
    assert tables_of(table_config(tmp_path, timed))["crm.customers"].partitions_timeout_s == 5
