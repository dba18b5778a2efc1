"""``hookstream console`` in a real browser: Debian's chromium, driven by Playwright, against a
running stack (gateway, worker and sink worker as processes with their metrics ports, the AI
and CRM simulators, the real broker).

It loads every page, searches an event and sees its journey, opens a dead letter whose payload
holds a ``<script>`` (shown as text, never run), redrives it with the confirmation step and
finds the copy back on its topic — once, also after a second click — and watches a result
arrive on the live page. Every page's HTML is checked for the config's secrets (set in the
console's environment). Screenshots go to docs/img/console-*.png (docs/console.md shows them).

Chromium missing fails the test (never a skip): ``.ci/run`` installs it.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support.broker import free_port
from tests.support.console import running_console
from tests.support.kafka import Record, read_all, wait_for_records
from tests.support.stack import REPO_ROOT, SECRETS, Proc, Stack, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO_ROOT / "docs" / "img"
XSS = "<script>window.__hookstream_xss = 1</script><img src=x onerror=alert(1)>"
UNREACHABLE_METRICS = "http://scraper:hunter2-not-shown@127.0.0.1:9/metrics"


async def _start_service(stack: Stack, role: str, workdir: Path) -> str:
    """``hookstream <role>`` with a metrics port; its /metrics URL."""
    port = free_port()
    args = [role, "-c", str(stack.config_path), "-l", "info", "--metrics-port", str(port)]
    proc = Proc(name=role, args=args, env=stack.env, log_path=workdir / f"{role}.log")
    stack.procs[role] = proc
    await proc.start()
    return f"http://127.0.0.1:{port}/metrics"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def console(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, str]]:
    """A stack and a console on it (its URL); the console scrapes both services and one URL
    that never answers (with a password in it, which must not be shown)."""
    workdir: Path = tmp_path_factory.mktemp("console")
    async with running_stack(kafka_bootstrap, workdir, roles=("gateway",)) as stack:
        urls = [await _start_service(stack, role, workdir) for role in ("worker", "sinks")]
        extra = [arg for url in [*urls, UNREACHABLE_METRICS] for arg in ("--metrics-url", url)]
        # stack.env: every secret of the config is set in the console's environment.
        log = workdir / "console.log"
        async with running_console(stack.config_path, stack.env, log, *extra) as url:
            yield stack, url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


def _ticket(customer: str, *, message: str = "The export fails", ticket: bool = True) -> Any:
    body = {"event": "ticket.created", "customer_id": customer, "message": message}
    if ticket:
        body["ticket_id"] = f"T-{uuid.uuid4().hex[:8]}"
    return body


async def _delivered(stack: Stack, customer: str) -> str:
    event_id = f"console-{uuid.uuid4().hex[:12]}"
    status, answer, _ = await stack.post("helpdesk", _ticket(customer), webhook_id=event_id)
    assert status == 202, answer

    def receipt(records: list[Record]) -> bool:
        return any(r.json()["event_key"] == f"helpdesk/{event_id}" for r in records)

    await wait_for_records(stack.bootstrap, stack.topic("receipts"), receipt, timeout_s=120)
    return event_id


def _no_secret(html: str, where: str) -> None:
    for name, secret in SECRETS.items():
        assert secret not in html, f"{where} shows ${name}"
    assert "hunter2-not-shown" not in html, f"{where} shows the metrics URL's password"


async def _shot(page: Page, name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)
    html = await page.content()
    _no_secret(html, name)
    return html


async def test_every_page_search_dead_letter_redrive_once_and_live(
    console: tuple[Stack, str], browser: Browser
) -> None:
    stack, url = console
    delivered = await _delivered(stack, "cus_001")
    # A dead letter: no ticket_id (stage sink, TemplateError), with markup in its payload.
    bad_id = f"console-bad-{uuid.uuid4().hex[:8]}"
    bad = _ticket("cus_002", message=XSS, ticket=False)
    status, _, _ = await stack.post("helpdesk", bad, webhook_id=bad_id)
    assert status == 202

    def dead(records: list[Record]) -> bool:
        return any(bad_id in (r.value or b"").decode() for r in records)

    letters = await wait_for_records(stack.bootstrap, stack.topic("dlq"), dead, timeout_s=120)
    letter = next(r for r in letters if bad_id in (r.value or b"").decode())
    where = f"{letter.partition}:{letter.offset}"

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()

    # Flows overview: charts per flow, lag per stage, states from both services' metrics.
    await page.goto(url + "/")
    flow = page.locator("section.flow", has=page.locator("h2", has_text="feedback-triage"))
    await expect(flow.locator("figure.chart svg")).to_have_count(5)
    await expect(flow).to_contain_text("events in")
    lag = page.locator("table", has=page.locator("th", has_text="Consumer group"))
    for stage in ("enrich", "ai", "sinks"):
        await expect(lag.locator("td", has_text=re.compile(f"^{stage}$"))).to_have_count(1)
    states = page.locator("table.states")
    await expect(states.locator("tr", has_text="breaker")).not_to_have_count(0)
    await expect(states.locator("tr", has_text="feedback-triage / crm")).to_contain_text(
        "delivering"
    )
    await expect(page.locator("main")).to_contain_text("127.0.0.1:9/metrics")
    await _shot(page, "flows")

    # Event search: the journey of the delivered webhook, every hop.
    await page.goto(url + "/events")
    await page.fill("input[name=q]", delivered)
    await page.click("#search")
    journey = page.locator("table.journey tbody tr")
    await expect(journey).to_have_count(4)
    for kind in ("event", "enriched", "result", "receipt"):
        await expect(page.locator("table.journey .tag.kind", has_text=kind)).not_to_have_count(0)
    await _shot(page, "search")
    # By key: the events of cus_001, linking to their journeys.
    await page.select_option("select[name=by]", "key")
    await page.fill("input[name=q]", "cus_001")
    await page.click("#search")
    await expect(page.locator("table.keyed a", has_text=delivered)).to_have_count(1)

    # The DLQ: the record, its headers, its payload as text.
    await page.goto(url + "/dlq?stage=sink")
    row = page.locator("table.dlq tr", has=page.locator(f"a:text-is('{where}')"))
    await expect(row).to_contain_text("TemplateError")
    await _shot(page, "dlq")
    await row.locator(f"a:text-is('{where}')").click()
    await expect(page.locator("table.headers")).to_contain_text("hookstream-dlq-error_class")
    await expect(page.locator("pre.value")).to_contain_text(XSS)
    assert await page.evaluate("window.__hookstream_xss") is None
    assert await page.locator("main script, main img").count() == 0
    await _shot(page, "dlq-record")

    # Redrive: tick, confirm, and the copy is on the original topic once. A second tab
    # holds the same confirmation, opened before the first tab confirmed: its click comes second.
    second = await context.new_page()
    for tab in (page, second):
        await tab.goto(url + "/dlq?stage=sink")
        await tab.check(f"input[name=record][value='{where}']")
        await tab.click("#redrive-selected")
        await expect(tab.locator("h1")).to_have_text("Confirm the redrive")
        await expect(tab.locator("#confirm-redrive")).to_have_text("Redrive 1")
    await _shot(page, "dlq-confirm")
    await page.click("#confirm-redrive")
    outcome = page.locator("#redrive-outcome")
    await expect(outcome).to_have_attribute("data-redriven", "1")
    await _shot(page, "dlq-redriven")
    target = letter.headers["hookstream-dlq-original_topic"].decode()

    async def copies() -> list[Record]:
        records = await read_all(stack.bootstrap, target)
        return [r for r in records if r.headers.get("hookstream-redriven") == where.encode()]

    assert len(await copies()) == 1  # acknowledged before the page answered
    await second.click("#confirm-redrive")
    await expect(second.locator("#redrive-outcome")).to_have_attribute("data-before", "1")
    await expect(second.locator("#redrive-outcome")).to_have_attribute("data-redriven", "0")
    assert len(await copies()) == 1
    await second.close()
    # The list now marks it redriven, with no box to tick.
    await page.goto(url + "/dlq?stage=sink")
    await expect(page.locator(f"input[name=record][value='{where}']")).to_have_count(0)

    # Live: once the stream is positioned, a new result appears as a row.
    await page.goto(url + "/live")
    await expect(page.locator("#live-status")).to_have_attribute("data-ready", "true")
    live_id = await _delivered(stack, "cus_003")
    await expect(page.locator(f"table.live tr[data-event-id='{live_id}']")).to_have_count(1)
    await _shot(page, "live")
    await context.close()
