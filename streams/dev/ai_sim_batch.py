"""The AI simulator's batch APIs: OpenAI Files + Batch, and Anthropic Message Batches.

Shapes follow the providers' published references:

- OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``, a JSONL of ``{custom_id, method,
  url, body}``) answers a file object; ``POST /v1/batches`` ``{input_file_id, endpoint:
  "/v1/chat/completions", completion_window: "24h"}`` answers a batch object whose ``status``
  goes ``validating`` → ``in_progress`` → ``finalizing`` → ``completed`` (or ``failed`` for an
  invalid input file, ``expired``, ``cancelling`` → ``cancelled``) with ``request_counts
  {total, completed, failed}``; ``GET /v1/files/{id}/content`` gives the ``output_file_id``'s
  JSONL (``{id, custom_id, response: {status_code, request_id, body}, error: null}``) and the
  ``error_file_id``'s (``response: null, error: {code, message}``); ``POST
  /v1/batches/{id}/cancel``; ``GET /v1/batches?limit&after`` lists them, newest first.
- Anthropic: ``POST /v1/messages/batches`` ``{requests: [{custom_id, params}]}`` answers a
  ``message_batch`` whose ``processing_status`` goes ``in_progress`` → ``ended`` (``canceling``
  after ``POST .../cancel``) with ``request_counts {processing, succeeded, errored, canceled,
  expired}`` and, once ended, ``results_url``; ``GET .../results`` is a JSONL of ``{custom_id,
  result: {type: succeeded|errored|canceled|expired, message | error}}``; ``GET
  /v1/messages/batches?limit&after_id`` lists them, newest first.

Each line is answered by the same analysis as the synchronous routes. Knobs, at runtime through
``GET|POST /_sim/batch/config``: ``latency_s`` (from creation to the end of processing),
``fail_rate`` (share of lines that fail: a 500 error line), ``invalid_rate`` (share answered
with JSON that misses the schema's required fields: paid, but invalid), ``expire`` (jobs
created while set expire unprocessed), ``create_delay_s`` (the answer to a job's creation
comes that long after the job exists). Which line fails is drawn from a hash of the seed and
its ``custom_id``, so it does not depend on the order of the requests. ``GET /_sim/batch/stats``
counts the jobs submitted, the lines submitted and the paid lines (answered, valid or not).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from streams.dev._simcommon import (
    SimError,
    apply_settings,
    json_response,
    patched_settings,
    read_json,
)
from streams.dev.ai_sim_logic import (
    analyse,
    build_output,
    completion_body,
    messages_body,
    parse_chat_request,
    parse_messages_request,
)

COMPLETIONS_ENDPOINT = "/v1/chat/completions"
WINDOWS = frozenset({"24h"})
MAX_BODY_BYTES = 256 * 1024 * 1024  # Anthropic's limit on a batch request


class BatchSimSettings(BaseModel):
    """The batch APIs' knobs (all runtime: ``/_sim/batch/config``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    latency_s: float = Field(default=0.3, ge=0)
    fail_rate: float = Field(default=0.0, ge=0, le=1)
    invalid_rate: float = Field(default=0.0, ge=0, le=1)
    expire: bool = False
    seed: int = 0
    # The answer to a job's creation comes this long after the job exists: a client killed
    # meanwhile never learns its id (it finds it again by listing the jobs).
    create_delay_s: float = Field(default=0.0, ge=0)


KNOBS = frozenset(BatchSimSettings.model_fields)


