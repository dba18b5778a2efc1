"""Check a model's answer against the flow's output schema.

The schema in the config is a JSON Schema object; it is compiled once into a pydantic model
(strict, extra keys dropped) so validation errors name the field and the reason, which is what
the dead letter shows and what a re-ask would send back to the model.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from schemas.errors import InvalidModelOutput

_SCALARS: dict[str, Any] = {
    "string": str,
    "number": float,
    "integer": int,
    "boolean": bool,
    "array": list[Any],
    "object": dict[str, Any],
}


def _field_type(spec: dict[str, Any]) -> Any:
    enum = spec.get("enum")
    if enum:
        return Literal[tuple(enum)]
    return _SCALARS[spec["type"]]


def compile_schema(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    required = set(schema.get("required", []))
    fields: dict[str, Any] = {}
    for prop, spec in schema["properties"].items():
        kind = _field_type(spec)
        fields[prop] = (kind, ...) if prop in required else (kind | None, None)
    model: type[BaseModel] = create_model(
        f"Output_{name.replace('-', '_')}",
        __config__=ConfigDict(extra="ignore", frozen=True, strict=True),
        **fields,
    )
    return model


def _strip_fences(text: str) -> str:
    """Models asked for JSON sometimes wrap it in a Markdown code fence anyway."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        if stripped[:4].lower() == "json":
            stripped = stripped[4:]
    return stripped.strip()


def parse_output(model: type[BaseModel], content: str) -> dict[str, Any]:
    """Parse and validate; raise :class:`InvalidModelOutput` with the reasons."""
    try:
        raw = orjson.loads(_strip_fences(content))
    except orjson.JSONDecodeError:
        preview = " ".join(content.split())[:120]
        raise InvalidModelOutput(f"the answer is not JSON: {preview!r}", stage="ai") from None
    try:
        validated = model.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(answer)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise InvalidModelOutput(
            f"the answer does not fit the schema: {reasons}", stage="ai"
        ) from None
    return validated.model_dump(mode="json", exclude_none=False)
