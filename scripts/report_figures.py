"""The figures of scripts/report.py: rows of README's headline table and the goals, read
from the JSON results (each source optional; a missing figure is left out or shown as "?")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SOURCES = ("exact", "concurrency", "semantic", "kernels", "minilm", "install", "quality",
           "quality_stream", "quality_stream_before", "quality_stream_phase1", "stress", "proxy", "postgres")

Results = dict[str, dict[str, Any]]


# -- helpers ---------------------------------------------------------------------------------


def load_results(directory: Path = RESULTS) -> Results:
    out: Results = {}
    for name in SOURCES:
        path = directory / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def dig(data: Any, *path: Any) -> Any:
    """``data[path[0]][path[1]]...``, or None as soon as a step is missing."""
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "?"
    if abs(value) >= 1000 and digits <= 1:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def span(values: list[float] | None, digits: int = 1, unit: str = "") -> str:
    """`` (lo-hi unit)`` of per-run values, or nothing when the run recorded none."""
    if not values or len(values) < 2 or values[0] == values[-1]:
        return ""
    return f" ({num(values[0], digits)}-{num(values[-1], digits)}{unit})"


def loads_of(*candidates: Any) -> list[float]:
    """1-minute load averages found in the given JSON fragments (lists or min/max dicts)."""
    found: list[float] = []
    for c in candidates:
        if isinstance(c, (int, float)):
            found.append(float(c))
        elif isinstance(c, list) and c and isinstance(c[0], (int, float)):
            found.append(float(c[0]))
        elif isinstance(c, dict):
            found += [float(c[k]) for k in ("min", "max") if isinstance(c.get(k), (int, float))]
    return found


def run_note(date: Any, *load_fragments: Any) -> str:
    loads = loads_of(*load_fragments)
    when = str(date)[:10] if date else "date not recorded"
    if not loads:
        return f"{when}, load not recorded"
    lo, hi = min(loads), max(loads)
    return f"{when}, load {lo:.1f}" + ("" if round(lo, 1) == round(hi, 1) else f"-{hi:.1f}")


# -- README rows --------------------------------------------------------------------------------


Row = tuple[str, str, str, str]  # what, semcache, peers (same run), run note


def exact_rows(r: Results) -> list[Row]:
    e = r.get("exact")
    if e is None:
        return []
    note = run_note(e.get("date"), dig(e, "machine", "loadavg_start"),
                    dig(e, "machine", "loadavg_end"))
    rows: list[Row] = []
    hit, disk, mem = dig(e, "hit", "semcache"), dig(e, "hit", "diskcache"), dig(e, "hit",
                                                                               "dict+sha256")
    if hit and disk:
        ratio = dig(e, "ratios", "hit", "diskcache") or {
            "median": hit["median_us"] / disk["median_us"]}
        rows.append((
            "exact hit, 1 KB response, p50",
            f"{num(hit['median_us'])} us{span(hit.get('range_us'), 1, ' us')}",
            f"diskcache `get` {num(disk['median_us'])} us (semcache {ratio['median']:.2f}x"
            f"{span(ratio.get('range'), 2, 'x')}); in-memory dict + sha256 "
            f"{num(mem['median_us'] if mem else None)} us (not persistent, not shared)", note))
    put, dset = dig(e, "put", "semcache"), dig(e, "put", "diskcache")
    if put and dset:
        ratio = dig(e, "ratios", "put", "diskcache")
        rows.append((
            "single put, 1 KB response, p50",
            f"{num(put['median_us'])} us{span(put.get('range_us'), 1, ' us')}",
            f"diskcache `set` {num(dset['median_us'])} us (semcache {ratio['median']:.2f}x"
            f"{span(ratio.get('range'), 2, 'x')})", note))
    bulk, floor = dig(e, "put_many", "semcache"), dig(e, "put_many", "sqlite floor")
    full = dig(e, "put_many", "semcache incl. sqlite-vec catch-up")
    if bulk and floor:
        rows.append((
            f"`put_many` of {dig(e, 'config', 'dim') or '?'}-d vectors",
            f"{num(bulk['entries_per_s'], 0)} entries/s{span(bulk.get('range'), 0)}"
            + (f"; {num(full['entries_per_s'], 0)} with the deferred sqlite-vec rows written"
               if full else ""),
            f"the same rows inserted by bare SQL (`executemany`, one transaction per batch): "
            f"{num(floor['entries_per_s'], 0)} entries/s", note))
    return rows


def _search_row(s: dict[str, Any], label: str, note: str) -> Row:
    lat, ratios = s["latency"], s.get("ratios_semcache_over", {})
    own = lat["semcache"]
    peers = []
    names = {"bsc": "binary-semantic-cache (Rust)",
             "numpy columns": "plain numpy column scan of the codes",
             "numpy flat": "numpy float scan",
             "faiss flat": "faiss `IndexFlatIP`"}
    for key, name in names.items():
        if key in lat:
            ratio = ratios.get(key, {})
            peers.append(f"{name} {num(lat[key]['median_ms'], 2)} ms"
                         + (f" ({ratio['median']:.2f}x)" if "median" in ratio else ""))
    return (label, f"{num(own['median_ms'], 2)} ms{span(own.get('range_ms'), 2, ' ms')}",
            "; ".join(peers), note)


def semantic_rows(r: Results) -> list[Row]:
    s = r.get("semantic")
    if s is None:
        return []
    note = run_note(s.get("date"), dig(s, "machine", "loadavg_start"),
                    dig(s, "machine", "loadavg_end"))
    rows: list[Row] = []
    by_size = {x["entries"]: x for x in s.get("search", [])}
    if 100_000 in by_size:
        rows.append(_search_row(by_size[100_000], "semantic search, 100k entries, vector in -> "
                                "decision out, p50", note))
    if 1_000_000 in by_size:
        rows.append(_search_row(by_size[1_000_000], "semantic search, 1M entries, p50", note))
    op = s.get("open")
    if op:
        rows.append((
            "open a 1M-entry file ready to search",
            f"{num(dig(op, 'mirror_present', 'open_plus_first_get_ms'), 0)} ms",
            f"faiss `read_index` {num(op.get('faiss_read_index_plus_search_ms'), 0)} ms; "
            f"binary-semantic-cache reload {num(op.get('bsc_load_codes_plus_search_ms'), 0)} ms",
            note))
    ram = s.get("index_ram")
    if ram:
        own = ram.get("semcache", {})
        rows.append((
            "index RAM per entry",
            f"{num(own.get('mirror_row_bytes'), 0)} B mapped file, shared by all processes "
            f"(RSS growth {num(own.get('rss_bytes_per_entry'))} B)",
            f"binary-semantic-cache {num(dig(ram, 'bsc', 'rss_bytes_per_entry'))} B private per "
            f"process; float scans ~{num(dig(ram, 'numpy flat', 'rss_bytes_per_entry'), 0)} B",
            note))
    return rows


def minilm_warm(m: dict[str, Any]) -> dict[str, Any] | None:
    """The warm run of minilm.json with OpenBLAS choosing its kernels (production)."""
    warm = dig(m, "warm")
    return dig(warm, "auto") if isinstance(warm, dict) and "auto" in warm else warm


def minilm_rows(r: Results) -> list[Row]:
    m = r.get("minilm")
    if m is None:
        return []
    note = run_note(dig(m, "machine", "date"), dig(m, "machine", "loadavg_start"),
                    dig(m, "machine", "loadavg_end"))
    rows: list[Row] = []
    warm = minilm_warm(m)
    embed, encode = dig(warm, "minilm", "short_questions", "embed"), dig(
        warm, "st_encode", "short_questions", "embed")
    ratio = dig(warm, "ratios", "short_questions", "embed_vs_st_encode")
    if embed and encode and ratio:
        tokens = dig(warm, "query_sets", "short_questions", "median_tokens")
        rows.append((
            f"MiniLM query embedding, one short question ({num(tokens, 0)} tokens), p50",
            f"{num(embed['median_ms'], 2)} ms (numpy, no torch, 1 thread)",
            f"`SentenceTransformer.encode` on torch, 1 thread: {num(encode['median_ms'], 2)} ms "
            f"(semcache {ratio['ratio']:.2f}x{span(ratio.get('range'), 2, 'x')})", note))
    mine, st = dig(warm, "minilm", "paraphrase", "semantic_hit"), dig(
        warm, "st", "paraphrase", "semantic_hit")
    if mine:
        rows.append((
            "MiniLM semantic hit, text in -> answer out, p50 (paraphrase queries)",
            f"{num(mine['median_ms'])} ms (numpy MiniLM, no torch)",
            (f"same model on sentence-transformers + torch: {num(st['median_ms'])} ms; "
             if st else "") + "OneLLM documents ~18 ms (not measured here)", note))
    cold, cold_st = dig(m, "cold_start", "minilm"), dig(m, "cold_start", "st")
    if cold:
        rows.append((
            "fresh process: `import semcache` -> first semantic answer",
            f"{num(cold['import_to_answer_s'], 2)} s{span(cold.get('range_s'), 2, ' s')}, "
            f"peak RSS {num(cold.get('peak_rss_mb'), 0)} MB (numpy MiniLM, no torch)",
            (f"sentence-transformers + torch: {num(cold_st['import_to_answer_s'], 2)} s"
             f"{span(cold_st.get('range_s'), 2, ' s')}, {num(cold_st.get('peak_rss_mb'), 0)} MB"
             if cold_st else "-"), note))
    return rows


def other_rows(r: Results) -> list[Row]:
    rows: list[Row] = []
    inst = r.get("install")
    if inst:
        rows.append((
            "install: `[local]` + the MiniLM weights",
            f"{num(dig(inst, 'local', 'venv_mb'), 0)} MB venv, no torch",
            f"with torch + sentence-transformers: {num(dig(inst, 'torch', 'venv_mb'), 0)} MB",
            run_note(dig(inst, "machine", "date"), dig(inst, "machine", "loadavg"))))
    rows += quality_rows(r) + concurrency_rows(r) + stress_rows(r) + proxy_rows(r)
    for name in SOURCES:  # rows a results file offers as they are (e.g. postgres.json)
        for h in r.get(name, {}).get("headline", []) if isinstance(r.get(name), dict) else []:
            rows.append((str(h.get("what")), str(h.get("semcache")), str(h.get("peers", "-")),
                         run_note(h.get("date") or r[name].get("date"), h.get("load"))))
    return rows


def quality_rows(r: Results) -> list[Row]:
    q = r.get("quality")
    e = dig(q, "embedders", "minilm")
    if not e:
        return []
    t = e.get("chosen_threshold")
    row = next((x for x in e.get("rows", []) if x.get("threshold") == t), None)
    if row is None:
        return []
    return [(
        f"paraphrase quality of the cosine alone at its default {t} (MiniLM, "
        f"{e.get('n_queries')} pairs)",
        f"{row['rescore']['correct']:.1%} correct, {row['rescore']['wrong']:.1%} wrong hits; "
        f"decisions = float cosine on {row['agreement_rescore_float']:.0%}",
        f"binary-only decisions (binary-semantic-cache's way): {row['binary']['wrong']:.1%} wrong",
        run_note(dig(q, "meta", "date"), dig(q, "meta", "load_average"),
                 dig(q, "meta", "load_average_end")))] + guard_rows(q, e)


def guard_rows(q: dict[str, Any], e: dict[str, Any]) -> list[Row]:
    """The near-miss guard at the default threshold (scripts/quality_guard.py's figures)."""
    g = e.get("guard") or {}
    hard = dig(g, "hard_negatives", "at_default")
    pairs = dig(g, "pairs", "at_default")
    if not hard or not pairs:
        return []
    return [(
        f"near-miss questions served another question's answer ({hard['n']} hard negatives, "
        f"MiniLM at {hard['threshold']})",
        f"{hard['guard']:.1%} with the guard (on by default; {hard['no_guard']:.1%} without); "
        f"paraphrases {pairs['guard']['correct']:.1%} correct, {pairs['guard']['wrong']:.1%} "
        f"wrong; {num(dig(g, 'latency', 'p50_ms'), 3)} ms p50 per comparison",
        f"the cosine alone, as GPTCache, RedisVL and binary-semantic-cache decide: "
        f"{hard['no_guard']:.1%} of them served",
        run_note(dig(q, "meta", "date"), dig(q, "meta", "load_average"),
                 dig(q, "meta", "load_average_end")))]


def cell_median(value: Any) -> float | None:
    """ops/s of a concurrency cell: a number (older runs) or {"median": ...}."""
    return value.get("median") if isinstance(value, dict) else value


def concurrency_rows(r: Results) -> list[Row]:
    c = r.get("concurrency")
    row = next((x for x in (c or {}).get("rows", []) if x.get("processes") == 8), None)
    if row is None:
        return []
    s, d = row["semcache"], row["diskcache"]
    pr, gr = row["put_ratio"], row["get_ratio"]
    pr_m, gr_m = cell_median(pr), cell_median(gr)
    return [(
        "8 processes on one file",
        f"{num(cell_median(s['get_ops_per_s']), 0)} gets/s, {num(cell_median(s['put_ops_per_s']), 0)} puts/s",
        f"diskcache {num(cell_median(d['get_ops_per_s']), 0)} gets/s, "
        f"{num(cell_median(d['put_ops_per_s']), 0)} puts/s (semcache {gr_m:.2f}x"
        f"{span(gr.get('range') if isinstance(gr, dict) else None, 2, 'x')} / {pr_m:.2f}x"
        f"{span(pr.get('range') if isinstance(pr, dict) else None, 2, 'x')}) - no semantic tier, "
        "LRU by store time",
        run_note(c.get("date"), dig(c, "machine", "loadavg_start"),
                 dig(c, "machine", "loadavg_end"), dig(s, "put_ops_per_s", "loadavg_1min")))]


def stress_rows(r: Results) -> list[Row]:
    k = dig(r, "stress", "kill")
    if not k:
        return []
    return [(f"`kill -9` of a writer, {k.get('kills')} times",
             f"{k.get('lost')} acknowledged puts lost, {k.get('integrity_failures')} integrity "
             "failures", "-", run_note(dig(r, "stress", "started")))]


def proxy_rows(r: Results) -> list[Row]:
    p = r.get("proxy")
    lat = dig(p, "summary", "latency")
    if not lat or "proxy_exact_p50_ms" not in lat:
        return []
    added = dig(p, "summary", "added_on_miss_p50_ms", "median")
    cpu = dig(lat, "proxy_miss_proxy_cpu_ms", "median")
    cpu_note = "" if cpu is None else f" (the proxy's CPU per miss {num(cpu, 2)} ms)"
    return [(
        "`semcache serve` proxy: exact hit over HTTP, p50",
        f"{num(lat['proxy_exact_p50_ms']['median'], 2)} ms; a miss adds {num(added, 2)} ms"
        f"{cpu_note}",
        f"direct to the upstream stub {num(dig(lat, 'direct_p50_ms', 'median'), 2)} ms",
        run_note(p.get("date"), dig(p, "machine", "loadavg_start"),
                 dig(p, "machine", "loadavg_end")))]


# -- goals --------------------------------------------------------------------------------------


Goal = tuple[str, str, str, str, bool | None, str]  # source, goal, target, measured, met, load


def _goal_list(name: str, data: dict[str, Any]) -> list[Goal]:
    out: list[Goal] = []
    for g in data.get("goals", []) if isinstance(data.get("goals"), list) else []:
        unit = g.get("unit", "")
        sign = ">=" if g.get("at_least") else "<="
        rng = g.get("range")
        measured = f"{g.get('measured')} {unit}".strip() + (
            f" ({rng[0]}-{rng[1]})" if isinstance(rng, list) and len(rng) == 2 else "")
        out.append((name, str(g.get("goal")), f"{sign} {g.get('target')} {unit}".strip(),
                    measured, g.get("met"), ""))
    return out


def goals(r: Results) -> list[Goal]:
    out: list[Goal] = []
    for name in SOURCES:
        # Earlier runs kept for comparison are not the current state of any goal.
        if name in r and name not in ("quality_stream_before", "quality_stream_phase1"):
            out += _goal_list(name, r[name])
    for g, met in (dig(r, "install", "goals") or {}).items():
        out.append(("install", str(g), "", "", bool(met), ""))
    q = dig(r, "quality", "embedders", "minilm")
    target = dig(r, "quality", "meta", "goal") or {}
    if q and "goal_met" in q:
        out.append(("quality", "MiniLM default threshold: correct hits, wrong hits, agreement "
                    "with float cosine",
                    f"correct >= {target.get('correct', 0):.0%}, wrong <= "
                    f"{target.get('wrong', 0):.0%}, agreement >= {target.get('agreement', 0):.1%}",
                    str(q.get("reason", "")), bool(q["goal_met"]), ""))
    c = r.get("concurrency")
    row = next((x for x in (c or {}).get("rows", []) if x.get("processes") == 8), None)
    if row and c and c.get("goals"):  # issue 23's goals, decided by bench_concurrency
        for g in c["goals"]:
            lo, hi = g["range"]
            out.append(("concurrency", g["goal"], f">= {g['target']} x",
                        f"{g['measured']} x ({lo}-{hi})", bool(g["met"]), ""))
    elif row:
        for op in ("get", "put"):
            ratio = row[f"{op}_ratio"]
            m = cell_median(ratio)
            rng = ratio.get("range") if isinstance(ratio, dict) else None
            out.append(("concurrency", f"8 processes, {op}s / diskcache", ">= 1.0 x",
                        f"{m} x" + (f" ({rng[0]}-{rng[1]})" if rng else ""),
                        m is not None and m >= 1.0, ""))
    return out


__all__ = ["RESULTS", "SOURCES", "Goal", "Results", "Row", "cell_median", "dig", "exact_rows",
           "goals", "load_results", "minilm_rows", "minilm_warm", "num", "other_rows", "run_note",
           "semantic_rows", "span"]
