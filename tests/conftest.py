"""Shared fixtures. Integration tests need the real broker: unreachable means failure, not skip."""

from __future__ import annotations

import os
import socket

import pytest

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def _reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker `make test` started (scripts/kafka), or the one the user pointed us at."""
    bootstrap = os.environ.get(BOOTSTRAP_ENV)
    if not bootstrap:
        pytest.fail(
            f"{BOOTSTRAP_ENV} is not set: run the tests with `make test`, which starts a local "
            "Apache Kafka broker, or point it at a broker"
        )
    if not _reachable(bootstrap):
        pytest.fail(f"the Kafka broker at {bootstrap} is not reachable")
    return bootstrap


# Tests of the validators built with Go (compose-go, Helm): on a machine without Go's caches the
# first build takes minutes, so they run last, while .ci/run builds the tools in the background.
GO_TOOL_TESTS = ("tests/integration/test_deploy_check.py", "tests/integration/test_scripts.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Integration tests are marked by their folder, so none can forget the marker; the tests
    of the Go-built validators go last (GO_TOOL_TESTS)."""
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.nodeid.startswith(GO_TOOL_TESTS))
