"""``hookstream console`` as a process for tests: started on a free port, its URL read from the
line it prints once it listens."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.support.stack import REPO_ROOT


@asynccontextmanager
async def running_console(
    config_path: Path, env: dict[str, str], log_path: Path, *extra: str
) -> AsyncIterator[str]:
    """A console on 127.0.0.1 (any free port) until the block ends; yields its URL."""
    args = ["console", "-c", str(config_path), "--port", "0", *extra]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streams.cli.main",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
            env=env,
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        match = re.search(rb"listening on (http://\S+)", line)
        assert match, f"the console did not start ({line!r}); its log: {log_path}"
        yield match.group(1).decode()
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
