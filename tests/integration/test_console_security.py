"""``hookstream console``'s gates, over HTTP against the real process.

A non-loopback bind without a token is refused before anything listens; with a token every
request needs it (Bearer or the login form's cookie); a POST without this session's CSRF field,
with another session's, or from another origin is refused before its handler runs. The pages'
content is the browser test's (tests/integration/test_console_browser.py); here the broker
holds no topic of the console's prefix, and the gates answer before any read. Last, a console
whose broker does not answer shows a page that says so (503), naming the brokers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from streams.cli.exits import EXIT_BAD_INPUT
from streams.console.security import AUTH_COOKIE, SECURITY_HEADERS, TOKEN_ENV
from tests.support.broker import free_port
from tests.support.console import running_console
from tests.support.sinkstack import run_cli
from tests.support.stack import EXAMPLE_CONFIG, SECRETS

pytestmark = pytest.mark.asyncio(loop_scope="module")
TOKEN = "console-test-token-" + uuid.uuid4().hex
# Not this machine's loopback (TEST-NET-1): refused before any bind is tried.
NETWORK_ADDRESS = "192.0.2.10"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def _env(kafka_bootstrap: str, **extra: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        **SECRETS,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "HOOKSTREAM_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        **extra,
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def console(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    log: Path = tmp_path_factory.mktemp("console-security") / "console.log"
    env = _env(kafka_bootstrap, **{TOKEN_ENV: TOKEN})
    async with running_console(EXAMPLE_CONFIG, env, log) as url:
        yield url


def _session() -> aiohttp.ClientSession:
    # unsafe: keep cookies of an IP address host (127.0.0.1), as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def test_a_network_bind_without_a_token_is_refused(kafka_bootstrap: str) -> None:
    env = _env(kafka_bootstrap)
    env.pop(TOKEN_ENV, None)
    code, out, err = await run_cli(
        "console", "-c", str(EXAMPLE_CONFIG), "--host", NETWORK_ADDRESS, "--port", "0", env=env
    )
    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert f"--host {NETWORK_ADDRESS}" in err
    assert f"${TOKEN_ENV}" in err
    assert "127.0.0.1" in err
    short = {**env, TOKEN_ENV: "short"}
    code, _, err = await run_cli(
        "console", "-c", str(EXAMPLE_CONFIG), "--host", NETWORK_ADDRESS, "--port", "0", env=short
    )
    assert code == EXIT_BAD_INPUT
    assert "5 characters long; use at least 16" in err
    assert "short" not in err.replace("5 characters", "")  # the token itself is never printed


async def test_every_page_needs_the_token(console: str) -> None:
    async with _session() as http:
        for path in ("/", "/events", "/dlq", "/live", "/live/stream", "/dlq/record/0:0"):
            async with http.get(console + path) as response:
                assert response.status == 401, path
            headers = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
            async with http.get(console + path, headers=headers) as response:
                assert response.status == 401, path
        # A browser is sent to the login form; the form and the stylesheet are public.
        async with http.get(
            console + "/", headers={"Accept": "text/html"}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/login"
        async with http.get(console + "/static/console.css") as response:
            assert response.status == 200
        async with http.get(console + "/", headers={"Authorization": f"Bearer {TOKEN}"}) as ok:
            assert ok.status == 200
            assert "feedback-triage" in await ok.text()
            for name, value in SECURITY_HEADERS.items():
                assert ok.headers[name] == value


async def test_the_login_form_sets_a_cookie_that_is_not_the_token(console: str) -> None:
    async with _session() as http:
        async with http.get(console + "/login") as form:
            csrf = CSRF.search(await form.text())
            assert csrf is not None
        wrong = {"token": "not-the-token", "csrf": csrf.group(1)}
        async with http.post(console + "/login", data=wrong, allow_redirects=False) as refused:
            assert refused.status == 401
        right = {"token": TOKEN, "csrf": csrf.group(1)}
        async with http.post(console + "/login", data=right, allow_redirects=False) as logged:
            assert logged.status == 303
            cookie = logged.cookies[AUTH_COOKIE]
            assert cookie.value
            assert TOKEN not in cookie.value
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
        async with http.get(console + "/events") as page:
            assert page.status == 200
            assert TOKEN not in await page.text()


async def test_a_post_needs_this_sessions_csrf_field_and_origin(console: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with _session() as http, _session() as other:
        async with http.get(console + "/dlq/record/0:0", headers=auth):
            pass  # sets this session's cookie
        async with other.get(console + "/login") as form:
            theirs = CSRF.search(await form.text())
            assert theirs is not None
        async with http.get(console + "/login") as form:
            mine = CSRF.search(await form.text())
            assert mine is not None
        url = console + "/dlq/redrive"
        record = {"record": "0:0"}
        for data, headers in (
            (record, auth),  # no field
            ({**record, "csrf": theirs.group(1)}, auth),  # another session's
            ({**record, "csrf": mine.group(1)}, {**auth, "Origin": "http://evil.example"}),
        ):
            async with http.post(url, data=data, headers=headers) as response:
                assert response.status == 403
                assert "stale or not this console's" in await response.text()
        # This session's field and no foreign origin: the handler runs (and reports that the
        # broker has no DLQ under this prefix).
        async with http.post(url, data={**record, "csrf": mine.group(1)}, headers=auth) as ok:
            assert ok.status == 404
            assert ".dlq" in await ok.text()


async def test_an_unreachable_broker_is_a_page_that_says_so(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    env = _env(kafka_bootstrap, KAFKA_BOOTSTRAP_SERVERS=nobody)
    async with (
        running_console(EXAMPLE_CONFIG, env, tmp_path / "console.log") as url,
        _session() as http,
    ):
        for path in ("/", "/dlq", "/events?q=some-id", "/live/stream"):
            async with http.get(url + path) as response:
                assert response.status == 503, path
                assert f"check that Kafka runs at {nobody}" in await response.text(), path
