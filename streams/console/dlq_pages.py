"""The console's DLQ pages: list with filters, one record with its headers, redrive.

Redrive goes through :class:`streams.ops.dlq.DeadLetters` — the code of ``hookstream dlq
redrive`` — restricted to the records ticked on the page (:class:`Chosen`), so it keeps that
command's rule: each dead letter is redriven once, remembered in ``<prefix>.dlq-redriven``
after Kafka acknowledged the copy; a second click, a resubmitted form or a CLI run later finds
it remembered and sends nothing. Redrives from this console run one at a time (a lock), so two
tabs confirming the same record cannot both pass the check before either is remembered.
"""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from schemas.config import HookstreamConfig, KafkaSettings
from schemas.errors import ToolError
from schemas.topics import DEAD_LETTER_STAGES
from streams.console.html import csrf_input, esc, note, page, table
from streams.console.security import csrf_for
from streams.ops.dlq import DeadLetters, DLQEntry, DLQFilter

STAGES = DEAD_LETTER_STAGES
MAX_SELECTED = 500
_REDRIVE_LOCK_KEY = web.AppKey("redrive_lock", asyncio.Lock)


class Chosen(DeadLetters):
    """The dead letters of ``coordinates`` only ("PARTITION:OFFSET" as the list shows them)."""

    def __init__(self, settings: KafkaSettings, coordinates: frozenset[str]) -> None:
        super().__init__(settings)
        self.coordinates = coordinates

    async def entries(self, selection: DLQFilter | None = None) -> list[DLQEntry]:
        found = await super().entries(selection)
        return [entry for entry in found if entry.coordinates in self.coordinates]


def _filter(request: web.Request, config: HookstreamConfig) -> DLQFilter:
    query = request.query
    stage = query.get("stage") or None
    if stage is not None and stage not in STAGES:
        raise ToolError(f"stage {stage!r}: one of {', '.join(STAGES)}")
    return DLQFilter(
        stage=stage, error_class=query.get("error_class") or None, flow=query.get("flow") or None
    )


def _options(values: list[str], chosen: str | None) -> str:
    rows = ['<option value="">any</option>']
    for value in values:
        mark = " selected" if value == chosen else ""
        rows.append(f'<option value="{esc(value)}"{mark}>{esc(value)}</option>')
    return "".join(rows)


def _letter_cells(entry: DLQEntry) -> list[str]:
    letter = entry.letter
    link = f'<a href="/dlq/record/{esc(entry.coordinates)}">{esc(entry.coordinates)}</a>'
    state = '<span class="tag done">redriven</span>' if entry.redriven else ""
    if letter is None:
        return [link, "?", "?", esc(entry.flow or "-"), "-", "not a dead letter's headers", state]
    return [
        link,
        esc(letter.stage),
        esc(letter.error_class),
        esc(entry.flow or "-"),
        esc(letter.last_failure_at.strftime("%Y-%m-%d %H:%M:%S")),
        f"<span class=message>{esc(letter.error_message[:200])}</span>",
        state,
    ]


async def dlq_list(request: web.Request, config: HookstreamConfig) -> str:
    selection = _filter(request, config)
    entries = await DeadLetters(config.kafka).entries(selection)
    flows = [flow.name for flow in config.flows]
    form = (
        '<form method=get action="/dlq" class=filters>'
        f"<label>Stage <select name=stage>{_options(list(STAGES), selection.stage)}</select>"
        "</label><label>Error class <input name=error_class "
        f'value="{esc(selection.error_class or "")}"></label>'
        f"<label>Flow <select name=flow>{_options(flows, selection.flow)}</select></label>"
        "<button type=submit>Filter</button></form>"
    )
    rows = []
    for entry in entries:
        box = (
            f'<input type=checkbox name=record value="{esc(entry.coordinates)}" '
            f'aria-label="select {esc(entry.coordinates)}">'
            if not entry.redriven and entry.letter is not None
            else ""
        )
        rows.append([box, *_letter_cells(entry)])
    headings = ["", "DLQ", "Stage", "Error", "Flow", "Last failure (UTC)", "Message", ""]
    listing = (
        table(headings, rows, css="dlq") if rows else note("No dead letter matches these filters.")
    )
    csrf = csrf_for(request)
    body = (
        f"{form}<p>{len(entries)} dead letter(s) in {esc(config.kafka.topic_prefix)}.dlq.</p>"
        f'<form method=post action="/dlq/confirm">{csrf_input(csrf)}{listing}'
        "<button type=submit id=redrive-selected>Redrive selected…</button></form>"
    )
    return page("Dead letters", body, active="/dlq")


