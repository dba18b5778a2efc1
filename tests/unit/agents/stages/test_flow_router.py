"""agents.stages.enrich.FlowRouter: the flows of each (source, type) found once per worker
(issue 16); what it answers must be what matching every flow anew answers, ``where`` included."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import agents.stages.enrich
from agents.stages.enrich import FlowRouter
from schemas.config import HookstreamConfig
from schemas.config_loader import load_config
from schemas.events import CloudEvent

ENV = {"AI_KEY": "ai-key-xyz"}
CONFIG = """\
version: 1
sources:
  - name: helpdesk
    signature: {scheme: none}
    partition_key: customer_id
  - name: billing
    signature: {scheme: none}
    partition_key: customer_id
providers:
  - name: default
    base_url: http://127.0.0.1:8091/v1
    api_key_env: AI_KEY
    model: sim-1
flows:
  - name: tickets
    match: {source: helpdesk, types: ["ticket.*"]}
    ai: {provider: default, prompt: "{{ data }}", output: {type: object}}
  - name: big-tickets
    match:
      source: helpdesk
      types: [ticket.created]
      where: {field: data.amount, gt: 100}
    ai: {provider: default, prompt: "{{ data }}", output: {type: object}}
  - name: invoices
    match: {source: billing}
    ai: {provider: default, prompt: "{{ data }}", output: {type: object}}
"""


def config(tmp_path: Path) -> HookstreamConfig:
    path = tmp_path / "flows.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    return load_config(path, env=ENV)


def event(source: str, kind: str, data: Any) -> CloudEvent:
    return CloudEvent.model_validate(
        {"id": "e1", "source": source, "type": kind, "partitionkey": "c1", "data": data}
    )


def names(flows: list[Any]) -> list[str]:
    return [flow.name for flow in flows]


def test_the_router_answers_as_matching_anew_where_included(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    router = FlowRouter(loaded)
    cases = [
        (event("helpdesk", "ticket.created", {"amount": 500}), ["tickets", "big-tickets"]),
        (event("helpdesk", "ticket.created", {"amount": 5}), ["tickets"]),
        (event("helpdesk", "ticket.closed", {"amount": 500}), ["tickets"]),
        (event("helpdesk", "user.created", {}), []),
        (event("billing", "anything", {}), ["invoices"]),
    ]
    for _ in range(2):  # the second time from the memo
        for one, expected in cases:
            assert names(router.flows_taking(one)) == expected
            fresh = loaded.flows_for(one.source, one.type)
            assert names(router.flows_taking(one)) == names(
                [f for f in fresh if f.match.where_holds({"data": one.data})]
            )


def test_a_caller_changing_its_list_does_not_change_the_memo(tmp_path: Path) -> None:
    router = FlowRouter(config(tmp_path))
    one = event("billing", "paid", {})
    router.flows_taking(one).clear()
    assert names(router.flows_taking(one)) == ["invoices"]


def test_the_memo_is_bounded(tmp_path: Path, monkeypatch: Any) -> None:
    """Event types come from senders: distinct ones must not grow the memo without bound."""
    monkeypatch.setattr(agents.stages.enrich, "MAX_KINDS", 5)
    router = FlowRouter(config(tmp_path))
    for i in range(23):
        assert names(router.flows_taking(event("helpdesk", f"ticket.t{i}", {}))) == ["tickets"]
        assert len(router._kinds) <= 5
