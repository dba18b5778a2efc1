"""The one JSON codec of hookstream's topics: orjson (registered with Faust by :mod:`agents.app`).

Why not Faust's ``faust.Record``: it adds ``__faust`` metadata to every value, which a consumer
in another language would have to ignore. hookstream writes plain JSON and validates it with
pydantic on the way in.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel


def dumps(value: Any) -> bytes:
    """Serialise a pydantic model or plain JSON-able value to JSON bytes."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return orjson.dumps(value)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)
