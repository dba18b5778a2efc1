"""The public API is what ``streams`` exports, and importing the CLI does not load Kafka."""

from __future__ import annotations

import subprocess
import sys

import pytest

import streams
from schemas import errors, events
from streams import client


def test_every_exported_name_is_the_object_from_its_home_module() -> None:
    homes = {**vars(events), **vars(errors), **vars(client)}
    for name in streams.__all__:
        assert getattr(streams, name) is homes[name], name


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nosuch"):
        _ = streams.nosuch


def test_importing_the_cli_does_not_import_the_kafka_client() -> None:
    code = "import sys, streams.cli.main; print('aiokafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
