"""HTML for the console: every value from Kafka or the config goes through :func:`esc`.

Pages are plain strings built here; nothing is inserted unescaped except markup this module
wrote itself. Charts are inline SVG drawn on the server (no JavaScript, no CDN).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from streams.console.security import CSRF_FIELD

NAV = (
    ("/", "Flows"),
    ("/events", "Event search"),
    ("/dlq", "Dead letters"),
    ("/live", "Live results"),
)


def esc(value: object) -> str:
    """``value`` as HTML text: quotes too, so it is safe inside an attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def when(millis: int | float | None) -> str:
    if millis is None:
        return "-"
    stamp = datetime.fromtimestamp(millis / 1000, UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def csrf_input(token: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{esc(token)}">'


def page(title: str, body: str, *, active: str = "", scripts: Sequence[str] = ()) -> str:
    nav = "".join(
        f'<a href="{href}"{" class=active" if href == active else ""}>{esc(label)}</a>'
        for href, label in NAV
    )
    tags = "".join(f'<script src="/static/{esc(name)}" defer></script>' for name in scripts)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} · hookstream console</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f'<link rel=stylesheet href="/static/console.css">{tags}</head>'
        f"<body><header><strong>hookstream</strong><nav>{nav}</nav></header>"
        f"<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )


def table(headings: Sequence[str], rows: Iterable[Sequence[str]], *, css: str = "") -> str:
    """A table whose cells are markup already (escape values with :func:`esc` first)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def note(text: str, *, kind: str = "info") -> str:
    return f'<p class="note {esc(kind)}">{esc(text)}</p>'


def chart(
    title: str,
    values: Sequence[float],
    *,
    start_ms: int,
    bucket_s: int,
    unit: str = "",
    width: int = 320,
    height: int = 90,
) -> str:
    """A small line chart (inline SVG) of one value per time bucket, with its max and total."""
    pad = 4
    peak = max(values, default=0.0)
    scale = (height - 2 * pad) / peak if peak > 0 else 0.0
    step = (width - 2 * pad) / max(len(values) - 1, 1)
    points = " ".join(
        f"{pad + i * step:.1f},{height - pad - v * scale:.1f}" for i, v in enumerate(values)
    )
    first = when(start_ms)[11:16]
    last = when(start_ms + bucket_s * 1000 * len(values))[11:16]
    label = f"{title} (max {_num(peak)}{unit}; {bucket_s} s buckets)"
    return (
        f"<figure class=chart><figcaption>{esc(label)}</figcaption>"
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role=img '
        f'aria-label="{esc(label)}"><rect x=0 y=0 width="{width}" height="{height}" '
        f'class=frame /><polyline points="{points}" class=line /></svg>'
        f"<div class=axis><span>{esc(first)}</span><span>{esc(last)} UTC</span></div></figure>"
    )


def _num(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.4g}"


def fmt(value: float) -> str:
    """A figure for a table cell: whole numbers with separators, others to 4 digits."""
    return _num(value)
