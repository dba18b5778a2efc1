"""The providers' batch APIs: many requests in one job, answered within 24 h at half price.

- OpenAI (``kind: openai``): the requests are uploaded as a JSONL file (``POST /files``,
  ``purpose=batch``; one ``{custom_id, method: POST, url: /v1/chat/completions, body}`` a line,
  ``body`` exactly what :class:`~agents.ai.openai.OpenAIChat` would send), then ``POST
  /batches`` creates the job; ``GET /batches/{id}`` is polled until ``completed``, ``failed``,
  ``expired`` or ``cancelled``, and the ``output_file_id`` / ``error_file_id`` contents are the
  answers and the failed lines.
- Anthropic (``kind: anthropic``): ``POST /messages/batches`` with ``{requests: [{custom_id,
  params}]}`` (``params``: :class:`~agents.ai.anthropic.AnthropicMessages`' body), polled
  until ``processing_status: ended``, then ``GET /messages/batches/{id}/results``.

Both end in the same :class:`LineResult` per ``custom_id``: the answer's text and usage, or
the line's error (a failed line, or one the job never answered: expired, cancelled). A job the
provider did not answer for (the request failed) raises :class:`~schemas.errors.RemoteError`
like any call; nothing here retries a submission (:mod:`streams.ops.replay_batch` records a
job's id before it waits, and a submission is never repeated).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import aiohttp
import orjson

from agents.ai.anthropic import AnthropicMessages
from agents.ai.http_client import HttpChatClient
from agents.ai.openai import OpenAIChat
from agents.ai.provider import STAGE, ChatRequest
from agents.outbound.http import RETRIABLE_STATUSES, request_json
from schemas.config_ai import ProviderConfig
from schemas.errors import PermanentRemoteError, RetriableRemoteError, ToolError
from schemas.events import TokenUsage

COMPLETIONS_ENDPOINT = "/v1/chat/completions"
OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A job's state as the provider reports it; ``ended``: no line will change any more."""

    state: str
    ended: bool
    counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class LineResult:
    """One request's outcome: ``content`` and ``usage`` when answered, else ``error``."""

    custom_id: str
    content: str | None = None
    model: str = ""
    usage: TokenUsage | None = None
    error: str | None = None


class BatchAPI(Protocol):
    provider: ProviderConfig

    async def submit(
        self,
        lines: Sequence[tuple[str, ChatRequest]],
        label: str,
        intent_at: tuple[float, float] | None = None,
    ) -> str:
        """Submit one job; ``intent_at``: when its intent was journaled (monotonic and wall
        seconds), to refuse a creation later than :meth:`_Base._in_time` allows."""
        ...

    async def status(self, job_id: str) -> JobStatus: ...

    async def results(self, job_id: str) -> dict[str, LineResult]: ...

    async def find(self, label: str, lines: int, since_s: float, known: set[str]) -> str | None:
        """The id of a job submitted as ``label`` (``lines`` requests, not before ``since_s``,
        epoch seconds) whose creation's answer was lost; None when the provider has none."""
        ...

    def submit_within_s(self) -> float:
        """The longest a ``submit`` can take before it gives up (its requests' timeouts)."""
        ...


# The floors of a batch API request's timeout (a JSON call; an upload or a file's content).
JSON_TIMEOUT_FLOOR_S = 60.0
FILE_TIMEOUT_FLOOR_S = 120.0
# A provider's clock and ours may differ; a job found by listing may be this much older.
CLOCK_SKEW_S = 300.0


