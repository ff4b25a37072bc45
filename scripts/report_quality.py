"""The answer-quality figures of scripts/report.py: the look-alike stream of issue 22
(``quality_stream.json``; ``quality_stream_before.json``, the same stream through the code
before the semantic decision; ``quality_stream_phase1.json``, through its first version) and the older paraphrase / hard-negative / rewording figures at
the default floor (``quality.json``), as README rows and the generated blocks of
docs/quality.md."""

from __future__ import annotations

from typing import Any

from report_figures import Results, Row, dig, num, run_note

CONFIG_LABELS = {
    "defaults": "defaults (semantic decision)",
    "guard off": "`guard=False` (cosine alone)",
    "bound 0.005": "`error_bound=0.005`",
    "bound 0.01": "`error_bound=0.01`",
    "bound 0.02": "`error_bound=0.02`",
    "bound 0.05": "`error_bound=0.05`",
}


def _label(name: str) -> str:
    return CONFIG_LABELS.get(name, f"{name} + decision" if name.startswith("floor ") else name)


def _pct(value: Any, digits: int = 1) -> str:
    return "?" if value is None else f"{100 * value:.{digits}f}%"


def _note(doc: dict[str, Any] | None) -> str:
    if not doc:
        return "not measured"
    meta = doc.get("meta", {})
    return run_note(meta.get("date"), meta.get("load_average"), meta.get("load_average_end"))


def stream_rows(r: Results) -> list[Row]:
    """README rows: the defaults on each split, the attack pairs, the added latency."""
    s = r.get("quality_stream")
    if not s:
        return []
    before = r.get("quality_stream_before")
    rows: list[Row] = []
    for split, res in s.get("splits", {}).items():
        d = dig(res, "configs", "defaults")
        if not d:
            continue
        old = dig(before, "splits", split, "configs", "defaults")
        first = dig(r.get("quality_stream_phase1"), "splits", split, "configs", "defaults")
        a = res.get("attacks") or {}
        rows.append((
            f"look-alike questions, {split} stream ({res['queries']} queries, best possible "
            f"{_pct(res['best_possible_hit_rate'])} hits): wrong answers / hit rate at the defaults",
            f"{_pct(d['wrong_rate'], 2)} wrong, {_pct(d['hit_rate'])} hits (floor {d['floor']})"
            + (f"; attack pairs served {a['served']}/{a['pairs']}" if a else ""),
            (f"before the decision (guard, 0.92): {_pct(old['wrong_rate'], 2)} wrong, "
             f"{_pct(old['hit_rate'])} hits; " if old else "")
            + (f"phase 1 ({first['floor']}): {_pct(first['wrong_rate'], 2)} wrong, "
               f"{_pct(first['hit_rate'])} hits; " if first else "")
            + f"cosine alone: {_pct(dig(res, 'configs', 'guard off', 'wrong_rate'), 2)} wrong",
            _note(s)))
    return rows


