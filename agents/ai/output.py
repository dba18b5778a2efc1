"""Check a model's answer against the flow's output schema (JSON Schema draft 2020-12).

The schema is compiled once per flow (:func:`compile_schema`, when the AI task is built; the
config load already refused a schema that is not valid, see :mod:`schemas.output_schema`).
Every keyword is enforced, nested ones included; ``format`` is an annotation (the draft's
default). An answer that does not fit raises :class:`InvalidModelOutput` whose message lists
*every* error with its JSON path, sorted by path: that text is what the re-ask sends back to
the model and what the dead letter's ``validation_errors`` header shows.

What the result keeps: the answer as validated. Keys the schema does not declare stay (the
schema allows them unless it says ``additionalProperties: false``, and then the answer is
invalid); top-level properties the schema declares but the answer left out are added as
null, so a sink template reading an optional ``result.<field>`` renders it empty instead of
failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from agents.ai.output_check import quick_check
from schemas.errors import InvalidModelOutput
from schemas.output_schema import new_validator

# A re-ask pays for every character it sends back: an answer with a 10,000-item array that
# is all wrong gets the first errors and a count, and a long value is shortened in each.
_MOST_ERRORS_LISTED = 50
_LONGEST_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class OutputSchema:
    """A flow's compiled output schema: jsonschema's validator, which decides and words every
    error, and for a simple schema a quick check that can only say "certainly fits"
    (:mod:`agents.ai.output_check`)."""

    validator: Draft202012Validator
    fits: Callable[[Any], bool] | None


def compile_schema(name: str, schema: dict[str, Any]) -> OutputSchema:
    """The flow's schema, built once. ``name`` is the flow's, for the reader of a trace."""
    del name  # the errors name paths in the answer; the dead letter already names the flow
    return OutputSchema(new_validator(schema), quick_check(schema))


def _strip_fences(text: str) -> str:
    """Models asked for JSON sometimes wrap it in a Markdown code fence anyway."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        if stripped[:4].lower() == "json":
            stripped = stripped[4:]
    return stripped.strip()


def _path_key(error: ValidationError) -> tuple[tuple[bool, Any], ...]:
    # Indexes before names at the same depth, each compared with its own kind (2 before 10).
    return tuple((isinstance(p, str), p) for p in error.absolute_path)


def _described(error: ValidationError) -> str:
    """``$.score: 999 is greater than the maximum of 10``, with a long value shortened."""
    message = error.message
    shown = repr(error.instance)
    if len(shown) > _LONGEST_VALUE_CHARS and shown in message:
        message = message.replace(shown, shown[: _LONGEST_VALUE_CHARS - 4] + "...", 1)
    return f"{error.json_path}: {message}"


def answer_errors(validator: Draft202012Validator, answer: Any) -> list[str]:
    """Every way ``answer`` breaks the schema, sorted by JSON path; empty when it fits."""
    errors = sorted(validator.iter_errors(answer), key=lambda e: (_path_key(e), e.message))
    return [_described(e) for e in errors]


def parse_output(schema: OutputSchema, content: str) -> dict[str, Any]:
    """Parse (a Markdown fence is stripped), validate, and return the answer as the result's
    ``output``; raise :class:`InvalidModelOutput` listing every error."""
    try:
        raw = orjson.loads(_strip_fences(content))
    except orjson.JSONDecodeError:
        preview = " ".join(content.split())[:120]
        raise InvalidModelOutput(f"the answer is not JSON: {preview!r}", stage="ai") from None
    fits = schema.fits
    errors = [] if fits is not None and fits(raw) else answer_errors(schema.validator, raw)
    if errors:
        listed = errors[:_MOST_ERRORS_LISTED]
        if len(errors) > len(listed):
            listed.append(f"and {len(errors) - len(listed)} more")
        count = f"{len(errors)} error{'s' if len(errors) > 1 else ''}"
        raise InvalidModelOutput(
            f"the answer does not fit the schema ({count}): {'; '.join(listed)}", stage="ai"
        )
    # The schema's top level is type: object (checked at load), so a valid answer is a dict.
    output: dict[str, Any] = raw
    declared = schema.validator.schema
    for name in (declared.get("properties") if isinstance(declared, dict) else None) or {}:
        output.setdefault(name, None)
    return output