class _Base:
    def __init__(self, chat: HttpChatClient, session: aiohttp.ClientSession) -> None:
        self.chat = chat
        self.provider = chat.provider
        self.session = session
        self.root = self.provider.base_url.rstrip("/")
        self.what = f"provider {self.provider.name} (batch API)"

    def submit_within_s(self) -> float:
        """An upload then a create (OpenAI; Anthropic's one create takes less), each bounded
        by its request's timeout: after this long a submission begun is done or abandoned."""
        return self._file_timeout_s() + self._json_timeout_s()

    def _file_timeout_s(self) -> float:
        configured = self.provider.batch_timeout_s
        return configured or max(self.provider.timeout_s, FILE_TIMEOUT_FLOOR_S)

    def _json_timeout_s(self) -> float:
        configured = self.provider.batch_timeout_s
        return configured or max(self.provider.timeout_s, JSON_TIMEOUT_FLOOR_S)

    def _in_time(self, label: str, intent_at: tuple[float, float] | None) -> None:
        """Refuse to create job ``label`` once one file timeout has passed since its intent
        was journaled (``intent_at``: monotonic and wall-clock seconds, taken before the
        journal write). A batcher fenced meanwhile has a successor that lists the provider's
        jobs ``submit_within_s`` after it started (later than the intent): a create that
        leaves within one file timeout of the intent has ended (one JSON timeout more) by
        then, so the successor finds the job instead of submitting its requests again; one
        that would leave later is not sent. The larger of the two clocks' readings counts: a
        frozen VM's monotonic clock may not advance."""
        if intent_at is None:
            return
        monotonic_s, wall_s = intent_at
        elapsed_s = max(time.monotonic() - monotonic_s, time.time() - wall_s)
        limit_s = self._file_timeout_s()
        if elapsed_s > limit_s:
            raise ToolError(
                f"{self.what}: job {label} not created: {elapsed_s:.1f} s since its intent "
                f"was journaled, more than the {limit_s:g} s a batcher taking over waits "
                "before it looks for the job (was this process paused?); nothing was "
                "submitted, the next run submits its requests once"
            )

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        _, answer = await request_json(
            self.session,
            method,
            self.root + path,
            stage=STAGE,
            what=self.what,
            timeout_s=self._json_timeout_s(),
            headers=self.chat._headers(),
            json_body=body,
        )
        if not isinstance(answer, dict):
            raise RetriableRemoteError(f"{self.what}: {path} answered no JSON object", stage=STAGE)
        return answer

    async def _bytes(self, method: str, path: str, data: Any = None) -> bytes:
        """A request whose answer is not JSON (a file's content, a JSONL), or whose body is
        multipart: what :func:`~agents.outbound.http.request_json` does not cover."""
        try:
            async with self.session.request(
                method,
                self.root + path,
                data=data,
                headers=self.chat._headers(),
                timeout=aiohttp.ClientTimeout(total=self._file_timeout_s()),
            ) as response:
                raw = await response.read()
                if 200 <= response.status < 300:
                    return raw
                text = raw.decode(errors="replace")[:300]
                message = f"{self.what}: {path}: HTTP {response.status}: {text}"
                if response.status in RETRIABLE_STATUSES:
                    raise RetriableRemoteError(message, stage=STAGE, status=response.status)
                raise PermanentRemoteError(message, stage=STAGE, status=response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetriableRemoteError(f"{self.what}: {path}: {exc!r}", stage=STAGE) from exc

    def _answered(self, custom_id: str, body: Any) -> LineResult:
        try:
            content = self.chat.answer_text(body)
            prompt_tokens, completion_tokens = self.chat.token_usage(body)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return LineResult(custom_id, error=f"malformed answer ({exc})")
        usage = TokenUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )
        model = str(body.get("model") or "") if isinstance(body, dict) else ""
        return LineResult(custom_id, content=content, model=model, usage=usage)


def _jsonl(raw: bytes) -> list[dict[str, Any]]:
    lines = []
    for line in raw.splitlines():
        if line.strip():
            parsed = orjson.loads(line)
            if isinstance(parsed, dict):
                lines.append(parsed)
    return lines


class OpenAIBatch(_Base):
    """OpenAI's Files + Batch API."""

    def __init__(self, provider: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(OpenAIChat(provider, session), session)

    async def submit(
        self,
        lines: Sequence[tuple[str, ChatRequest]],
        label: str,
        intent_at: tuple[float, float] | None = None,
    ) -> str:
        jsonl = b"".join(
            orjson.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": COMPLETIONS_ENDPOINT,
                    "body": self.chat.payload(request),
                }
            )
            + b"\n"
            for custom_id, request in lines
        )
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", jsonl, filename=f"{label}.jsonl", content_type="application/jsonl")
        uploaded = orjson.loads(await self._bytes("POST", "/files", form))
        self._in_time(label, intent_at)  # an uploaded file costs nothing; a job is paid
        batch = await self._json(
            "POST",
            "/batches",
            {
                "input_file_id": uploaded["id"],
                "endpoint": COMPLETIONS_ENDPOINT,
                "completion_window": "24h",
                "metadata": {"hookstream_job": label},
            },
        )
        return str(batch["id"])

    async def status(self, job_id: str) -> JobStatus:
        batch = await self._json("GET", f"/batches/{job_id}")
        state = str(batch.get("status"))
        counts = batch.get("request_counts") or {}
        return JobStatus(state, state in OPENAI_ENDED, {k: int(v) for k, v in counts.items()})

    async def find(self, label: str, lines: int, since_s: float, known: set[str]) -> str | None:
        """By the ``metadata.hookstream_job`` the submission set, newest jobs first, back to
        ``since_s`` (less the skew)."""
        del lines, known  # the label is exact
        after = ""
        while True:
            page = await self._json("GET", f"/batches?limit=100{after}")
            for batch in page.get("data") or []:
                if (batch.get("metadata") or {}).get("hookstream_job") == label:
                    return str(batch["id"])
                if float(batch.get("created_at") or 0) < since_s - CLOCK_SKEW_S:
                    return None
            if not page.get("has_more") or not page.get("last_id"):
                return None
            after = f"&after={page['last_id']}"

    async def results(self, job_id: str) -> dict[str, LineResult]:
        batch = await self._json("GET", f"/batches/{job_id}")
        found: dict[str, LineResult] = {}
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            if not file_id:
                continue
            for line in _jsonl(await self._bytes("GET", f"/files/{file_id}/content")):
                custom_id = str(line.get("custom_id"))
                response = line.get("response") or {}
                error = line.get("error")
                if not error and response.get("status_code") == 200:
                    found[custom_id] = self._answered(custom_id, response.get("body"))
                    continue
                detail = error or (response.get("body") or {}).get("error") or response
                found[custom_id] = LineResult(custom_id, error=_error_text(detail))
        return found