async def dlq_record(request: web.Request, config: HookstreamConfig) -> str:
    entry = await DeadLetters(config.kafka).get(request.match_info["where"])
    shown = entry.as_json(with_value=True)
    headers = table(
        ["Header", "Value"],
        ([esc(name), f"<code>{esc(value)}</code>"] for name, value in shown["headers"].items()),
        css="headers",
    )
    value = orjson.dumps(shown["value"], option=orjson.OPT_INDENT_2).decode()
    summary = table(
        ["DLQ", "Stage", "Error", "Flow", "Last failure (UTC)", "Message", ""],
        [_letter_cells(entry)],
    )
    key = entry.key.decode(errors="replace") if entry.key is not None else "(none)"
    body = (
        f"{summary}<h2>Key</h2><p><code>{esc(key)}</code></p><h2>Headers</h2>{headers}"
        f"<h2>Value</h2><pre class=value>{esc(value)}</pre>"
        '<p><a href="/dlq">Back to the list</a></p>'
    )
    return page(f"Dead letter {entry.coordinates}", body, active="/dlq")


async def _chosen(request: web.Request) -> frozenset[str]:
    form = await request.post()
    chosen = frozenset(str(value) for value in form.getall("record", []))
    if not chosen:
        raise ToolError("select at least one dead letter to redrive (tick its box in the list)")
    if len(chosen) > MAX_SELECTED:
        raise ToolError(f"{len(chosen)} records selected; redrive at most {MAX_SELECTED} at once")
    return chosen


async def dlq_confirm(request: web.Request, config: HookstreamConfig) -> str:
    chosen = await _chosen(request)
    entries = await Chosen(config.kafka, chosen).entries()
    todo = [e for e in entries if not e.redriven and e.letter is not None]
    csrf = csrf_for(request)
    rows = [[*_letter_cells(e), esc(e.letter.original_topic if e.letter else "?")] for e in entries]
    hidden = "".join(f'<input type=hidden name=record value="{esc(e.coordinates)}">' for e in todo)
    listing = table(
        ["DLQ", "Stage", "Error", "Flow", "Last failure (UTC)", "Message", "", "Back to"], rows
    )
    skipped = len(entries) - len(todo)
    body = (
        f"<p>Send {len(todo)} dead letter(s) back to their stage's input topic?"
        + (
            f" {skipped} of the selection were redriven before and will not go again."
            if skipped
            else ""
        )
        + f"</p>{listing}"
        f'<form method=post action="/dlq/redrive">{csrf_input(csrf)}{hidden}'
        f"<button type=submit id=confirm-redrive>Redrive {len(todo)}</button> "
        '<a href="/dlq">Cancel</a></form>'
    )
    return page("Confirm the redrive", body, active="/dlq")


async def dlq_redrive(request: web.Request, config: HookstreamConfig) -> str:
    chosen = await _chosen(request)
    async with request.app[_REDRIVE_LOCK_KEY]:
        done, already = await Chosen(config.kafka, chosen).redrive(DLQFilter())
    rows = [[esc(e.coordinates), esc(e.letter.original_topic if e.letter else "?")] for e in done]
    body = (
        f'<p id=redrive-outcome data-redriven="{len(done)}" data-before="{already}">'
        f"Redrove {len(done)}; {already} of the selection were redriven before (not sent again)."
        "</p>"
        + (table(["DLQ", "Sent to"], rows) if rows else "")
        + '<p><a href="/dlq">Back to the list</a></p>'
    )
    return page("Redrive done", body, active="/dlq")


def setup(app: web.Application) -> None:
    app[_REDRIVE_LOCK_KEY] = asyncio.Lock()
