"""Faust's App, with a way to let go of events that only wait when Faust waits for all of them.

At a rebalance and at a stop, Faust waits until every event its agents took is acked
(``stream_wait_empty``, which hookstream keeps on: an event in a model call must finish, or the
partition's next owner would pay for it again). An event that only *waits* — for a paused
flow's provider, a call slot, or its key's predecessor — could keep that wait going for as long
as a provider outage lasts: a stop then ran into its kill timeout, and a rebalance stalled the
whole group. So before each such wait the agents' runners release those events unacked
(:meth:`agents.stages.runner.OrderedRunner.release`), to be read again by whoever owns their
partition next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust


class ReleasingApp(faust.App):
    """A Faust app that runs its release hooks before it waits for its agents' events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release_hooks: list[Callable[[], object]] = []

    def _release(self) -> None:
        for hook in self.release_hooks:
            hook()

    def on_rebalance_start(self) -> None:
        """Called by Faust's consumer as the rebalance begins, before the wait (synchronously,
        so the release happens even if the revocation's coroutine never resumes)."""
        super().on_rebalance_start()
        self._release()

    async def on_stop(self) -> None:
        self._release()
        await super().on_stop()


def on_release(app: faust.App, hook: Callable[[], object]) -> None:
    """Run ``hook`` before ``app`` waits for its agents' events (a no-op on a plain app)."""
    hooks = getattr(app, "release_hooks", None)
    if hooks is not None:
        hooks.append(hook)