class AnthropicBatch(_Base):
    """Anthropic's Message Batches API."""

    def __init__(self, provider: ProviderConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(AnthropicMessages(provider, session), session)

    async def submit(
        self,
        lines: Sequence[tuple[str, ChatRequest]],
        label: str,
        intent_at: tuple[float, float] | None = None,
    ) -> str:
        # Serialized before the deadline check: what follows it is only the request's send.
        body = orjson.Fragment(
            orjson.dumps(
                {
                    "requests": [
                        {"custom_id": custom_id, "params": self.chat.payload(request)}
                        for custom_id, request in lines
                    ]
                }
            )
        )
        self._in_time(label, intent_at)  # the label itself: a message batch has no metadata
        return str((await self._json("POST", "/messages/batches", body))["id"])

    async def find(self, label: str, lines: int, since_s: float, known: set[str]) -> str | None:
        """A message batch has no metadata: the oldest job not ``known`` created since
        ``since_s`` (less the skew) with exactly ``lines`` requests. Its answers are kept only
        for the custom ids the job record lists, so a wrong match answers nothing."""
        del label
        found: str | None = None
        after = ""
        while True:
            page = await self._json("GET", f"/messages/batches?limit=100{after}")
            for batch in page.get("data") or []:
                created_s = datetime.fromisoformat(str(batch.get("created_at"))).timestamp()
                if created_s < since_s - CLOCK_SKEW_S:
                    return found
                counts = batch.get("request_counts") or {}
                if batch.get("id") not in known and sum(counts.values()) == lines:
                    found = str(batch["id"])  # newest first: the last match is the oldest
            if not page.get("has_more") or not page.get("last_id"):
                return found
            after = f"&after_id={page['last_id']}"

    async def status(self, job_id: str) -> JobStatus:
        batch = await self._json("GET", f"/messages/batches/{job_id}")
        state = str(batch.get("processing_status"))
        counts = batch.get("request_counts") or {}
        return JobStatus(state, state == "ended", {k: int(v) for k, v in counts.items()})

    async def results(self, job_id: str) -> dict[str, LineResult]:
        found: dict[str, LineResult] = {}
        raw = await self._bytes("GET", f"/messages/batches/{job_id}/results")
        for line in _jsonl(raw):
            custom_id = str(line.get("custom_id"))
            result = line.get("result") or {}
            kind = result.get("type")
            if kind == "succeeded":
                found[custom_id] = self._answered(custom_id, result.get("message"))
            else:
                detail = result.get("error") or {}
                text = _error_text(detail.get("error", detail)) if detail else ""
                found[custom_id] = LineResult(
                    custom_id, error=f"{kind}{': ' + text if text else ''}"
                )
        return found


def _error_text(detail: Any) -> str:
    if isinstance(detail, dict):
        code = detail.get("code") or detail.get("type") or ""
        message = detail.get("message") or ""
        return f"{code}: {message}".strip(": ") or orjson.dumps(detail).decode()[:300]
    return str(detail)[:300]


def batch_api_for(provider: ProviderConfig, session: aiohttp.ClientSession) -> BatchAPI:
    """The batch API of ``provider``'s kind."""
    if provider.kind == "anthropic":
        return AnthropicBatch(provider, session)
    return OpenAIBatch(provider, session)
