"""JSON Schema of every topic's value (and of the config file), for consumers in any language."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from schemas import topics
from schemas.config import HookstreamConfig
from schemas.events import AIResult, CloudEvent, DeadLetter, DeliveryReceipt, EnrichedEvent

TOPIC_MODELS: dict[str, type[BaseModel]] = {
    topics.EVENTS: CloudEvent,
    topics.ENRICHED: EnrichedEvent,
    topics.RESULTS: AIResult,
    topics.DLQ: DeadLetter,
    topics.RECEIPTS: DeliveryReceipt,
}


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<role>.schema.json`` per topic and ``config.schema.json``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    models: dict[str, type[BaseModel]] = {**TOPIC_MODELS, "config": HookstreamConfig}
    for role, model in models.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://hookstream.dev/schemas/{role}.schema.json"
        if role == topics.DLQ:
            schema["description"] = (
                "Dead letter. On the topic the value is the original record's value unchanged; "
                "every other field travels as a Kafka header named hookstream-dlq-<field>."
            )
        path = directory / f"{role}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    return written
