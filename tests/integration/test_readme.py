"""README.md, run as written: every shell and Python block, on the real broker.

Each fenced block of the README carries a tag in its info string (```` ```sh readme:install ````);
GitHub shows only the language. The tests here find every block, refuse one that is runnable
and untagged or whose tag nothing here runs, and run each tagged block the way a newcomer
would: the quickstart in order, in one environment that every command passes on to the next
(so ``. .venv/bin/activate`` and ``export`` carry over), with the commands ending in ``&``
started as background processes, exactly as written, and waited for until they say they serve.

The only liberties, both from outside the commands: the environment names a uuid topic prefix
(``HOOKSTREAM_TOPIC_PREFIX``, which examples/flows.yaml reads) and the shared broker
(``KAFKA_BOOTSTRAP_SERVERS``, which ``make kafka-up`` and the config honour), and the three
well-known ports of the quickstart (8080 gateway, 8091 AI simulator, 8092 CRM simulator) are
replaced by free ones in the commands and in the config's environment, so that runs on one
machine do not collide. ``test_the_quickstart_ports_are_the_configs_defaults`` holds the
README's ports to the config's defaults, so that this remapping cannot hide a mismatch.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from schemas.config_loader import load_config
from schemas.config_sinks import HttpSinkConfig
from streams.dev.ai_sim_logic import analyse
from tests.support.kafka import read_all

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
VENV_BIN = REPO / ".venv" / "bin"
EXAMPLE = REPO / "examples" / "flows.yaml"

# The blocks this file runs (or, for ``text``, compares with what a command printed).
COVERED = {
    "readme:two-commands",
    "readme:demo-output",
    "readme:install",
    "readme:services",
    "readme:webhook",
    "readme:see",
    "readme:publish",
    "readme:pubsub",
    "readme:check",
}
RUNNABLE = {"sh", "bash", "shell", "console", "python", "py"}
# The quickstart's well-known ports and the variables of examples/flows.yaml that point at them.
PORTS = {"gateway": 8080, "ai": 8091, "crm": 8092}
# Variables the README's commands must set themselves (or a run here would prove nothing).
README_SETS = ("HELPDESK_WEBHOOK_SECRET", "PAYMENTS_WEBHOOK_SECRET", "AI_API_KEY")
# Variables of the user's environment that would change what the README's commands do.
UNSET = (
    *README_SETS,
    "HOOKSTREAM_CONFIG",
    "HOOKSTREAM_AI_MODEL",
    "HOOKSTREAM_GATEWAY_HOST",
    "HOOKSTREAM_ALLOW_PRIVATE_NETWORKS",
    "HOOKSTREAM_PRODUCE_TIMEOUT_S",
    "VIRTUAL_ENV",
)
READY = re.compile(r" listening on http://\S+|\[\^Worker\]: Ready")
FOREGROUND_TIMEOUT_S = 180.0
READY_TIMEOUT_S = 120.0

_FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_BACKGROUND = re.compile(r"^(?P<command>.*?\S)\s+&\s*(?:#.*)?$")


@dataclass(frozen=True)
class Block:
    language: str
    tag: str | None
    text: str
    line: int

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.language} {self.tag or 'untagged'})"


def readme_blocks() -> list[Block]:
    """Every fenced block of the README, with its language and ``readme:`` tag."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        words = match.group(1).split()
        language = words[0] if words else ""
        tags = [w for w in words[1:] if w.startswith("readme:")]
        line = text.count("\n", 0, match.start()) + 1
        assert len(tags) <= 1, f"README.md:{line}: one readme: tag per block, not {tags}"
        blocks.append(Block(language, tags[0] if tags else None, match.group(2), line))
    return blocks


def block(tag: str) -> Block:
    (found,) = [b for b in readme_blocks() if b.tag == tag]
    return found


