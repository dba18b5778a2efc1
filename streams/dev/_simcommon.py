"""Plumbing shared by the development simulators (:mod:`streams.dev.ai_sim`, :mod:`.crm_sim`).

Both simulators are real HTTP servers in their own processes, so tests, the demo and benchmarks
talk to them exactly as they would to the real services. What they share lives here: the JSON
error shape, bearer-token checks, reading a JSON body, runtime-config patching and the serve loop
that prints the one ``<name> listening on http://HOST:PORT`` line launchers wait for.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, SecretStr, ValidationError

from streams.http.ports import is_listen_error, listen_hint, port_type

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SettingsT = TypeVar("SettingsT", bound=BaseModel)

# The ``hookstream`` command's exit statuses (streams.cli.exits, which this layer may not
# import; a unit test holds them equal): bad input, and a port that cannot be listened on.
EXIT_BAD_INPUT = 2
EXIT_CANNOT_LISTEN = 5

# Handlers may sleep for seconds (simulated latency); a stop must not wait for all of them.
_SHUTDOWN_TIMEOUT_S = 0.5
# Thousands of clients may connect at once in benchmarks; the default backlog of 128 drops SYNs.
_LISTEN_BACKLOG = 4096


class SimError(Exception):
    """An HTTP error answer, raised anywhere in a handler and rendered by :func:`error_middleware`.

    Raising keeps the handlers straight-line: validation helpers do not need to return
    "value or response" unions.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.code = code
        self.headers = dict(headers or {})


