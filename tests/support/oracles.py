"""The senders' Node SDKs (tests/oracles) as oracles for the signature presets.

Shopify, Linear and Intercom ship no webhook verifier on PyPI, but Shopify's and Linear's
official Node SDKs verify, and Intercom's ``X-Hub-Signature: sha1=`` is the header Octokit's
methods verify; tests/oracles/verify.mjs runs them. They are installed by ``make oracles``
(``npm ci``, part of ``make test`` and ``make unit``). A missing ``node`` or an uninstalled
tests/oracles is a failure that says how to fix it, never a skip: the presets would go
untested.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ORACLES_DIR = Path(__file__).resolve().parents[1] / "oracles"
SCRIPT = ORACLES_DIR / "verify.mjs"
TIMEOUT_S = 60.0


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node (20.19 or newer) is not on PATH: the signature oracles need it", pytrace=False
        )
    if not (ORACLES_DIR / "node_modules").is_dir():
        pytest.fail(
            f"{ORACLES_DIR}/node_modules is missing: run `make oracles` (npm ci)", pytrace=False
        )
    return node


def ask(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answers of the Node oracles to ``checks`` (each with ``body`` as bytes), in order; one
    Node process for all of them."""
    wire = [
        {**{k: v for k, v in check.items() if k != "body"}, "body_b64": _b64(check["body"])}
        for check in checks
    ]
    done = subprocess.run(
        [_node(), str(SCRIPT)],
        input=json.dumps(wire).encode(),
        capture_output=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{SCRIPT} exited {done.returncode}: {done.stderr.decode()[-2000:]}", pytrace=False
        )
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(answers) == len(checks)
    return answers


def valid(oracle: str, secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """One check: does the sender's SDK accept this request?"""
    (answer,) = ask([{"oracle": oracle, "secret": secret, "body": body, "headers": headers}])
    return bool(answer["valid"])


def _b64(body: bytes) -> str:
    return base64.b64encode(body).decode()
