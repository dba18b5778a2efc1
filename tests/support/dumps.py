"""Counting the dumps of CloudEvents: a template context dumps the event only when a template
reads ``event.*`` (issue 16), and tests check that it does not otherwise."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.events import CloudEvent


def count_event_dumps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on each ``CloudEvent.model_dump`` appends the event's id to the list returned."""
    dumped: list[str] = []
    real = CloudEvent.model_dump

    def counting_dump(self: CloudEvent, **kwargs: Any) -> dict[str, Any]:
        dumped.append(self.id)
        return real(self, **kwargs)

    monkeypatch.setattr(CloudEvent, "model_dump", counting_dump)
    return dumped
