"""A small CRM REST server standing in for the real CRM in the demo, the tests and the benchmarks.

The sinks' promise is "effectively once outside": the CRM sees each result once, with an
``Idempotency-Key``, in per-customer order. Proving that needs a CRM that remembers every update it
applied, in order, with its key: this one does, and exposes the log at ``/_sim/updates`` (with
``after=`` so tests can poll for new entries). Outages are simulated with ``fail_status`` (every
customer route answers e.g. 503 with Retry-After), ``rate_500``, ``latency_ms`` (before
handling) and ``response_latency_ms`` (after applying a write, before answering: a client killed
then has lost only the answer).

Like Stripe's API, it honours ``Idempotency-Key``: a write whose key it has applied before is not
applied again; it answers what the first one answered, with ``Idempotent-Replayed: true``, and
counts it in ``/_sim/stats`` (``idempotent_replays``). A client that never repeats a delivery
leaves that count at 0; one that repeats it after a crash changes nothing in the CRM.

Routes: ``GET|PUT|PATCH /customers/{id}``, ``POST /customers/{id}/notes``, ``GET /healthz``,
``GET|DELETE /_sim/updates``, ``GET /_sim/stats``, ``GET|POST /_sim/config``, ``POST /_sim/reset``.

Run: ``hookstream dev crm-sim --port 8092`` or ``python -m streams.dev.crm_sim``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from streams.dev._simcommon import (
    Handler,
    SimError,
    add_config_routes,
    add_server_args,
    bearer_middleware,
    error_middleware,
    json_response,
    read_json,
    serve_from_args,
    utc_now_iso,
)

CUSTOMERS_PREFIX = "/customers"

_FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia")
_LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
_COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli")
_PLANS = ("free", "starter", "pro", "enterprise")


def customer_id(index: int, width: int = 3) -> str:
    """``cus_001`` style ids; ``width`` grows for seeds of 1,000 customers and more."""
    return f"cus_{index:0{width}d}"


def seed_customers(count: int) -> dict[str, dict[str, Any]]:
    """``count`` customers whose fields depend only on their index, so tests can rely on them."""
    width = max(3, len(str(count)))
    customers: dict[str, dict[str, Any]] = {}
    for i in range(1, count + 1):
        first = _FIRST_NAMES[(i - 1) % len(_FIRST_NAMES)]
        last = _LAST_NAMES[(i - 1) % len(_LAST_NAMES)]
        company = _COMPANIES[(i - 1) % len(_COMPANIES)]
        cid = customer_id(i, width)
        customers[cid] = {
            "id": cid,
            "name": f"{first} {last}",
            "email": f"{first}.{last}{i}@{company}.example".lower(),
            "plan": _PLANS[(i - 1) % len(_PLANS)],
            "company": f"{company} Inc.",
            "notes": [],
        }
    return customers


class CRMSimSettings(BaseModel):
    """Server settings and fault knobs; the knobs are mutable at runtime via ``/_sim/config``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8092, ge=0, le=65535)
    api_key: SecretStr | None = None
    seed_customers: int = Field(default=20, ge=0, le=1_000_000)
    fail_status: int | None = Field(default=None, ge=400, le=599)
    fail_methods: list[str] | None = Field(
        default=None, description="Methods fail_status applies to (None: all), e.g. ['PUT']."
    )
    rate_500: float = Field(default=0.0, ge=0, le=1)
    latency_ms: float = Field(default=0.0, ge=0)
    response_latency_ms: float = Field(
        default=0.0, ge=0, description="Delay after applying a write, before answering it."
    )
    retry_after_s: int = Field(default=1, ge=0)
    seed: int = 0


RUNTIME_KNOBS = frozenset(
    {
        "fail_status",
        "fail_methods",
        "rate_500",
        "latency_ms",
        "response_latency_ms",
        "retry_after_s",
        "seed",
    }
)


