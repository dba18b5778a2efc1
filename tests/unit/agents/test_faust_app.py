"""ReleasingApp: the release runs in the app's loop, repeated until the partitions are back.

aiokafka calls ``on_rebalance_start`` in Faust's consumer thread, while the runners (and their
asyncio tasks) live in the app's loop: cancelling a task from another thread is not safe, so the
release is handed over. It is repeated while Faust may wait, because an event busy at the first
release can wait again later (the outage gate's probe); it ends when the partitions are assigned.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from agents import faust_app
from agents.faust_app import ReleasingApp, on_release, release_when_waiting
from agents.outbound.gate import OutageGate
from tests.unit.agents.stages.test_runner import until


def _app() -> ReleasingApp:
    return ReleasingApp(
        "hookstream-release-unit",
        broker="kafka://127.0.0.1:9",
        store="memory://",
        web_enabled=False,
        autodiscover=False,
    )


async def test_a_rebalance_started_in_the_consumer_thread_releases_in_the_apps_loop() -> None:
    app = _app()
    app._main_loop = asyncio.get_running_loop()  # what on_start records
    threads: list[threading.Thread] = []
    resumed: list[bool] = []
    on_release(
        app, lambda: threads.append(threading.current_thread()), lambda: resumed.append(True)
    )

    async def consumer_thread() -> None:  # aiokafka's listener runs in a loop of its own
        app.on_rebalance_start()

    thread = threading.Thread(target=asyncio.run, args=(consumer_thread(),), name="consumer")
    thread.start()
    thread.join()
    await until(lambda: len(threads) >= 3)  # released, then again while Faust may wait
    assert set(threads) == {threading.current_thread()}  # always in the app's loop
    assert app.releasing
    assert not resumed

    app.stop_releasing()  # what the next assignment does
    assert not app.releasing
    assert resumed == [True]
    app.stop_releasing(resume=False)  # at shutdown: nothing to resume
    assert resumed == [True]


async def test_a_gate_caller_beginning_to_wait_releases_at_once_while_releasing() -> None:
    """A retry's pause can be shorter than the repeat: the gate says when a caller waits."""
    app = _app()
    releases: list[int] = []
    on_release(app, lambda: releases.append(1))
    gate = OutageGate("unit", backoff_s=0.05, backoff_max_s=1)
    release_when_waiting(app, [gate])
    await gate.sleep(0)
    assert releases == []  # not releasing: a wait is just a wait
    app.start_releasing()
    assert releases == [1]
    await gate.sleep(0)
    assert releases[:2] == [1, 1]
    app.stop_releasing()


class _Message:
    def __init__(self, *, acked: bool) -> None:
        self.acked = acked


class _Consumer:
    def __init__(self, *messages: _Message) -> None:
        self._unacked_messages = set(messages)


def _watched(monkeypatch: pytest.MonkeyPatch, consumer: object) -> tuple[ReleasingApp, list[int]]:
    """An app whose stop watch ticks every ms and fires after 5 ms quiet; the calls it made."""
    monkeypatch.setattr(faust_app, "_WATCH_EVERY_S", 0.001)
    monkeypatch.setattr(faust_app, "STOP_AFTER_EVENTS_S", 0.005)
    app = _app()
    calls: list[int] = []
    app.on_stuck_stop = lambda: calls.append(1)
    app._consumer = consumer  # type: ignore[assignment]
    return app, calls


async def test_a_stop_stuck_after_its_events_are_done_ends_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Faust's last offset commit can wait without end after a broker restart: once no event
    # is in flight for STOP_AFTER_EVENTS_S, the app calls on_stuck_stop (the CLI exits). An
    # event still in flight (a model call the stop lets finish) holds the clock back.
    in_model_call = _Message(acked=False)
    app, calls = _watched(monkeypatch, _Consumer(_Message(acked=True), in_model_call))
    watch = asyncio.ensure_future(app._watch_stop())
    for _ in range(50):
        await asyncio.sleep(0.002)
    assert calls == []
    assert not watch.done()
    in_model_call.acked = True
    await asyncio.wait_for(watch, 10)
    assert calls == [1]


async def test_a_stop_is_never_cut_short_when_what_is_in_flight_cannot_be_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Faust whose consumer keeps no _unacked_messages: the watch gives up, it never exits.
    app, calls = _watched(monkeypatch, object())
    await asyncio.wait_for(app._watch_stop(), 10)
    assert calls == []
