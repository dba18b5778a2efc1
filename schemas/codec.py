"""The one JSON codec of hookstream's topics: orjson, registered with Faust as ``"orjson"``.

Why not Faust's ``faust.Record``: it adds ``__faust`` metadata to every value, which a consumer
in another language would have to ignore. hookstream writes plain JSON and validates it with
pydantic on the way in.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs
from pydantic import BaseModel

CODEC_NAME = "orjson"


def dumps(value: Any) -> bytes:
    """Serialise a pydantic model or plain JSON-able value to JSON bytes."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return orjson.dumps(value)


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


class OrjsonCodec(codecs.Codec):
    """Faust codec: values in and out of topics are plain JSON."""

    def _dumps(self, obj: Any) -> bytes:
        return dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return loads(s)


def register() -> None:
    """Make ``value_serializer="orjson"`` available to Faust topics (idempotent)."""
    codecs.register(CODEC_NAME, OrjsonCodec())