class _CRMState:
    """Customers, the update log and counters of one running simulator."""

    def __init__(self, settings: CRMSimSettings) -> None:
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        self.customers = seed_customers(self.settings.seed_customers)
        self.updates: list[dict[str, Any]] = []
        self.by_status: Counter[str] = Counter()
        self.applied: dict[str, tuple[int, Any]] = {}  # Idempotency-Key → (status, answer)
        self.idempotent_replays = 0
        self.requests = 0
        self.rng = random.Random(self.settings.seed)  # noqa: S311 - fault injection, not crypto

    def record(self, request: web.Request, cid: str, body: Any) -> None:
        self.updates.append(
            {
                "seq": len(self.updates) + 1,
                "customer_id": cid,
                "method": request.method,
                "path": request.path,
                "body": body,
                "idempotency_key": request.headers.get("Idempotency-Key"),
                # The W3C trace context hookstream sends (tests/integration/test_tracing.py).
                "traceparent": request.headers.get("traceparent"),
                "received_at": utc_now_iso(),
            }
        )


STATE = web.AppKey("crm_sim_state", _CRMState)


def _retry_after(settings: CRMSimSettings, status: int) -> dict[str, str]:
    return {"Retry-After": str(settings.retry_after_s)} if status in (429, 503) else {}


@web.middleware
async def _faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency, then ``fail_status`` / ``rate_500``, on customer routes only; counts statuses."""
    if not request.path.startswith(CUSTOMERS_PREFIX):
        return await handler(request)
    state = request.app[STATE]
    settings = state.settings
    state.requests += 1
    status = 500
    try:
        fail = state.rng.random() < settings.rate_500  # drawn on arrival: order = arrival order
        if settings.latency_ms > 0:
            await asyncio.sleep(settings.latency_ms / 1000)
        methods = settings.fail_methods
        if settings.fail_status is not None and (methods is None or request.method in methods):
            raise SimError(
                settings.fail_status,
                f"simulated outage: every customer route answers {settings.fail_status}",
                type_="server_error",
                code="simulated_failure",
                headers=_retry_after(settings, settings.fail_status),
            )
        if fail:
            raise SimError(500, "simulated internal error", type_="server_error")
        response = await handler(request)
        status = response.status
        if settings.response_latency_ms > 0:
            # Applied already: a client that gives up now has lost only the answer (the case an
            # Idempotency-Key exists for).
            await asyncio.sleep(settings.response_latency_ms / 1000)
        return response
    except (SimError, web.HTTPException) as exc:
        status = exc.status
        raise
    finally:
        state.by_status[str(status)] += 1


async def _object_body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise SimError(422, "request body must be a JSON object", code="not_an_object")
    return body


async def _get_customer(request: web.Request) -> web.Response:
    cid = request.match_info["id"]
    record = request.app[STATE].customers.get(cid)
    if record is None:
        raise SimError(404, f"customer {cid} not found", code="customer_not_found")
    return json_response(record)


def _replayed(request: web.Request) -> web.Response | None:
    """The first answer again when this Idempotency-Key was applied before, else None."""
    state = request.app[STATE]
    key = request.headers.get("Idempotency-Key")
    if key is None or key not in state.applied:
        return None
    state.idempotent_replays += 1
    status, answer = state.applied[key]
    return json_response(answer, status=status, headers={"Idempotent-Replayed": "true"})


def _applied(request: web.Request, answer: Any, status: int = 200) -> web.Response:
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        request.app[STATE].applied[key] = (status, answer)
    return json_response(answer, status=status)


async def _merge_customer(request: web.Request) -> web.Response:
    """PUT and PATCH both merge the body's top-level keys into the record, creating it if new."""
    replayed = _replayed(request)
    if replayed is not None:
        return replayed
    state = request.app[STATE]
    cid = request.match_info["id"]
    body = await _object_body(request)
    record = state.customers.setdefault(cid, {"id": cid, "notes": []})
    record.update(body)
    record["id"] = cid  # the path names the record; a body cannot move it
    state.record(request, cid, body)
    return _applied(request, record)