def commands(text: str) -> list[str]:
    """The block's commands: continuation lines joined, blank and comment lines skipped."""
    result: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        result.append(pending + raw)
        pending = ""
    assert not pending, f"a command ends in a backslash: {pending!r}"
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Terminal:
    """One newcomer's terminal: foreground commands run in bash, each in the environment the
    commands before it left (``env -0`` after each); ``&`` commands become background processes
    whose output goes to a log file, waited for until they print that they serve."""

    def __init__(self, env: Mapping[str, str], workdir: Path, ports: Mapping[int, int]) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.ports = ports
        self.background: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def remap(self, command: str) -> str:
        return re.sub(
            r"\b(" + "|".join(str(p) for p in self.ports) + r")\b",
            lambda m: str(self.ports[int(m.group(1))]),
            command,
        )

    def run(self, command: str, *, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
        """Run one README command; fail the test with its output if it exits non-zero."""
        state = self.workdir / "env.bin"
        script = f"{self.remap(command)}\n__readme_rc=$?\nenv -0 > {state}\nexit $__readme_rc\n"
        try:
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", script],
                env=self.env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=FOREGROUND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{command!r} did not finish in {FOREGROUND_TIMEOUT_S} s:\n{exc.stdout!r}")
        assert done.returncode == 0, (
            f"{command!r} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n"
            f"{done.stderr}{self.logs()}"
        )
        entries = state.read_bytes().split(b"\0")
        self.env = dict(e.decode().split("=", 1) for e in entries if b"=" in e)
        return done

    def start(self, command: str) -> None:
        """Start a ``cmd &`` line as written and wait until it says it serves."""
        match = _BACKGROUND.match(command)
        assert match, f"{command!r}: the README starts its services with a trailing &"
        name = f"bg{len(self.background)}"
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", "exec " + self.remap(match.group("command"))],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.background.append((command, process, log_path))
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not READY.search(log_path.read_text(errors="replace")):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{command!r} did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)

    def stop(self) -> dict[str, int]:
        """SIGTERM every background process, newest first, as ``kill $(jobs -p)`` would."""
        codes = {}
        for command, process, _ in reversed(self.background):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                codes[command] = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[command] = process.wait()
        return codes

    def logs(self) -> str:
        return "".join(
            f"\n--- {command} (last lines):\n{path.read_text(errors='replace')[-2000:]}"
            for command, _, path in self.background
        )


@pytest.fixture
def terminal(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Terminal]:
    ports = {PORTS[name]: free_port() for name in PORTS}
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN
    )
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(
        PATH=path,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        HOOKSTREAM_TOPIC_PREFIX=f"readme{uuid.uuid4().hex[:10]}",
        HOOKSTREAM_STATE_DIR=str(tmp_path / "state"),
        HOOKSTREAM_GATEWAY_PORT=str(ports[PORTS["gateway"]]),
        HOOKSTREAM_AI_BASE_URL=f"http://127.0.0.1:{ports[PORTS['ai']]}/v1",
        HOOKSTREAM_CRM_URL=f"http://127.0.0.1:{ports[PORTS['crm']]}",
    )
    shell = Terminal(env, tmp_path, ports)
    try:
        yield shell
    finally:
        shell.stop()


def quoted(pattern: str, text: str) -> str:
    """The one group of ``pattern`` in ``text`` (a value the README writes in a command)."""
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in {text!r}"
    return match.group(1)


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


# --- which blocks there are ----------------------------------------------------------------


def test_every_block_is_tagged_and_run_here() -> None:
    blocks = readme_blocks()
    assert blocks, "no fenced blocks found in README.md"
    for b in blocks:
        if b.language in RUNNABLE or b.tag is not None:
            assert b.tag in COVERED, f"{b.where}: tag it with one of {sorted(COVERED)}"
        else:
            assert b.language == "text", f"{b.where}: a block that is not run is ```text"
    tags = [b.tag for b in blocks if b.tag]
    assert len(tags) == len(set(tags)), f"a tag is used twice: {tags}"
    assert set(tags) == COVERED, f"run here but not in the README: {COVERED - set(tags)}"


