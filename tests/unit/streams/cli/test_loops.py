"""The long-running commands' event loop (streams/cli/loops.py): uvloop for every loop the
process makes once the policy is set, a thread's own loop included (Faust's consumer thread
makes its loop with asyncio.new_event_loop), and for the commands run with loops.run.

Each check runs in a Python process of its own: the policy is process-wide, and this test
process's loops are pytest-asyncio's."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def test_the_policy_makes_every_threads_loop_a_uvloop_one() -> None:
    out = run_python(
        """
        import asyncio, threading
        import uvloop
        from streams.cli import loops

        name = loops.use_fast_loop_policy()
        kinds = []

        def in_thread():  # as mode's ServiceThread makes its loop for Faust's consumer
            loop = asyncio.new_event_loop()
            kinds.append(isinstance(loop, uvloop.Loop))
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
        main = asyncio.new_event_loop()
        kinds.append(isinstance(main, uvloop.Loop))
        main.close()
        print(name.split()[0], kinds)
        """
    )
    assert out == "uvloop [True, True]"


def test_run_runs_the_coroutine_on_uvloop() -> None:
    out = run_python(
        """
        import asyncio
        import uvloop
        from streams.cli import loops

        async def which():
            return type(asyncio.get_running_loop()) is uvloop.Loop

        print(loops.run(which()))
        """
    )
    assert out == "True"


def test_without_uvloop_asyncio_is_used() -> None:
    out = run_python(
        """
        import asyncio, sys
        sys.modules["uvloop"] = None  # import uvloop now raises ImportError
        from streams.cli import loops

        async def which():
            return type(asyncio.get_running_loop()).__module__

        print(loops.use_fast_loop_policy(), loops.loop_factory(), loops.run(which()))
        """
    )
    assert out == "asyncio None asyncio.unix_events"
