"""The gateway's line per accepted webhook: its level, sampling and event fields
(gateway.log_accepted, gateway.log_accepted_sample_rate)."""

from __future__ import annotations

import logging
import random
from typing import Any, cast

import pytest
from aiokafka.structs import RecordMetadata

from schemas.config import HookstreamConfig
from streams.gateway.ingest import EncodedEvent
from streams.gateway.routes import Gateway
from streams.kafka.batch_writer import BatchingKafkaWriter

EVENT = EncodedEvent("wh-1", "helpdesk", "ticket.created", "cus_1", b"{}", "trace-1")
PLACE = RecordMetadata("p.events", 3, None, 41, -1, 0, -1)


def gateway(**settings: Any) -> Gateway:
    config = HookstreamConfig.model_validate(
        {"sources": [{"name": "helpdesk", "signature": {"scheme": "none"}}], "gateway": settings}
    )
    return Gateway(config, cast(BatchingKafkaWriter, None))


def accepted(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("accepted ")]


def test_by_default_it_is_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    default = gateway()
    with caplog.at_level(logging.INFO, "streams.gateway.routes"):
        default._log_accepted(EVENT, PLACE)
    assert accepted(caplog) == []
    with caplog.at_level(logging.DEBUG, "streams.gateway.routes"):
        default._log_accepted(EVENT, PLACE)
    (line,) = accepted(caplog)
    assert line.levelno == logging.DEBUG
    assert line.getMessage() == "accepted helpdesk/wh-1 -> p.events[3]@41"
    fields = line.__dict__
    assert (fields["event_id"], fields["trace_id"], fields["source"]) == (
        "wh-1",
        "trace-1",
        "helpdesk",
    )


def test_info_logs_each_and_off_none(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, "streams.gateway.routes"):
        for _ in range(3):
            gateway(log_accepted="info")._log_accepted(EVENT, PLACE)
            gateway(log_accepted="off")._log_accepted(EVENT, PLACE)
    assert [line.levelno for line in accepted(caplog)] == [logging.INFO] * 3


def test_a_sample_rate_logs_about_that_share(caplog: pytest.LogCaptureFixture) -> None:
    sampled = gateway(log_accepted="info", log_accepted_sample_rate=0.1)
    random.seed(13)
    with caplog.at_level(logging.INFO, "streams.gateway.routes"):
        for _ in range(2000):
            sampled._log_accepted(EVENT, PLACE)
    assert 120 < len(accepted(caplog)) < 280  # 200 expected; 6 standard deviations either side


@pytest.mark.parametrize("rate", [0, 1.5])
def test_a_rate_outside_0_to_1_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="log_accepted_sample_rate"):
        gateway(log_accepted_sample_rate=rate)