def test_every_make_target_and_hookstream_command_named_exists() -> None:
    """Inline mentions too: each ``make X`` is a target, each ``hookstream a b`` a command."""
    text = README.read_text(encoding="utf-8")
    targets = set(re.findall(r"\bmake ([a-z][a-z-]*)", text))
    assert {"demo", "test", "venv", "kafka-up", "kafka-down", "lint"} <= targets
    defined = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    assert targets <= defined, f"no such make target: {sorted(targets - defined)}"
    mentioned = set(re.findall(r"`hookstream((?: [a-z][a-z-]*)+)", text))
    assert mentioned, "the README names no hookstream command"
    hookstream = VENV_BIN / "hookstream"
    for words in sorted(mentioned):
        argv = words.split()
        while argv:  # "hookstream dlq list -c …": the longest prefix that is a command
            help_run = subprocess.run(
                [str(hookstream), *argv, "--help"],
                capture_output=True,
                text=True,
                check=False,
            )
            if help_run.returncode == 0:
                break
            argv.pop()
        assert argv, f"`hookstream{words}` names no hookstream command"


def test_every_relative_link_exists() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "the README links to no file"
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_the_quickstart_ports_are_the_configs_defaults() -> None:
    """The ports the README's commands use are those examples/flows.yaml uses by default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSTREAM_")}
    env.update(dict.fromkeys(README_SETS, "x"))
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    config = load_config(EXAMPLE, env=env)
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"  # where `make kafka-up` listens
    assert config.kafka.topic_prefix == "hookstream"  # the snippet's default
    assert config.gateway.port == PORTS["gateway"]
    assert config.providers[0].base_url == f"http://127.0.0.1:{PORTS['ai']}/v1"
    crm_urls = {s.url for f in config.flows for s in f.sinks if isinstance(s, HttpSinkConfig)}
    assert crm_urls
    assert all(u.startswith(f"http://127.0.0.1:{PORTS['crm']}/") for u in crm_urls), crm_urls
    services = "\n".join(commands(block("readme:services").text))
    assert f"ai-sim --port {PORTS['ai']} &" in services
    assert f"crm-sim --port {PORTS['crm']} &" in services
    assert f"{PORTS['crm']}/customers/" in block("readme:see").text
    snippet = block("readme:pubsub").text
    assert '"KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"' in snippet
    assert '"HOOKSTREAM_TOPIC_PREFIX", "hookstream"' in snippet


# --- the two commands ----------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_make_demo_prints_what_the_readme_shows(terminal: Terminal) -> None:
    """``make demo`` runs for real; ``make test`` is what runs this test, so it is checked
    as a target that runs pytest (``make -n``) rather than run from inside itself."""
    two = commands(block("readme:two-commands").text)
    assert [c.split("#")[0].strip() for c in two] == ["make demo", "make test"]
    demo = terminal.run(two[0])
    printed = demo.stdout + demo.stderr
    for line in block("readme:demo-output").text.splitlines():
        assert " ".join(line.split()) in " ".join(printed.split()), (
            f"make demo did not print {line!r}; it printed:\n{printed}"
        )
    dry = subprocess.run(
        ["make", "-n", "test"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-m pytest" in dry.stdout


# --- the quickstart ------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_quickstart(terminal: Terminal, kafka_bootstrap: str) -> None:
    prefix = terminal.env["HOOKSTREAM_TOPIC_PREFIX"]
    crm_url = terminal.env["HOOKSTREAM_CRM_URL"]

    # 1. Install, broker, secrets: afterwards `hookstream` is the repo's and the secrets are set.
    install = commands(block("readme:install").text)
    outputs = [terminal.run(c) for c in install]
    assert shutil.which("hookstream", path=terminal.env["PATH"]) == str(VENV_BIN / "hookstream")
    assert all(terminal.env.get(name) for name in README_SETS)
    assert "ok" in outputs[-1].stdout + outputs[-1].stderr

    # 2. The simulators and the three processes, each as the README starts it.
    services = commands(block("readme:services").text)
    assert len(services) == 5
    for command in services:
        terminal.start(command)

    # 3. A signed webhook: the printed curl command posts to our gateway; run, it gets a 202.
    sign, post = commands(block("readme:webhook").text)
    printed = terminal.run(sign).stdout
    assert printed.startswith("curl ")
    assert "--data-binary" in printed
    assert f":{terminal.env['HOOKSTREAM_GATEWAY_PORT']}/webhooks/helpdesk" in printed
    answer = json.loads(terminal.run(post).stdout)
    assert answer["source"] == "helpdesk"
    assert answer["type"] == "ticket.created"
    assert answer["id"].startswith("sha256:")

    # 4. What became of it: the model's result, the CRM's receipt, the CRM's record.
    bug_ticket = json.loads((REPO / "examples/webhooks/helpdesk-02-bug.json").read_text())
    expected_bug = analyse(bug_ticket["message"])
    results, receipts, customer = commands(block("readme:see").text)
    result = json.loads(terminal.run(results).stdout)
    assert result["topic"] == f"{prefix}.results"
    assert result["key"] == "cus_002"
    assert result["value"]["event"]["id"] == answer["id"]
    assert result["value"]["output"] == {
        "sentiment": expected_bug.sentiment,
        "category": expected_bug.category,
        "summary": expected_bug.summary,
    }
    assert (expected_bug.sentiment, expected_bug.category) == ("negative", "bug")  # as it says
    receipt = json.loads(terminal.run(receipts).stdout)["value"]
    assert (receipt["sink"], receipt["status"]) == ("crm", 200)
    record = json.loads(terminal.run(customer).stdout)
    assert record["last_feedback_sentiment"] == "negative"
    assert record["last_feedback_ticket"] == bug_ticket["ticket_id"]

    # 5. Publish from the shell, then from Python; each gets its result.
    publish, tail_key = commands(block("readme:publish").text)
    published = terminal.run(publish)
    assert f"published 1 event(s) to {prefix}.events" in published.stderr
    line = json.loads(quoted(r"'(\{.*\})'", publish))
    shown = [json.loads(x) for x in terminal.run(tail_key).stdout.splitlines() if x.strip()]
    assert len(shown) == 1, shown
    assert shown[0]["key"] == line["customer_id"]
    assert shown[0]["value"]["output"]["summary"] == analyse(line["message"]).summary

    snippet = block("readme:pubsub").text
    (terminal.workdir / "pubsub.py").write_text(snippet, encoding="utf-8")
    printed_output = terminal.run("python pubsub.py", cwd=terminal.workdir).stdout
    message = quoted(r'"message": "([^"]+)"', snippet)
    expected_sso = analyse(message)
    assert (expected_sso.sentiment, expected_sso.category) == ("positive", "feature_request")
    assert ast.literal_eval(printed_output.strip().splitlines()[-1]) == {
        "sentiment": expected_sso.sentiment,
        "category": expected_sso.category,
        "summary": expected_sso.summary,
    }

    # 6. Nothing failed: the README's check, then the CRM got all three updates, and no record
    #    of this run is a dead letter (the example's CRM sink needs data.ticket_id: all have it).
    (check,) = commands(block("readme:check").text)
    checked = terminal.run(check)
    assert "0 dead letter(s)" in checked.stdout + checked.stderr
    tickets = {
        "cus_002": bug_ticket["ticket_id"],
        line["customer_id"]: line["ticket_id"],
        "cus_004": quoted(r'"ticket_id": "([^"]+)"', snippet),
    }
    deadline = time.monotonic() + 60
    updates: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        updates = http_json(f"{crm_url}/_sim/updates?after=0")["updates"]
        if len(updates) >= len(tickets):
            break
        time.sleep(0.2)
    assert {u["customer_id"]: u["body"]["last_feedback_ticket"] for u in updates} == tickets
    assert not asyncio.run(read_all(kafka_bootstrap, f"{prefix}.dlq"))

    # `kill $(jobs -p)`: each process stops on SIGTERM, cleanly.
    codes = terminal.stop()
    assert all(code == 0 for code in codes.values()), f"{codes}{terminal.logs()}"
