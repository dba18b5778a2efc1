"""Starting the servers of apps.py, and reading a server's CPU time and memory from /proc.

Shared by run.py (throughput) and protections.py (attacks). A server may be more than one
process (granian runs its worker in a child of the process started here), so CPU and memory
are summed over the started process and its descendants.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PY = sys.executable

# name -> what it is, for the results' tables
LABELS = {
    "hookstream": "hookstream's own layer (streams.http.server.HttpServer, httptools), uvloop",
    "aiohttp": "aiohttp web.Application, one POST route, uvloop",
    "uvicorn": "uvicorn, ASGI app, http=httptools, loop=uvloop",
    "granian-asgi": "granian, ASGI app, --http 1 --workers 1 --loop uvloop",
    "granian-rsgi": "granian, RSGI app (its own interface), --http 1 --workers 1 --loop uvloop",
}
NAMES = tuple(LABELS)


def command(name: str, port: int) -> list[str]:
    """The command line that serves ``name`` on ``port``; one process (or worker) each."""
    if name.startswith("granian-"):
        interface = name.removeprefix("granian-")
        return [
            PY,
            "-m",
            "granian",
            "--interface",
            interface,
            "--http",
            "1",
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--no-ws",
            "--log-level",
            "warning",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            f"apps:{interface}_app",
        ]
    return [PY, str(HERE / "apps.py"), name, "--port", str(port)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return tree_pids(self.process.pid)

    def cpu_s(self) -> float:
        return sum(process_cpu_s(pid) for pid in self.pids())

    def rss_bytes(self) -> int:
        return sum(process_rss_bytes(pid) for pid in self.pids())

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_file is not None:
            self._log_file.close()


def code_tree(revision: str, work: Path) -> tuple[Path, str]:
    """hookstream's ``schemas`` and ``streams`` as of ``revision``, unpacked under ``work``,
    and the commit: to measure a committed layer while the work tree changes under us."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = work / f"code-{commit[:12]}"
    target.mkdir(exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "schemas", "streams"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target, commit


def start(
    name: str, work: Path, *, cpus: set[int] | None = None, code: Path | None = None
) -> Server:
    """Start ``name`` on a free port, pinned to ``cpus`` (children inherit it), and wait
    until it accepts connections. ``code``: where hookstream's packages are imported from
    (code_tree), instead of the work tree."""
    port = free_port()
    log = work / f"{name}-{port}.log"
    log_file = log.open("wb")
    args = command(name, port)
    if cpus:
        args = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *args]
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(code or REPO)]),
    }
    process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=HERE)
    server = Server(name, process, port, log, log_file)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        time.sleep(0.3)  # granian: its worker may still be setting up behind the socket
        return server
    server.stop()
    raise SystemExit(f"bench: {name} did not start; log:\n{log.read_text(errors='replace')}")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc/<pid>/task/<tid>/children)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{current}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
    return found


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_bytes(pid: int) -> int:
    """Resident memory of a process now (VmRSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
