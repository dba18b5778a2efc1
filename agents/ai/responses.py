"""Client for OpenAI's Responses API (``POST /responses``), with background mode.

``api: responses`` sends the request as the Responses API wants it (``input``,
``instructions``, ``text.format``, ``max_output_tokens``) and reads the answer from the
``output_text`` parts of the ``message`` items in ``output``.

With ``background: true`` a call can outlive the worker that made it. A synchronous call
killed while it waits (``kill -9``, an OOM, a lost node) leaves an answer that nobody
receives, and the event is paid again by whoever redoes it. Here instead:

1. the response is created with ``background: true``: the POST answers at once with its id;
2. before waiting, the id is written to the worker's state topic (the dedupe map,
   :mod:`agents.state.durable_map`: compacted, read whole by every worker, ``acks=all``) under
   a key made of the event's marker (flow, source, event id, replay) and a digest of the
   request, so a re-ask or another model is a request of its own;
3. ``GET /responses/{id}`` is polled with a growing pause until a final status.

Whoever redoes the event after a kill — the restarted worker or the partition's next owner —
finds the id under the same key and polls it instead of creating another response. For the
same reason a poll does not hold up a stop or a rebalance: once the id is on Kafka the event's
task leaves the AI stage's set of busy tasks (:meth:`ResponseIds.paying`), so the runner's
release (:meth:`agents.stages.runner.OrderedRunner.release`) lets go of it like an event that
only waits, and its partition's next owner polls the same id. The create and the write of its
id are never cut off: a response created and not recorded would be paid again. An id the
provider no longer knows (404: expired), or a response that failed or was cancelled, is
replaced by a new response (counted in ``hookstream_ai_background_total{outcome}``). A failed
poll (5xx, timeout) is a failed call for the retries, breaker and outage gate, and the next
attempt polls the same id again: nothing is created twice for one request.

The event's marker reaches the client through :data:`RESPONSE_IDS`, set by the AI stage for
the event's task; without it (``hookstream flow test``) nothing is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from agents import metrics
from agents.ai.http_client import HttpChatClient
from agents.ai.provider import STAGE, ChatRequest, Completion, schema_instruction
from agents.outbound.http import request_json
from schemas.errors import RemoteError, RetriableRemoteError

log = logging.getLogger(__name__)
FINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
# Answered: the text is the model's (an incomplete one too, e.g. cut at max_output_tokens;
# its validation decides), and it was paid for.
ANSWERED = frozenset({"completed", "incomplete"})
POLL_GROWTH = 1.5


class _Map(Protocol):
    def get(self, key: str) -> Any | None: ...

    async def put(self, writer: Any, key: str, value: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class ResponseIds:
    """Where one event's background response ids are kept: its marker, the durable map, and
    the writer that puts them there. ``calling``: the AI stage's set of tasks a release must
    let finish (:meth:`agents.stages.ai.AIStage.busy`); the client takes the event's task out
    of it while it only polls a response whose id is on Kafka (module docstring)."""

    marker: str
    store: _Map
    writer: Any
    calling: set[asyncio.Task[Any]] | None = None

    def paying(self, paying: bool) -> None:
        """Mark the current task as in a paid call (a create, and its id's write) or not."""
        task = asyncio.current_task()
        if self.calling is None or task is None:
            return
        if paying:
            self.calling.add(task)
        else:
            self.calling.discard(task)

    def key(self, payload: dict[str, Any]) -> str:
        digest = hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return f"responses/{self.marker}/{digest[:32]}"


RESPONSE_IDS: ContextVar[ResponseIds | None] = ContextVar("hookstream_response_ids", default=None)


class OpenAIResponses(HttpChatClient):
    path = "/responses"
    response_kind = "response"

    def _headers(self) -> dict[str, str]:
        if self.provider.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.provider.api_key.get_secret_value()}"}

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        mode = self.provider.structured_output
        instructions = request.system
        if mode == "instruction":
            instructions = f"{instructions}\n\n{schema_instruction(request)}".strip()
        payload: dict[str, Any] = {
            "model": request.model,
            "input": request.messages(),
            "temperature": request.temperature,
            "max_output_tokens": request.max_tokens,
        }
        if instructions:
            payload["instructions"] = instructions
        if mode == "json_schema":
            payload["text"] = {
                "format": {
                    "type": "json_schema",
                    "name": request.schema_name,
                    "schema": request.schema,
                    "strict": False,
                }
            }
        elif mode == "json_object":
            payload["text"] = {"format": {"type": "json_object"}}
        return payload

    def answer_text(self, body: Any) -> str:
        return answer_text(body)

    def token_usage(self, body: Any) -> tuple[int, int]:
        usage = body.get("usage") or {}
        return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))

    async def complete(self, request: ChatRequest) -> Completion:
        if not self.provider.background:
            return await super().complete(request)
        return await self._background(request)

    # -- background mode ----------------------------------------------------------------------

    async def _background(self, request: ChatRequest) -> Completion:
        started = time.perf_counter()
        payload = self.payload(request)
        ids = RESPONSE_IDS.get()
        key = ids.key(payload) if ids is not None else None
        body: dict[str, Any] | None = None
        found = ids.store.get(key) if ids is not None and key is not None else None
        if ids is not None and isinstance(found, dict) and isinstance(found.get("id"), str):
            ids.paying(False)  # only a poll of a recorded id: releasable
            body = await self._retrieve(found["id"], missing_ok=True)
            outcome = "resumed"
            if body is None:
                outcome = "expired"
            elif body.get("status") in ("failed", "cancelled"):
                outcome = str(body["status"])
                body = None
            self._count(outcome)
            log.info(
                "provider %s: response %s of %s %s",
                self.provider.name,
                found["id"],
                ids.marker if ids is not None else "?",
                "polled again, not paid twice" if body else f"{outcome}: creating a new one",
            )
        if body is None:
            if ids is not None:
                ids.paying(True)  # a create, then its id's write: never cut off
            body = await self._create(payload)
            if ids is not None and key is not None:
                # Durable before the wait: a kill from here on costs no second response.
                await ids.store.put(ids.writer, key, {"id": body["id"]})
                ids.paying(False)  # a release may let go of the poll: the id is on Kafka
        body = await self._until_final(body)
        return self.completion(body, request, (time.perf_counter() - started) * 1000)

    async def _create(self, payload: dict[str, Any]) -> dict[str, Any]:
        _, body = await request_json(
            self.session,
            "POST",
            self.url,
            stage=STAGE,
            what=f"provider {self.provider.name}",
            timeout_s=self.provider.timeout_s,
            headers=self._headers(),
            json_body={**payload, "background": True, "store": True},
        )
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise RetriableRemoteError(
                f"provider {self.provider.name}: malformed response (no id)", stage=STAGE
            )
        self._count("created")
        return body

    async def _retrieve(self, response_id: str, *, missing_ok: bool) -> dict[str, Any] | None:
        status, body = await request_json(
            self.session,
            "GET",
            f"{self.url}/{response_id}",
            stage=STAGE,
            what=f"provider {self.provider.name}",
            timeout_s=self.provider.timeout_s,
            headers=self._headers(),
            not_found_ok=True,
        )
        if status == 404:
            if missing_ok:
                return None
            raise RetriableRemoteError(
                f"provider {self.provider.name}: response {response_id} expired while polled "
                "(404); the next attempt creates a new one",
                stage=STAGE,
                status=404,
            )
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise RetriableRemoteError(
                f"provider {self.provider.name}: malformed response (no status)", stage=STAGE
            )
        return body

    async def _until_final(self, body: dict[str, Any]) -> dict[str, Any]:
        """Poll until a final status; a failed or cancelled response raises (retriable)."""
        config = self.provider
        response_id = body["id"]
        pause_s = config.background_poll_s
        deadline_s = time.monotonic() + config.background_timeout_s
        while body["status"] not in FINAL:
            if time.monotonic() >= deadline_s:
                await self._cancel(response_id)
                raise RetriableRemoteError(
                    f"provider {config.name}: response {response_id} still {body['status']} "
                    f"after background_timeout_s ({config.background_timeout_s:g} s); cancelled",
                    stage=STAGE,
                )
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * POLL_GROWTH, config.background_poll_max_s)
            found = await self._retrieve(response_id, missing_ok=False)
            assert found is not None  # noqa: S101 - missing_ok=False raises instead
            body = found
        if body["status"] not in ANSWERED:
            self._count(body["status"])
            error = body.get("error") or {}
            raise RetriableRemoteError(
                f"provider {config.name}: response {response_id} {body['status']}"
                f" ({error.get('code')}: {error.get('message')})",
                stage=STAGE,
            )
        return body

    async def _cancel(self, response_id: str) -> None:
        """Best effort: a cancel that fails leaves a response the provider finishes anyway."""
        try:
            await request_json(
                self.session,
                "POST",
                f"{self.url}/{response_id}/cancel",
                stage=STAGE,
                what=f"provider {self.provider.name}",
                timeout_s=self.provider.timeout_s,
                headers=self._headers(),
            )
        except RemoteError as exc:
            log.warning(
                "provider %s: cancel of %s failed: %s", self.provider.name, response_id, exc
            )
        self._count("timed_out")

    def _count(self, outcome: str) -> None:
        metrics.AI_BACKGROUND.labels(self.provider.name, outcome).inc()


def answer_text(body: Any) -> str:
    """The text of a response: its ``message`` items' ``output_text`` parts, joined.

    Raises TypeError when there is none (a refusal, or a body that is not a response)."""
    texts = [
        part["text"]
        for item in body["output"]
        if isinstance(item, dict) and item.get("type") == "message"
        for part in item.get("content") or ()
        if isinstance(part, dict)
        and part.get("type") == "output_text"
        and isinstance(part.get("text"), str)
    ]
    if not texts:
        raise TypeError(f"no output_text in a response with status {body.get('status')!r}")
    return "".join(texts)
