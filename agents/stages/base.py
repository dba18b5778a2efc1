"""What every stage handler shares: decoding its input, dead-lettering a failure.

A stage handler takes one Faust event (raw bytes in), does its stage's work with retries, and
either writes its output or dead-letters the record; it returns only when one of the two is on
Kafka, which is when :class:`agents.stages.runner.OrderedRunner` may ack it. A record that is
not valid JSON for its topic's model is dead-lettered too: bad input never stops a partition.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from agents.emit import dead_letter
from agents.outbound.retry import RetriesExhausted
from agents.resources import Resources
from schemas.config import HookstreamConfig
from schemas.errors import StageError
from schemas.topics import Topics

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class InvalidRecord(StageError):
    """A record on a hookstream topic is not what that topic holds; never retriable."""


def decode(model: type[M], raw: bytes | None, *, stage: str) -> M:
    try:
        return model.model_validate(orjson.loads(raw or b""))
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"value is not JSON: {exc}", stage=stage) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(value)"
        raise InvalidRecord(
            f"value is not a {model.__name__}: {where}: {first['msg']}", stage=stage
        ) from None


class Stage:
    name = ""

    def __init__(self, config: HookstreamConfig, resources: Resources) -> None:
        self.config = config
        self.resources = resources
        self.topics = Topics(config.kafka.topic_prefix)

    async def _fail(
        self, message: Any, error: BaseException, *, extra_headers: list[tuple[str, bytes]]
    ) -> BaseException:
        """Dead-letter ``message``; return the error its headers name (a retried operation's
        last one)."""
        if isinstance(error, RetriesExhausted):
            await dead_letter(
                self.resources.writer,
                self.topics.dlq,
                message,
                stage=self.name,
                error=error.last,
                attempts=error.attempts,
                first_failure_at=error.first_failure_at,
                last_failure_at=error.last_failure_at,
                extra_headers=extra_headers,
            )
            return error.last
        await dead_letter(
            self.resources.writer,
            self.topics.dlq,
            message,
            stage=self.name,
            error=error,
            attempts=1,
            extra_headers=extra_headers,
        )
        return error