@dataclass
class _Job:
    """One batch of either API; ``lines`` are (custom_id, request body)."""

    api: str  # "openai" | "anthropic"
    id: str
    lines: list[tuple[str, dict[str, Any]]]
    created_s: float
    ready_s: float
    expire: bool
    input_file_id: str = ""
    cancelled: bool = False
    finalizing_seen: bool = False
    # custom_id → ("succeeded" | "errored" | "canceled" | "expired", body or error message)
    outcomes: dict[str, tuple[str, Any]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class BatchState:
    def __init__(self) -> None:
        self.settings = BatchSimSettings()
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, _Job] = {}
        self.submitted: Counter[str] = Counter()  # jobs per API
        self.lines_submitted: Counter[str] = Counter()
        self.paid: Counter[str] = Counter()  # lines answered (and billed), per API
        self.custom_ids: Counter[str] = Counter()  # every custom_id ever submitted

    def stats(self) -> dict[str, Any]:
        return {
            "jobs_submitted": dict(self.submitted),
            "lines_submitted": dict(self.lines_submitted),
            "paid_requests": dict(self.paid),
            "custom_ids_submitted_twice": sorted(k for k, n in self.custom_ids.items() if n > 1),
            "jobs": [
                {"api": job.api, "id": job.id, "lines": len(job.lines), "status": _status(job)}
                for job in self.jobs.values()
            ],
        }

    def _draw(self, custom_id: str) -> float:
        digest = hashlib.sha256(f"{self.settings.seed}:{custom_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    def process(self, job: _Job) -> None:
        """Answer every line once (at the end of processing): the job's outcomes."""
        if job.outcomes is not None:
            return
        outcomes: dict[str, tuple[str, Any]] = {}
        s = self.settings
        for custom_id, body in job.lines:
            if job.cancelled:
                outcomes[custom_id] = ("canceled", None)
                continue
            if job.expire:
                outcomes[custom_id] = ("expired", None)
                continue
            u = self._draw(custom_id)
            if u < s.fail_rate:
                outcomes[custom_id] = ("errored", "The server had an error (simulated).")
                continue
            try:
                answer = _answer(job.api, body, invalid=u < s.fail_rate + s.invalid_rate)
            except SimError as exc:  # the synchronous route's 400: not answered, not paid
                outcomes[custom_id] = ("errored", exc.message)
                continue
            outcomes[custom_id] = ("succeeded", answer)
            self.paid[job.api] += 1
        job.outcomes = outcomes


BATCH_STATE = web.AppKey("ai_sim_batch_state", BatchState)


def _answer(api: str, body: dict[str, Any], *, invalid: bool) -> dict[str, Any]:
    """The synchronous route's answer to one line's request body."""
    chat = parse_chat_request(body) if api == "openai" else parse_messages_request(body)
    output = {} if invalid else build_output(chat.schema, analyse(chat.user_text))
    digest = hashlib.sha256(orjson.dumps([chat.model, chat.texts])).hexdigest()
    if api == "openai":
        return completion_body(chat, orjson.dumps(output).decode(), digest)
    tool = body.get("tool_choice", {}).get("name", "") if chat.schema is not None else ""
    if chat.schema is None:
        return messages_body(chat, None, orjson.dumps(output).decode(), tool, digest)
    return messages_body(chat, output, None, tool, digest)


def _status(job: _Job) -> str:
    """Where the job is now, by the clock (processing ends at ``ready_s``)."""
    done = job.outcomes is not None
    if job.api == "anthropic":
        if done:
            return "ended"
        return "canceling" if job.cancelled else "in_progress"
    if job.cancelled:
        return "cancelled" if done else "cancelling"
    if done:
        return "expired" if job.expire else "completed"
    now = time.monotonic()
    if now < job.created_s + (job.ready_s - job.created_s) / 4:
        return "validating"
    return "in_progress" if now < job.ready_s else "finalizing"


def _advance(state: BatchState, job: _Job) -> None:
    """Processing ends on the first look after ``ready_s`` (OpenAI shows ``finalizing`` once
    first), or at once when cancelled."""
    if job.outcomes is not None:
        return
    if job.cancelled:
        state.process(job)
        return
    if time.monotonic() < job.ready_s:
        return
    if job.api == "openai" and not job.finalizing_seen and not job.expire:
        job.finalizing_seen = True
        return
    state.process(job)


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _wall(job: _Job, monotonic_s: float) -> int:
    return int(time.time() - (time.monotonic() - monotonic_s))


# --- OpenAI ---------------------------------------------------------------------------------


def _openai_counts(job: _Job) -> dict[str, int]:
    outcomes = job.outcomes or {}
    completed = sum(1 for kind, _ in outcomes.values() if kind == "succeeded")
    failed = sum(1 for kind, _ in outcomes.values() if kind == "errored")
    return {"total": len(job.lines), "completed": completed, "failed": failed}


def _openai_batch(state: BatchState, job: _Job) -> dict[str, Any]:
    status = _status(job)
    created = _wall(job, job.created_s)
    body: dict[str, Any] = {
        "id": job.id,
        "object": "batch",
        "endpoint": COMPLETIONS_ENDPOINT,
        "errors": None,
        "input_file_id": job.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created,
        "in_progress_at": created,
        "expires_at": created + 24 * 3600,
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": _openai_counts(job),
        "metadata": job.metadata or None,
    }
    if job.outcomes is not None:
        ended = int(time.time())
        body[{"completed": "completed_at", "expired": "expired_at"}.get(status, "cancelled_at")] = (
            ended
        )
        outputs, errors = _openai_files(job)
        if outputs:
            body["output_file_id"] = _file_for(state, f"{job.id}-output", outputs)
        if errors:
            body["error_file_id"] = _file_for(state, f"{job.id}-errors", errors)
    return body


def _openai_files(job: _Job) -> tuple[bytes, bytes]:
    outputs, errors = bytearray(), bytearray()
    for custom_id, (kind, answer) in (job.outcomes or {}).items():
        line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id}
        if kind == "succeeded":
            line["response"] = {
                "status_code": 200,
                "request_id": uuid.uuid4().hex,
                "body": answer,
            }
            line["error"] = None
            outputs += orjson.dumps(line) + b"\n"
            continue
        code = {"errored": "server_error", "expired": "batch_expired"}.get(kind, "batch_cancelled")
        message = answer or f"This line was not processed: the batch is {kind} (simulated)."
        line["response"] = None
        line["error"] = {"code": code, "message": message}
        errors += orjson.dumps(line) + b"\n"
    return bytes(outputs), bytes(errors)


