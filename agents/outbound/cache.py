"""The answers of one HTTP lookup kept for a while: an LRU with a time to live (``cache:`` on
a lookup, :class:`schemas.config_flows.LookupCacheConfig`).

Keyed by the rendered URL, per lookup (two lookups never share answers: their headers may
differ). What is kept is an answer: a JSON body, or the null a 404 gives with
``on_not_found: "null"`` (so an id the CRM does not know is not asked again within ``ttl_s``;
a customer created meanwhile is seen after at most ``ttl_s``). Errors are never kept: a
timeout, a 5xx, a refused address, or a 404 with ``on_not_found: fail``, raise before
anything is stored, and the next event calls again.

An entry expires ``ttl_s`` after it was stored (reading it does not extend it); past
``max_entries`` the least recently used entry goes. Each worker has its own cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


class TTLCache:
    def __init__(self, *, ttl_s: float, max_entries: int, clock: Clock = time.monotonic) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[bool, Any]:
        """(True, value) while ``key`` is stored and fresh (it becomes the most recently
        used), else (False, None); an expired entry is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` for ``ttl_s``; evict the least recently used past the bound."""
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
