"""Faust's App, with a way to let go of events that only wait when Faust waits for all of them.

At a rebalance and at a stop, Faust waits until every event its agents took is acked
(``stream_wait_empty``, which hookstream keeps on: an event in a model call must finish, or the
partition's next owner would pay for it again). An event that only *waits* — for a paused
flow's provider, a call slot, or its key's predecessor — could keep that wait going for as long
as a provider outage lasts: a stop then ran into its kill timeout, and a rebalance stalled the
whole group. So from the moment such a wait begins the agents' runners release those events
unacked (:meth:`agents.stages.runner.OrderedRunner.release`), to be read again by whoever owns
their partition next.

The release is repeated every :data:`RELEASE_EVERY_S` for as long as Faust may be waiting: an
event that was busy at the first release (the outage gate's probe, in a model call) and then
waits again (its call failed) is let go by the next one; a one-shot release left it holding the
wait until the kill timeout. It runs only then: released outside a rebalance or a stop, an event
would be acked around and lost (the runner's docstring says why). Between ticks, an outage
gate's caller that begins to wait (at the closed gate, or in a retry's pause, which can be
shorter than a tick) triggers a release at once (:func:`release_when_waiting`). The state begins at
``on_rebalance_start`` — which aiokafka calls in Faust's consumer thread, so it is handed to the
app's event loop, where the runners live — or at ``on_stop``; it ends when the partitions are
assigned again (the runners then :meth:`~agents.stages.runner.OrderedRunner.resume`), or with
the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import faust

from agents.outbound.gate import OutageGate

log = logging.getLogger(__name__)
# How often the release is repeated while Faust waits (Faust itself looks once per second).
RELEASE_EVERY_S = 0.2
# Once every event the agents took is done, how long a stop may still take (Faust's last
# offset commit, its consumer's and producer's stops) before the process exits without it.
STOP_AFTER_EVENTS_S = 15.0
_WATCH_EVERY_S = 1.0


class ReleasingApp(faust.App):
    """A Faust app that runs its release hooks for as long as it waits for its agents' events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release_hooks: list[Callable[[], object]] = []
        self.resume_hooks: list[Callable[[], object]] = []
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._releasing: asyncio.Task[None] | None = None
        # What to do when a stop is stuck after its events (see _watch_stop): the CLI exits.
        self.on_stuck_stop: Callable[[], object] | None = None
        self._stop_watch: asyncio.Task[None] | None = None

    @property
    def releasing(self) -> bool:
        """Is the release being repeated now (a rebalance or a stop in progress)?"""
        return self._releasing is not None

    async def on_start(self) -> None:
        # The loop the agents (and their runners) run on: where the release must run.
        self._main_loop = asyncio.get_running_loop()
        await super().on_start()

    def on_rebalance_start(self) -> None:
        """Called by Faust's consumer as the rebalance begins, before the wait, from the
        consumer's own thread: the release is handed over to the app's loop."""
        super().on_rebalance_start()
        self._in_main_loop(self.start_releasing)

    async def _on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        """The rebalance's wait is over (revocation always precedes assignment): the runners
        take the new assignment's events again."""
        if not self.should_stop:
            self.stop_releasing()
        await super()._on_partitions_assigned(assigned, generation_id)

    async def on_stop(self) -> None:
        self.start_releasing()
        if self.on_stuck_stop is not None and self._stop_watch is None:
            # Until on_shutdown: the consumer's and producer's own stops come after this one
            # (the consumer's waits for its last commit a second time).
            self._stop_watch = asyncio.get_running_loop().create_task(self._watch_stop())
        await super().on_stop()

    async def _watch_stop(self) -> None:
        """Call :attr:`on_stuck_stop` once no event has been in flight for
        :data:`STOP_AFTER_EVENTS_S` and the stop still runs.

        Why: after a broker restart, a stop could wait without end in Faust's last offset
        commit (``Wait for streams...``: its periodic commit, stuck in aiokafka's consumer
        thread, never returned), until the supervisor's kill (7 of 20 runs of
        tests/integration/test_outage_copies.py). Once every event is done nothing is lost by
        not committing: the partitions' next owner reads the events since the last commit
        again and skips them by their done marks. While an event is in flight (a model call
        the stop lets finish) the clock does not run."""
        quiet_s = 0.0
        while quiet_s < STOP_AFTER_EVENTS_S:
            await asyncio.sleep(_WATCH_EVERY_S)
            consumer = getattr(self, "_consumer", None)  # Faust's; None before it existed
            if consumer is not None and not hasattr(consumer, "_unacked_messages"):
                # Another Faust: what is in flight cannot be told, so never cut a stop short.
                log.warning("cannot watch this stop: Faust's consumer has no _unacked_messages")
                return
            in_flight = getattr(consumer, "_unacked_messages", None) or ()
            quiet_s = (
                0.0
                if any(not message.acked for message in in_flight)
                else (quiet_s + _WATCH_EVERY_S)
            )
        log.error(
            "stopping: every event is done, yet the stop has not ended %g s later (Faust's "
            "last offset commit unanswered, as after a broker restart); exiting without it: "
            "the events since the last commit are read again and skipped by their done marks",
            STOP_AFTER_EVENTS_S,
        )
        if self.on_stuck_stop is not None:
            self.on_stuck_stop()

    async def on_shutdown(self) -> None:
        if self._stop_watch is not None:
            self._stop_watch.cancel()
        self.stop_releasing(resume=False)  # everything has stopped: nothing waits any more
        await super().on_shutdown()

    def start_releasing(self) -> None:
        """Release now, and again every :data:`RELEASE_EVERY_S` until :meth:`stop_releasing`."""
        self._release()
        if self._releasing is None:
            log.info("letting go of waiting events until Faust's wait for them is over")
            self._releasing = asyncio.get_running_loop().create_task(self._keep_releasing())

    def stop_releasing(self, *, resume: bool = True) -> None:
        """End the releasing state; with ``resume``, the runners handle what they read again
        (at an assignment: their events now come from the committed offsets)."""
        task, self._releasing = self._releasing, None
        if task is not None:
            task.cancel()
        if resume:
            for hook in self.resume_hooks:
                hook()

    def release_if_releasing(self) -> None:
        """Release now if a rebalance or a stop is waiting: called by an outage gate as one of
        its callers begins to wait (:func:`release_when_waiting`), so that an event busy until
        then is let go at once, not at the next tick — a retry's pause can be shorter than one."""
        if self._releasing is not None:
            self._release()

    async def _keep_releasing(self) -> None:
        while True:
            await asyncio.sleep(RELEASE_EVERY_S)
            self._release()

    def _release(self) -> None:
        for hook in self.release_hooks:
            hook()

    def _in_main_loop(self, call: Callable[[], None]) -> None:
        """Run ``call`` in the app's loop: now if this is it, else handed over (thread-safe)."""
        loop = self._main_loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(call)
        elif running is not None:
            call()


def release_when_waiting(app: faust.App, gates: Iterable[OutageGate]) -> None:
    """Have ``gates`` tell ``app`` whenever one of their callers begins to wait (a no-op on a
    plain app)."""
    if isinstance(app, ReleasingApp):
        for gate in gates:
            gate.on_wait = app.release_if_releasing


def on_release(
    app: faust.App, release: Callable[[], object], resume: Callable[[], object] | None = None
) -> None:
    """Run ``release`` for as long as ``app`` waits for its agents' events, then ``resume``
    once its partitions are assigned again (a no-op on a plain app)."""
    releases = getattr(app, "release_hooks", None)
    resumes = getattr(app, "resume_hooks", None)
    if releases is not None:
        releases.append(release)
    if resumes is not None and resume is not None:
        resumes.append(resume)