def _file_for(state: BatchState, key: str, content: bytes) -> str:
    file_id = f"file-{hashlib.sha256(key.encode()).hexdigest()[:24]}"
    state.files.setdefault(file_id, content)
    return file_id


async def _upload(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    form = await request.post()
    purpose = form.get("purpose")
    upload = form.get("file")
    if purpose != "batch":
        raise SimError(400, f"purpose must be 'batch' here, not {purpose!r}.")
    if not isinstance(upload, web.FileField):
        raise SimError(400, "'file' must be a file part of the multipart body.")
    content = upload.file.read()
    file_id = f"file-{uuid.uuid4().hex[:24]}"
    state.files[file_id] = content
    return json_response(
        {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": upload.filename,
            "purpose": "batch",
        }
    )


async def _file_content(request: web.Request) -> web.Response:
    content = request.app[BATCH_STATE].files.get(request.match_info["file_id"])
    if content is None:
        raise SimError(404, "No such File object.", type_="invalid_request_error")
    return web.Response(body=content, content_type="application/octet-stream")


def _parse_input(content: bytes) -> list[tuple[str, dict[str, Any]]]:
    lines: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SimError(400, f"line {number} is not JSON.") from None
        custom_id = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(custom_id, str) or custom_id in seen:
            raise SimError(400, f"line {number}: custom_id missing or not unique.")
        if line.get("method") != "POST" or line.get("url") != COMPLETIONS_ENDPOINT:
            raise SimError(400, f"line {number}: method must be POST, url {COMPLETIONS_ENDPOINT}.")
        if not isinstance(line.get("body"), dict):
            raise SimError(400, f"line {number}: body must be an object.")
        seen.add(custom_id)
        lines.append((custom_id, line["body"]))
    if not lines:
        raise SimError(400, "the input file has no requests.")
    return lines


def _new_job(state: BatchState, api: str, prefix: str, lines: list[Any]) -> _Job:
    now = time.monotonic()
    s = state.settings
    job = _Job(api, f"{prefix}{uuid.uuid4().hex[:24]}", lines, now, now + s.latency_s, s.expire)
    state.jobs[job.id] = job
    state.submitted[api] += 1
    state.lines_submitted[api] += len(lines)
    state.custom_ids.update(f"{api}:{custom_id}" for custom_id, _ in lines)
    return job


async def _created(state: BatchState) -> None:
    """The job exists; its creator hears of it after ``create_delay_s``."""
    if state.settings.create_delay_s:
        await asyncio.sleep(state.settings.create_delay_s)


def _page(request: web.Request, api: str) -> tuple[list[_Job], bool]:
    """The API's jobs, newest first, after ``after_id`` (OpenAI: ``after``), ``limit`` of them."""
    jobs = [job for job in reversed(request.app[BATCH_STATE].jobs.values()) if job.api == api]
    after = request.query.get("after" if api == "openai" else "after_id")
    if after:
        ids = [job.id for job in jobs]
        jobs = jobs[ids.index(after) + 1 :] if after in ids else []
    try:
        limit = min(max(int(request.query.get("limit", "20")), 1), 100)
    except ValueError:
        raise SimError(400, "limit must be a whole number from 1 to 100.") from None
    return jobs[:limit], len(jobs) > limit


async def _list_batches(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    jobs, more = _page(request, "openai")
    data = [_openai_batch(state, job) for job in jobs]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


async def _list_message_batches(request: web.Request) -> web.Response:
    jobs, more = _page(request, "anthropic")
    data = [_anthropic_batch(job) for job in jobs]
    return json_response(
        {
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


async def _create_batch(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    data = await read_json(request)
    if not isinstance(data, dict):
        raise SimError(400, "the body must be a JSON object.")
    if data.get("endpoint") != COMPLETIONS_ENDPOINT:
        raise SimError(400, f"endpoint must be {COMPLETIONS_ENDPOINT}.")
    if data.get("completion_window") not in WINDOWS:
        raise SimError(400, "completion_window must be '24h'.")
    content = state.files.get(str(data.get("input_file_id")))
    if content is None:
        raise SimError(404, "No such File object.")
    lines = _parse_input(content)
    job = _new_job(state, "openai", "batch_", lines)
    job.input_file_id = str(data["input_file_id"])
    metadata = data.get("metadata")
    job.metadata = metadata if isinstance(metadata, dict) else {}
    await _created(state)
    return json_response(_openai_batch(state, job))


def _job(request: web.Request, api: str) -> _Job:
    job = request.app[BATCH_STATE].jobs.get(request.match_info["batch_id"])
    if job is None or job.api != api:
        raise SimError(404, "No such batch.", type_="not_found_error")
    return job


async def _get_batch(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    job = _job(request, "openai")
    _advance(state, job)
    return json_response(_openai_batch(state, job))


async def _cancel_batch(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    job = _job(request, "openai")
    if job.outcomes is None:
        job.cancelled = True
    return json_response(_openai_batch(state, job))


# --- Anthropic ------------------------------------------------------------------------------


def _anthropic_batch(job: _Job) -> dict[str, Any]:
    counts = Counter(kind for kind, _ in (job.outcomes or {}).values())
    created = _wall(job, job.created_s)
    ended = job.outcomes is not None
    return {
        "id": job.id,
        "type": "message_batch",
        "processing_status": _status(job),
        "request_counts": {
            "processing": 0 if ended else len(job.lines),
            "succeeded": counts["succeeded"],
            "errored": counts["errored"],
            "canceled": counts["canceled"],
            "expired": counts["expired"],
        },
        "ended_at": _iso(time.time()) if ended else None,
        "created_at": _iso(created),
        "expires_at": _iso(created + 24 * 3600),
        "archived_at": None,
        "cancel_initiated_at": _iso(time.time()) if job.cancelled else None,
        "results_url": f"/v1/messages/batches/{job.id}/results" if ended else None,
    }


async def _create_message_batch(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    data = await read_json(request)
    requests = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(requests, list) or not requests:
        raise SimError(
            400, "requests: a non-empty list is required.", type_="invalid_request_error"
        )
    lines: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or custom_id in seen or not isinstance(params, dict):
            raise SimError(
                400,
                f"requests.{index}: a unique custom_id and params are required.",
                type_="invalid_request_error",
            )
        seen.add(custom_id)
        lines.append((custom_id, params))
    job = _new_job(state, "anthropic", "msgbatch_", lines)
    await _created(state)
    return json_response(_anthropic_batch(job))


async def _get_message_batch(request: web.Request) -> web.Response:
    job = _job(request, "anthropic")
    _advance(request.app[BATCH_STATE], job)
    return json_response(_anthropic_batch(job))


async def _cancel_message_batch(request: web.Request) -> web.Response:
    job = _job(request, "anthropic")
    if job.outcomes is None:
        job.cancelled = True
    return json_response(_anthropic_batch(job))


async def _message_batch_results(request: web.Request) -> web.Response:
    job = _job(request, "anthropic")
    if job.outcomes is None:
        raise SimError(400, "the batch has not ended yet.", type_="invalid_request_error")
    out = bytearray()
    for custom_id, (kind, answer) in job.outcomes.items():
        result: dict[str, Any] = {"type": kind}
        if kind == "succeeded":
            result["message"] = answer
        elif kind == "errored":
            result["error"] = {"type": "error", "error": {"type": "api_error", "message": answer}}
        out += orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"
    return web.Response(body=bytes(out), content_type="application/binary")


# --- control --------------------------------------------------------------------------------


async def _stats(request: web.Request) -> web.Response:
    return json_response(request.app[BATCH_STATE].stats())


async def _reset(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    state.reset()
    return json_response(state.stats())


async def _get_config(request: web.Request) -> web.Response:
    return json_response(request.app[BATCH_STATE].settings.model_dump())


async def _post_config(request: web.Request) -> web.Response:
    state = request.app[BATCH_STATE]
    patch = await read_json(request)
    apply_settings(state.settings, patched_settings(state.settings, patch, KNOBS), frozenset(patch))
    if "latency_s" in patch:  # jobs still processing end by the new latency
        for job in state.jobs.values():
            job.ready_s = job.created_s + state.settings.latency_s
    return json_response(state.settings.model_dump())


def install(app: web.Application) -> None:
    """Add the batch routes and their state to the simulator's app (:mod:`streams.dev.ai_sim`)."""

    app[BATCH_STATE] = BatchState()
    app.router.add_post("/v1/files", _upload)
    app.router.add_get("/v1/files/{file_id}/content", _file_content)
    app.router.add_post("/v1/batches", _create_batch)
    app.router.add_get("/v1/batches", _list_batches)
    app.router.add_get("/v1/batches/{batch_id}", _get_batch)
    app.router.add_post("/v1/batches/{batch_id}/cancel", _cancel_batch)
    app.router.add_post("/v1/messages/batches", _create_message_batch)
    app.router.add_get("/v1/messages/batches", _list_message_batches)
    app.router.add_get("/v1/messages/batches/{batch_id}", _get_message_batch)
    app.router.add_post("/v1/messages/batches/{batch_id}/cancel", _cancel_message_batch)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", _message_batch_results)
    app.router.add_get("/_sim/batch/stats", _stats)
    app.router.add_post("/_sim/batch/reset", _reset)
    app.router.add_get("/_sim/batch/config", _get_config)
    app.router.add_post("/_sim/batch/config", _post_config)
