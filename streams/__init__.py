"""hookstream's public Python API: publish events, subscribe to results, and their models.

Everything importable from ``streams`` is the supported API; every other module is internal and
may change between releases::

    from streams import Publisher, Subscriber, make_event

The names load on first use (PEP 562), so importing a sub-package such as the CLI does not pay
for the Kafka client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.errors import HookstreamError
    from schemas.events import AIResult, CloudEvent, DeadLetter, DeliveryReceipt, TokenUsage
    from streams.client import Publisher, Subscriber, make_event

__all__ = [
    "AIResult",
    "CloudEvent",
    "DeadLetter",
    "DeliveryReceipt",
    "HookstreamError",
    "Publisher",
    "Subscriber",
    "TokenUsage",
    "make_event",
]

_HOMES = {
    "AIResult": "schemas.events",
    "CloudEvent": "schemas.events",
    "DeadLetter": "schemas.events",
    "DeliveryReceipt": "schemas.events",
    "TokenUsage": "schemas.events",
    "HookstreamError": "schemas.errors",
    "Publisher": "streams.client",
    "Subscriber": "streams.client",
    "make_event": "streams.client",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
