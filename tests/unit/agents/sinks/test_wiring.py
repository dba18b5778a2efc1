"""The sink worker's wiring: its delivered-memory catches up once per partition assignment."""

from __future__ import annotations

from agents.faust_app import ReleasingApp
from agents.resources import Resources
from agents.sinks.wiring import register_sink_agents
from schemas.config_loader import load_config
from tests.unit.schemas.test_config_loader import EXAMPLE, EXAMPLE_ENV


def test_the_sink_workers_memory_is_told_of_each_assignment() -> None:
    config = load_config(EXAMPLE, env=EXAMPLE_ENV)
    app = ReleasingApp(
        "hookstream-sinks-wiring-unit",
        broker="kafka://127.0.0.1:9",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
    )
    stages = register_sink_agents(app, config, Resources(config, client_id="unit"))
    assert stages
    memory = stages[0].memory
    assert all(stage.memory is memory for stage in stages)  # one per process
    assert memory.per_assignment
    before = memory._assignment
    app.stop_releasing()  # what each assignment does (ReleasingApp._on_partitions_assigned)
    app.stop_releasing()
    assert memory._assignment == before + 2
