"""``hookstream flow test`` with a table lookup: reported by topic and key, given or null, never
read (a table lives in Kafka, which flow test does not use), even with ``--call-lookups``."""

from __future__ import annotations

from pathlib import Path

import yaml

from schemas.config_loader import load_config
from streams.cli.flowtest import report_lines
from tests.unit.streams.cli.test_flowtest import EXAMPLES, GOOD, _given, _report


def _config_with_a_table(tmp_path: Path) -> Path:
    data = yaml.safe_load((EXAMPLES / "flows.yaml").read_text())
    data["flows"][0]["enrich"].append(
        {"name": "account", "table": {"topic": "crm.accounts", "key": "{{ data.customer_id }}"}}
    )
    path = tmp_path / "flows.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def test_a_table_lookup_is_reported_by_topic_and_key(tmp_path: Path) -> None:
    config = load_config(_config_with_a_table(tmp_path), require_secrets=False)
    given = _given([GOOD], lookups={"customer": {"name": "Ada"}}, call_lookups=False)
    report = await _report(config, given)
    flow = report["flows"]["feedback-triage"]
    assert flow["lookups"]["account"] == {
        "table": "crm.accounts",
        "key": "cus_002",
        "answer": "not called",
        "value": None,
    }
    lines = [line.strip() for line in report_lines(report)]
    assert "lookup account: table crm.accounts key cus_002 (not called: null)" in lines
    given = _given([GOOD], lookups={"customer": {}, "account": {"tier": "gold"}})
    flow = (await _report(config, given))["flows"]["feedback-triage"]
    assert flow["lookups"]["account"]["answer"] == "given"
    assert flow["lookups"]["account"]["value"] == {"tier": "gold"}


async def test_call_lookups_does_not_read_a_table(tmp_path: Path) -> None:
    config = load_config(_config_with_a_table(tmp_path), require_secrets=False)
    # The CRM lookup is given; only the table is left, and it is not called (no Kafka here).
    given = _given([GOOD], lookups={"customer": {"name": "Ada"}}, call_lookups=True)
    flow = (await _report(config, given))["flows"]["feedback-triage"]
    assert flow["lookups"]["account"]["answer"] == "not called"
    assert flow["dead_letter"] is None