def error_body(message: str, *, type_: str, code: str | None) -> dict[str, Any]:
    """The OpenAI error shape; the CRM simulator uses it too, so clients parse one shape."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer encoded with orjson (the stdlib encoder is the hot spot under load)."""
    return web.Response(
        body=orjson.dumps(data), status=status, headers=headers, content_type="application/json"
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`SimError` into its JSON answer."""
    try:
        return await handler(request)
    except SimError as exc:
        return json_response(
            error_body(exc.message, type_=exc.type_, code=exc.code),
            status=exc.status,
            headers=exc.headers,
        )


def bearer_middleware(api_key: SecretStr | None, prefixes: tuple[str, ...]) -> Middleware:
    """Require ``Authorization: Bearer <api_key>`` on paths under ``prefixes`` (if a key is set).

    Control routes (``/_sim/*``, ``/healthz``) stay open so tests can inspect a locked simulator.
    """
    expected = b"Bearer " + api_key.get_secret_value().encode() if api_key is not None else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.path.startswith(prefixes):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise SimError(
                    401,
                    "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                    code="invalid_api_key",
                )
        return await handler(request)

    return middleware


async def read_json(request: web.Request) -> Any:
    """The request body parsed as JSON; 400 when it is not JSON."""
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SimError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc


def utc_now_iso() -> str:
    """Wall-clock time for records, ISO 8601 in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def patched_settings(current: SettingsT, patch: Any, allowed: frozenset[str]) -> SettingsT:
    """Validate ``patch`` (a JSON object of runtime knobs) against ``current``; 400 if invalid.

    The whole merged model is validated before anything changes, so a rejected request leaves
    the running configuration untouched.
    """
    if not isinstance(patch, dict):
        raise SimError(400, "config body must be a JSON object", code="invalid_config")
    unknown = sorted(set(patch) - allowed)
    if unknown:
        raise SimError(
            400,
            f"unknown config keys {unknown}; allowed: {sorted(allowed)}",
            code="invalid_config",
        )
    merged = {**current.model_dump(), **patch}
    try:
        return type(current).model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SimError(400, f"invalid config: {problems}", code="invalid_config") from exc


def apply_settings(target: BaseModel, source: BaseModel, names: frozenset[str]) -> None:
    """Copy validated knobs into the live settings object shared with the handlers."""
    for name in names:
        setattr(target, name, getattr(source, name))


def add_config_routes(app: web.Application, key: web.AppKey[Any], knobs: frozenset[str]) -> None:
    """``GET``/``POST /_sim/config``: read or change the runtime ``knobs`` of the state at ``key``.

    The state holds the live ``settings``; a new ``seed`` also restarts its fault sequence
    (``rng``), so a test can replay the same faults.
    """

    async def get_config(request: web.Request) -> web.Response:
        return json_response(request.app[key].settings.model_dump(include=set(knobs)))

    async def post_config(request: web.Request) -> web.Response:
        state = request.app[key]
        patch = await read_json(request)
        new = patched_settings(state.settings, patch, knobs)
        apply_settings(state.settings, new, frozenset(patch))
        if "seed" in patch:
            state.rng = random.Random(new.seed)  # noqa: S311 - fault injection, not crypto
        return json_response(state.settings.model_dump(include=set(knobs)))

    app.router.add_get("/_sim/config", get_config)
    app.router.add_post("/_sim/config", post_config)


def add_server_args(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """``--host``, ``--port`` and ``--api-key-env``, common to both simulators."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=port_type(any_free=True),
        default=default_port,
        help="port; 0 picks a free one (default %(default)s)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="require 'Authorization: Bearer <value of VAR>' on the API routes",
    )


def api_key_from_env(parser: argparse.ArgumentParser, var: str | None) -> SecretStr | None:
    """The key named by ``--api-key-env``; a missing variable is a usage error, not "no auth"."""
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        parser.error(f"--api-key-env: environment variable {var} is not set or empty")
    return SecretStr(value)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(app: web.Application, *, host: str, port: int, name: str) -> None:
    """Serve ``app`` until SIGTERM/SIGINT; first print the "listening" line with the real port."""
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            host,
            port,
            backlog=_LISTEN_BACKLOG,
            reuse_address=True,
        )
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"{name} listening on http://{_url_host(bound_host)}:{bound_port}", flush=True)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        logger.info("%s stopping", name)
    finally:
        await runner.cleanup()


def run(app: web.Application, *, host: str, port: int, name: str, prog: str) -> int:
    """Blocking entry point used by the simulators' ``main``; returns the exit status.

    A port it cannot listen on is one line on stderr and exit 5, as for ``hookstream
    gateway``; a host that is not an address at all is bad input (exit 2).
    """
    import socket

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        asyncio.run(serve(app, host=host, port=port, name=name))
    except socket.gaierror as exc:
        print(f"{prog}: --host {host!r}: not a host name or address here ({exc})", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if not is_listen_error(exc):
            raise
        print(f"{prog}: {listen_hint(host, port, exc, option='--port')}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    except KeyboardInterrupt:  # between loop start and the signal handlers being set
        return 0
    return 0


def serve_from_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    settings_type: type[SettingsT],
    create_app: Callable[[SettingsT], web.Application],
    *,
    name: str,
) -> int:
    """A simulator's whole ``main``: flags → settings model → serve until SIGTERM/SIGINT.

    Every flag named like a settings field sets it (``--latency-ms`` → ``latency_ms``);
    ``--api-key-env`` becomes ``api_key``. Invalid values are usage errors (exit 2).
    """
    args = vars(parser.parse_args(argv))
    fields = {k: v for k, v in args.items() if k in settings_type.model_fields}
    if "api_key" in settings_type.model_fields:
        fields["api_key"] = api_key_from_env(parser, args.get("api_key_env"))
    try:
        settings = settings_type(**fields)
    except ValidationError as exc:
        parser.error(options_problems(exc))
    host: str = getattr(settings, "host")  # noqa: B009 - every settings model has host/port
    port: int = getattr(settings, "port")  # noqa: B009
    return run(create_app(settings), host=host, port=port, name=name, prog=parser.prog)


def options_problems(exc: ValidationError) -> str:
    """A settings model's validation errors in one line, each named by the option that set
    the field (``latency_ms`` → ``--latency-ms``), not pydantic's multi-line dump."""
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        option = f"--{field.replace('_', '-')}" if field else "options"
        problems.append(f"argument {option}: {error['msg']} (got {error['input']!r})")
    return "; ".join(problems)
