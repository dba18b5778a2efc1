"""Run a module or script under cProfile switched by signals: SIGUSR1 starts, SIGUSR2 stops
and writes the profile to ``$PROFILE_OUT``. For instructions.py's ``--profile``: the Python
functions behind a fixed number of requests, without the server's start-up.

    python bench/gateway/profiled.py streams.cli.main gateway -c bench.yaml
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
from types import FrameType


def main() -> None:
    profiler = cProfile.Profile()
    out = os.environ.get("PROFILE_OUT", "gateway.prof")

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(out)
        print(f"profile written to {out}", flush=True)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    target, *argv = sys.argv[1:]
    sys.argv = [target, *argv]
    if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