def stream_block(r: Results) -> str:
    """docs/quality.md: every configuration on every split, the attacks, the latency."""
    s = r.get("quality_stream")
    if not s:
        return "Not measured: run `python scripts/quality_stream.py`."
    before = r.get("quality_stream_before")
    lines = [f"`scripts/quality_stream.py` (`benchmarks/results/quality_stream.json`; {_note(s)}; "
             f"seed {next(iter(s['splits'].values()), {}).get('seed', '?')}). Rates are of all "
             "queries; *wrong* = wrong answers served.", ""]
    for split, res in s["splits"].items():
        lines += [f"**{split}** ({res['file']}: {res['families']} families, {res['intents']} "
                  f"intents, {res['phrasings']} phrasings + {res['unrelated']} unrelated = "
                  f"{res['queries']} queries; best possible hit rate "
                  f"{_pct(res['best_possible_hit_rate'])})", "",
                  "| decision | floor | hit rate | wrong (of all queries) | wrong among hits |",
                  "|---|---|---|---|---|"]
        old = dig(before, "splits", split, "configs") or {}
        if old.get("defaults"):
            o = old["defaults"]
            lines.append(f"| before: near-miss guard, default floor | {o['floor']} | "
                         f"{_pct(o['hit_rate'])} | {_pct(o['wrong_rate'], 2)} ({o['wrong']}) | "
                         f"{_pct(o['wrong_among_hits'])} |")
        first = dig(r.get("quality_stream_phase1"), "splits", split, "configs", "defaults")
        if first:
            lines.append(f"| phase 1: the first semantic decision | {first['floor']} | "
                         f"{_pct(first['hit_rate'])} | {_pct(first['wrong_rate'], 2)} "
                         f"({first['wrong']}) | {_pct(first['wrong_among_hits'])} |")
        for name, c in res["configs"].items():
            label = _label(name)
            bold = "**" if name == "defaults" else ""
            lines.append(f"| {bold}{label}{bold} | {c['floor']} | {bold}{_pct(c['hit_rate'])}{bold}"
                         f" | {bold}{_pct(c['wrong_rate'], 2)}{bold} ({c['wrong']}) | "
                         f"{_pct(c['wrong_among_hits'])} |")
        spread = res.get("defaults_over_orders")
        if spread:
            lines += ["", f"The defaults over {len(spread['runs'])} orders of the same queries: "
                      f"hit rate {_pct(spread['hit_rate_mean'])} "
                      f"({_pct(spread['hit_rate_range'][0])}-{_pct(spread['hit_rate_range'][1])}), "
                      f"wrong {_pct(spread['wrong_rate_mean'], 2)} "
                      f"({_pct(spread['wrong_rate_range'][0], 2)}-"
                      f"{_pct(spread['wrong_rate_range'][1], 2)})."]
        bounds = [(name, c) for name, c in res["configs"].items() if "error_bound" in c["options"]]
        if bounds:
            lines += ["", "Error bounds (the defaults' decision as the prior; a miss explores, "
                      "the stream's put verifies): " + "; ".join(
                          f"{CONFIG_LABELS.get(name, name)} explored {c.get('explorations')} "
                          f"({c.get('outcomes_wrong')} wrong)" + (
                              f", over {len(o['runs'])} orders hit {_pct(o['hit_rate_mean'])}, "
                              f"wrong {_pct(o['wrong_rate_mean'], 2)} "
                              f"({_pct(o['wrong_rate_range'][0], 2)}-"
                              f"{_pct(o['wrong_rate_range'][1], 2)})"
                              if (o := c.get("over_orders")) else "")
                          for name, c in bounds) + "."]
        a = res.get("attacks")
        if a:
            old_a = dig(before, "splits", split, "attacks")
            lines += ["", f"Attack pairs (each in a fresh namespace at the defaults): "
                      f"**{a['served']} of {a['pairs']} served** ({a['served_per_74']} per 74)"
                      + (f"; before the decision {old_a['served']} of {old_a['pairs']}"
                         if old_a else "") + ". Served: " + ("; ".join(
                             f"\"{x['stored']}\" -> \"{x['query']}\" ({x['kind']}, "
                             f"{x['similarity']})" for x in a["served_examples"]) or "none") + "."]
        cal = dig(res, "configs", "defaults", "p_wrong_of_hits")
        d = dig(res, "configs", "defaults") or {}
        if cal:
            lines += ["", f"`hit.p_wrong` at the defaults: its sum over the {d.get('hits')} hits "
                      f"predicts {cal['predicted_wrong']} wrong answers; {d.get('wrong')} were "
                      f"wrong (mean p_wrong {cal['right_mean']} on right hits, "
                      f"{cal['wrong_mean']} on wrong ones)."]
        lat = dig(res, "configs", "defaults", "latency")
        if lat:
            lines += ["", f"Time the decision adds to a semantic lookup (beyond the embedding, "
                      f"{lat['lookups']} lookups): p50 {num(lat['added_p50_ms'], 3)} ms, p95 "
                      f"{num(lat['added_p95_ms'], 3)} ms, mean {num(lat['added_mean_ms'], 3)} ms."]
        lines.append("")
    curves = {split: res["tradeoff"] for split, res in s["splits"].items() if res.get("tradeoff")}
    if curves:
        floors = sorted({p["floor"] for c in curves.values() for p in c})
        lines += ["The trade-off curve (the decision along its floor; "
                  "`benchmarks/results/quality_stream_tradeoff.png`): hit rate / wrong answers, "
                  "both of all queries.", "",
                  "| floor | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
        for f in floors:
            cells = []
            for c in curves.values():
                p = next((x for x in c if x["floor"] == f), None)
                cells.append("-" if p is None else
                             f"{_pct(p['hit_rate'])} / {_pct(p['wrong_rate'], 2)}")
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
        lines += ["", "![trade-off](../benchmarks/results/quality_stream_tradeoff.png)", ""]
    goals = s.get("goals") or []
    if goals:
        lines += ["| goal (issue 22, measured here) | target | measured | met |", "|---|---|---|:---:|"]
        for g in goals:
            sign = ">=" if g.get("at_least") else "<="
            flag = "yes" if g["met"] else "**no**"
            lines.append(f"| {g['goal']} | {sign} {g['target']} {g['unit']} | "
                         f"{g['measured']} {g['unit']} | {flag} |")
    return "\n".join(lines).rstrip()


def bound_block(r: Results) -> str:
    """docs/quality.md, "Error bound": the mean over the stream's orders of every bound on
    every split, beside the defaults (wrong answers of all queries / hit rate)."""
    s = r.get("quality_stream")
    if not s:
        return "Not measured: run `python scripts/quality_stream.py`."
    splits = s["splits"]
    names = sorted({n for res in splits.values() for n, c in res["configs"].items()
                    if "error_bound" in c["options"] and c.get("over_orders")},
                   key=lambda n: float(n.split()[-1]))
    lines = ["| bound | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]

    def cell(o: dict[str, Any] | None) -> str:
        return "-" if not o else f"{_pct(o['wrong_rate_mean'], 2)} / {_pct(o['hit_rate_mean'])}"

    for name in names:
        lines.append(f"| {name.split()[-1]} | " + " | ".join(
            cell(dig(res, "configs", name, "over_orders")) for res in splits.values()) + " |")
    lines.append("| defaults (no bound) | " + " | ".join(
        cell(res.get("defaults_over_orders")) for res in splits.values()) + " |")
    return "\n".join(lines)


def decision_block(r: Results) -> str:
    """docs/quality.md: the older figures at MiniLM's default floor, with the decision."""
    g = dig(r, "quality", "embedders", "minilm", "guard")
    if not g:
        return "Not measured: run `python scripts/quality.py`."
    p, h, w = (dig(g, k, "at_default") or {} for k in ("pairs", "hard_negatives", "rewordings"))
    lat = g.get("latency") or {}
    real = g.get("real_cache_check") or {}
    t = g.get("default_threshold")
    lines = [f"`scripts/quality.py` (`benchmarks/results/quality.json`; "
             f"{run_note(dig(r, 'quality', 'meta', 'date'), dig(r, 'quality', 'meta', 'load_average'))}"
             f"), MiniLM at its default floor {t}:", "",
             "| measure | cosine alone | with the decision (default) |", "|---|---|---|"]
    if p:
        lines.append(f"| paraphrase pairs ({real.get('queries', '?')}): correct / wrong hits | "
                     f"{_pct(p['no_guard']['correct'])} / {_pct(p['no_guard']['wrong'])} | "
                     f"{_pct(p['guard']['correct'])} / {_pct(p['guard']['wrong'])} |")
    if h:
        lines.append(f"| hard negatives ({h['n']}): false hits | {_pct(h['no_guard'])} | "
                     f"{_pct(h['guard'])} |")
    if w:
        lines.append(f"| rewordings: correct hits | {_pct(w['no_guard']['correct'])} | "
                     f"{_pct(w['guard']['correct'])} |")
    if lat:
        lines.append(f"| decision per comparison, texts read cold: p50 (p99) | - | "
                     f"{num(lat.get('p50_ms'), 3)} ms ({num(lat.get('p99_ms'), 2)} ms) |")
    if real:
        lines += ["", f"Through the real cache at {real.get('threshold')}: the derived decision "
                  f"on {real['queries'] - real['mismatches']} of {real['queries']} queries "
                  f"({real.get('guard_rejections')} rejections counted)."]
    return "\n".join(lines)


__all__ = ["decision_block", "stream_block", "stream_rows"]