async def _add_note(request: web.Request) -> web.Response:
    replayed = _replayed(request)
    if replayed is not None:
        return replayed
    state = request.app[STATE]
    cid = request.match_info["id"]
    body = await _object_body(request)
    record = state.customers.get(cid)
    if record is None:
        raise SimError(404, f"customer {cid} not found", code="customer_not_found")
    notes = record.setdefault("notes", [])
    note = {"id": f"note_{len(notes) + 1}", **body}
    notes.append(note)
    state.record(request, cid, body)
    return _applied(request, note, status=201)


async def _healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SimError(400, f"query parameter {name} must be an integer", code="bad_query") from exc
    if value < 0:
        raise SimError(400, f"query parameter {name} must be >= 0", code="bad_query")
    return value


async def _list_updates(request: web.Request) -> web.Response:
    """Updates with seq > ``after`` (optionally for one ``customer_id``), in seq order."""
    state = request.app[STATE]
    after = _int_query(request, "after", 0)
    cid = request.query.get("customer_id")
    updates = state.updates[after:]  # seq n sits at index n - 1
    if cid is not None:
        updates = [u for u in updates if u["customer_id"] == cid]
    return json_response({"updates": updates, "last_seq": len(state.updates)})


async def _clear_updates(request: web.Request) -> web.Response:
    """Empty the log; seq starts again at 1."""
    request.app[STATE].updates.clear()
    return json_response({"updates": [], "last_seq": 0})


async def _get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return json_response(
        {
            "requests": state.requests,
            "by_status": dict(state.by_status),
            "updates": len(state.updates),
            "customers": len(state.customers),
            "idempotent_replays": state.idempotent_replays,
        }
    )


async def _reset(request: web.Request) -> web.Response:
    """Back to the seeded customers, an empty log and zeroed counters (knobs are kept)."""
    request.app[STATE].reset()
    return await _get_stats(request)


def create_app(settings: CRMSimSettings) -> web.Application:
    """The simulator app; ``settings`` is kept (not copied) and changed by ``/_sim/config``."""
    app = web.Application(
        middlewares=[
            error_middleware,
            _faults_middleware,
            bearer_middleware(settings.api_key, (CUSTOMERS_PREFIX,)),
        ]
    )
    app[STATE] = _CRMState(settings)
    app.router.add_get("/customers/{id}", _get_customer)
    app.router.add_put("/customers/{id}", _merge_customer)
    app.router.add_patch("/customers/{id}", _merge_customer)
    app.router.add_post("/customers/{id}/notes", _add_note)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/_sim/updates", _list_updates)
    app.router.add_delete("/_sim/updates", _clear_updates)
    app.router.add_get("/_sim/stats", _get_stats)
    add_config_routes(app, STATE, RUNTIME_KNOBS)
    app.router.add_post("/_sim/reset", _reset)
    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookstream dev crm-sim",
        description="Small CRM REST simulator that logs every update it applies.",
    )
    add_server_args(parser, default_port=8092)
    parser.add_argument(
        "--seed-customers",
        type=int,
        default=20,
        metavar="N",
        help="create cus_001..cus_N at start (default %(default)s)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay on customer routes")
    parser.add_argument("--rate-500", type=float, default=0.0, help="share answered 500")
    parser.add_argument(
        "--fail-status", type=int, default=None, help="answer every customer route with it"
    )
    parser.add_argument("--retry-after-s", type=int, default=1, help="Retry-After with 429/503")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rate_500 RNG")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``hookstream dev crm-sim``: serve until SIGTERM/SIGINT; returns the exit status."""
    return serve_from_args(build_parser(), argv, CRMSimSettings, create_app, name="crm-sim")


if __name__ == "__main__":
    sys.exit(main())
