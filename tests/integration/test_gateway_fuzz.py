"""Schemathesis fuzzes the running gateway against its own /openapi.json.

Every answer must be documented (status, content type, body schema, Retry-After on 429/503),
and no input may produce a 5xx other than the documented 503. The gateway runs as the real
``hookstream gateway`` process on the real broker, with a source per signature scheme and per
guard, so generated headers reach every parser.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation.case import Case

from schemas.config_loader import load_config
from streams.gateway.openapi import build_openapi
from tests.integration.gateway_config import SECRETS, write_config
from tests.support.stack import REPO_ROOT

_LISTENING = re.compile(r"listening on (http://\S+)")


@pytest.fixture(scope="module")
def gateway_url(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("gwfuzz")
    config = write_config(workdir, kafka_bootstrap)
    log_path = workdir / "gateway.log"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(SECRETS)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli.main", "gateway", "-c", str(config), "-l", "warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
        )
    try:
        url = _wait_for_url(process, log_path)
        yield url
    finally:
        process.terminate()
        assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]


def _wait_for_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    for _ in range(900):
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the gateway did not start:\n{log_path.read_text()[-3000:]}")


def _document() -> dict[str, Any]:
    """The document the gateway serves (it depends only on the config's sources)."""
    directory = Path(tempfile.mkdtemp(prefix="gwfuzz-doc-"))
    try:
        return build_openapi(load_config(write_config(directory, "unused:9092"), env=SECRETS))
    finally:
        shutil.rmtree(directory)


# Loaded from the same builder the gateway serves, so collection needs no running server;
# test_the_served_document_is_the_fuzzed_one proves they are the same document.
schema = schemathesis.openapi.from_dict(_document())


def test_the_served_document_is_the_fuzzed_one(gateway_url: str) -> None:
    with urllib.request.urlopen(f"{gateway_url}/openapi.json", timeout=30) as response:  # noqa: S310
        assert json.loads(response.read()) == json.loads(json.dumps(_document()))


@schema.parametrize()
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_documented_and_no_5xx_but_503(case: Case[Any], gateway_url: str) -> None:
    response = case.call(base_url=gateway_url, timeout=30)
    assert response.status_code < 500 or response.status_code == 503, response.text
    # Documented status, content type, headers and body schema, and valid data accepted: each
    # source's body schema declares what it needs (the partition key of source 'keyed'), so a
    # schema-valid body is never refused with 400 (signed sources answer 401, which the check
    # allows for data it cannot sign). /webhooks/{source} takes any name, a configured one
    # too, whose body needs are on that source's own path: not held to the check there.
    any_name = case.operation.path == "/webhooks/{source}"
    case.validate_response(response, excluded_checks=[positive_data_acceptance] if any_name else [])
