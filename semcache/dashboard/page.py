"""The dashboard page: one self-contained HTML document rendered from the figures of
:func:`semcache.dashboard.figures.collect` (the same document ``/api/stats`` returns).

No script at all and nothing loaded from elsewhere: styles are inline (allowed by hash in
the Content-Security-Policy of :data:`SECURITY_HEADERS`), charts are inline SVG, the page
refreshes itself with a ``<meta>`` tag. Everything that comes from the cache (namespaces,
prompts, answers, model names, the location) is escaped.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from html import escape
from typing import Any

from semcache.dashboard.charts import axis, legend, lookups_chart

#: Seconds between automatic reloads of the page.
REFRESH_S = 30

_STYLE = """
:root{--fg:#1d2430;--muted:#5b6575;--bg:#f6f7f9;--card:#fff;--line:#dde1e7;
--exact:#1f7a4d;--semantic:#58b883;--miss:#c9ced6;--rate:#2d5bd7;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1100px;margin:0 auto;padding:12px}
h1{font-size:1.35rem;margin:.2rem 0}
h2{font-size:1.05rem;margin:0 0 .5rem}
.sub,.scale,.note,footer{color:var(--muted);font-size:.85rem;overflow-wrap:anywhere}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:8px;
margin:12px 0}
.tile,section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:10px 12px}
section{margin:0 0 12px}
.tile b{display:block;font-size:1.45rem;font-variant-numeric:tabular-nums}
.tile span.k{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.03em}
.tile small{color:var(--muted);display:block}
.chart{width:100%;height:auto;display:block}
.grid{stroke:var(--line);stroke-width:1}
rect.exact,i.exact{fill:var(--exact);background:var(--exact)}
rect.semantic,i.semantic{fill:var(--semantic);background:var(--semantic)}
rect.miss,i.miss{fill:var(--miss);background:var(--miss)}
.rate{fill:none;stroke:var(--rate);stroke-width:2}
.rate-dot{fill:var(--rate)}
i.rate-key{background:var(--rate);height:3px!important}
.legend span{margin-right:12px;white-space:nowrap;font-size:.85rem}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;border-radius:2px;
vertical-align:middle}
.axis{display:flex;justify-content:space-between;color:var(--muted);font-size:.8rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top;
white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.text{white-space:normal;min-width:14rem;max-width:28rem;overflow-wrap:anywhere}
.bad{color:var(--bad)}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ee;--muted:#9aa4b2;--bg:#12151a;
--card:#1b2028;--line:#2c333e;--miss:#4a5260}}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

#: Headers of every dashboard response (page, JSON, errors).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else escape(str(value))


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _tile(key: str, label: str, value: Any, shown: str, note: str = "") -> str:
    return (f'<div class="tile"><span class="k">{escape(label)}</span>'
            f'<b id="{key}" data-value="{escape(str(value))}">{shown}</b>'
            f"{f'<small>{note}</small>' if note else ''}</div>")


def _tiles(f: dict[str, Any]) -> str:
    lookups = f["hits"] + f["misses"]
    cost = f["cost_saved"]
    tiles = [
        _tile("hit_rate", "hit rate", f["hit_rate"], f"{f['hit_rate'] * 100:.1f}%",
              f"of {lookups:,} lookups"),
        _tile("hits", "hits", f["hits"], _n(f["hits"]),
              f'<span id="exact_hits" data-value="{f["exact_hits"]}">{_n(f["exact_hits"])}'
              f'</span> exact, <span id="semantic_hits" data-value="{f["semantic_hits"]}">'
              f'{_n(f["semantic_hits"])}</span> semantic'),
        _tile("misses", "misses", f["misses"], _n(f["misses"])),
        _tile("guard_rejections", "near-miss rejections", f["guard_rejections"],
              _n(f["guard_rejections"]), "look-alike questions not served"),
        _tile("tokens_saved", "tokens saved", f["tokens_saved"], _n(f["tokens_saved"])),
        _tile("cost_saved", "est. cost saved", cost["usd"], _usd(cost["usd"]),
              f"{cost['priced_hits']:,} hits priced (see below)"),
        _tile("entries", "entries", f["entries"], _n(f["entries"]),
              f'<span id="bytes" data-value="{f["bytes"]}">{human_bytes(f["bytes"])}'
              "</span> stored"),
        _tile("puts", "puts", f["puts"], _n(f["puts"]),
              f"{f['evictions']:,} evicted, {f['expirations']:,} expired"),
        _tile("feedback_wrong", "wrong-answer reports", f["feedback_wrong"],
              _n(f["feedback_wrong"]), f'<span id="feedback_right" data-value='
              f'"{f["feedback_right"]}">{_n(f["feedback_right"])}</span> confirmed right'),
    ]
    if "explorations" in f:
        tiles.append(_tile("explorations", "explorations", f["explorations"],
                           _n(f["explorations"]), "candidates checked against a fresh answer"))
    if "outcomes_right" in f or "outcomes_wrong" in f:
        right, wrong = f.get("outcomes_right", 0), f.get("outcomes_wrong", 0)
        tiles.append(_tile("outcomes_right", "verified outcomes", right, _n(right),
                           f'right, <span id="outcomes_wrong" data-value="{wrong}">'
                           f"{_n(wrong)}</span> wrong"))
    return '<div class="tiles">' + "".join(tiles) + "</div>"


def _table(section: str, headers: list[tuple[str, bool]], rows: list[list[str]],
           empty: str) -> str:
    if not rows:
        return f'<p class="note" id="{section}-empty">{escape(empty)}</p>'
    head = "".join(f'<th{" class=n" if num else ""}>{escape(h)}</th>' for h, num in headers)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table id="{section}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _td(value: Any, *, num: bool = False, text: bool = False) -> str:
    css = ' class="n"' if num else (' class="text"' if text else "")
    shown = _n(value) if num else escape("-" if value is None else str(value))
    return f"<td{css}>{shown}</td>"


def _namespaces(f: dict[str, Any]) -> str:
    rows = [[_td(n["namespace"]), _td(n["entries"], num=True), _td(n["expired"], num=True),
             _td(n["hits"], num=True), f'<td class="n">{human_bytes(n["bytes"])}</td>']
            for n in f["namespaces"]]
    return _table("namespaces", [("namespace", False), ("entries", True), ("expired", True),
                                 ("hits", True), ("bytes", True)], rows, "No entries yet.")


def _top(f: dict[str, Any], show_prompts: bool) -> str:
    headers = [("id", True), ("namespace", False), ("hits", True), ("tokens", True),
               ("model", False), ("last hit", False)]
    if show_prompts:
        headers += [("prompt", False), ("answer", False)]
    rows = []
    for e in f["top_entries"]:
        row = [_td(e["id"], num=True), _td(e["namespace"]), _td(e["hits"], num=True),
               _td(e["tokens"], num=True), _td(e["model"]), _td(_when(e["accessed_at"]))]
        if show_prompts:
            row += [_td(e["prompt"], text=True), _td(e["response"], text=True)]
        rows.append(row)
    return _table("top-entries", headers, rows, "No entry has been hit yet.")


def _wrong(f: dict[str, Any], show_prompts: bool) -> str:
    headers = [("when", False), ("entry", True), ("namespace", False), ("kind", False),
               ("similarity", True)]
    if show_prompts:
        headers.append(("entry's prompt", False))
    rows = []
    for v in f["wrong_answers"]:
        row = [_td(_when(v["created_at"])), _td(v["entry_id"], num=True), _td(v["namespace"]),
               _td(v["kind"]), f'<td class="n">{v["similarity"]:.3f}</td>']
        if show_prompts:
            row.append(_td(v["prompt"], text=True))
        rows.append(row)
    return _table("wrong-answers", headers, rows,
                  "No wrong answer has been reported (Cache.feedback(hit, correct=False)).")


def _usd(value: float | None) -> str:
    """Dollars with two significant digits below $1 (a cache saves cents at first)."""
    if value is None:
        return "-"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1 or value == 0:
        return f"${value:,.2f}"
    return f"${value:.{max(2, 1 - math.floor(math.log10(value)))}f}"


def _cost(f: dict[str, Any]) -> str:
    cost = f["cost_saved"]
    rows = [[_td(m["model"]), _td(m["priced_as"]), _td(m["hits"], num=True),
             _td(m["input_tokens"], num=True), _td(m["output_tokens"], num=True),
             f'<td class="n">{_usd(m["usd"])}</td>']
            for m in cost["by_model"]]
    table = _table("cost", [("model", False), ("priced as", False), ("hits", True),
                            ("input tokens", True), ("output tokens", True), ("USD", True)],
                   rows, "No priced hits yet.")
    prices = cost["prices"]
    source = escape(f"{prices['source']}, {prices['unit']}"
                    + (f", as of {prices['as_of']}" if prices.get("as_of") else ""))
    return (f'{table}<p class="note">{escape(cost["assumes"])} Prices: {source}. '
            f'Hits not priced: <span id="unpriced_hits">{cost["unpriced_hits"]:,}</span>.</p>')


def render_page(f: dict[str, Any]) -> str:
    """The whole page for the figures ``f``."""
    show_prompts = bool(f["privacy"]["show_prompts"])
    cache = f["cache"]
    privacy = ("prompts and answers shown (--show-prompts)" if show_prompts
               else "prompts and answers hidden")
    if f["privacy"]["namespaces"] == "hashed":
        privacy += "; namespaces shown as hashed ids (one per API key)"
    minutes, days = f["series"]["minutes"], f["series"]["days"]
    return "".join([
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        "<title>semcache dashboard</title>",
        f"<style>{_STYLE}</style></head><body><main>",
        "<header><h1>semcache dashboard</h1>",
        f'<p class="sub"><span id="location">{escape(str(cache["location"]))}</span> · '
        f'embedder {escape(str(cache["embedder"] or "none (hash-only)"))} · '
        f"{human_bytes(f['file_bytes'])} on disk · updated {_when(f['generated_at'])} · "
        f"reloads every {REFRESH_S} s</p></header>",
        _tiles(f),
        '<section id="last-hour"><h2>Last hour, by minute</h2>',
        lookups_chart(minutes, 60, "Lookups and hit rate, last hour by minute"),
        axis(minutes, 60), legend(), "</section>",
        '<section id="last-30-days"><h2>Last 30 days, by day</h2>',
        lookups_chart(days, 86_400, "Lookups and hit rate, last 30 days by day"),
        axis(days, 86_400), legend(), "</section>",
        '<section><h2>Namespaces</h2>', _namespaces(f), "</section>",
        '<section><h2>Most-hit entries</h2>', _top(f, show_prompts), "</section>",
        '<section><h2>Recent wrong-answer reports</h2>', _wrong(f, show_prompts),
        "</section>",
        '<section><h2>Estimated cost saved</h2>', _cost(f), "</section>",
        f'<footer><p>{escape(privacy)}. The same figures as JSON: '
        '<a href="/api/stats">/api/stats</a>.</p></footer>',
        "</main></body></html>"])


__all__ = ["REFRESH_S", "SECURITY_HEADERS", "human_bytes", "render_page"]
