"""``semcache demo``: a scripted chat session that shows semcache saving real calls.

Offline and self-contained: it starts the built-in OpenAI-compatible stub server
(:mod:`semcache.demo.openai_stub`) with a simulated model latency, wraps
``openai.OpenAI(base_url=..., api_key="demo")`` with :func:`semcache.wrap` on a cache file
in ``--dir`` (default ``./semcache-demo/``), and asks a fixed list of questions:

* first questions miss and reach the "model";
* repeats hit the exact tier;
* paraphrases hit the semantic tier (the default local MiniLM embedder; the paraphrases
  were chosen to score well above its 0.92 threshold);
* the same question for another model, or under another system prompt, misses: a hit is
  only ever served within one model + parameters + conversation scope;
* a look-alike question with a different meaning misses.

The file is kept, so a second run answers everything from it (persistence).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, TextIO

from semcache.cli import output as fmt

DEMO_FILE = "demo.db"
MODEL = "gpt-4o-mini"
OTHER_MODEL = "gpt-4o"
SYSTEM = "You are a concise assistant."
OTHER_SYSTEM = "You are a pirate. Answer like one."


@dataclass(frozen=True)
class Step:
    """One scripted call, and why it is in the script."""

    question: str
    note: str
    model: str = MODEL
    system: str = SYSTEM


#: The session. Paraphrase similarities with all-MiniLM-L6-v2 (measured): France 0.946,
#: Python list 0.978, hash table 0.984, Moon 0.950; the look-alike (Germany) 0.663.
SCRIPT: tuple[Step, ...] = (
    Step("What is the capital of France?", "new question"),
    Step("How do I reverse a list in Python?", "new question"),
    Step("Explain what a hash table is.", "new question"),
    Step("How far is the Moon from the Earth?", "new question"),
    Step("What is the capital of France?", "repeat"),
    Step("How do I reverse a list in Python?", "repeat"),
    Step("Tell me the capital of France.", "paraphrase"),
    Step("How to reverse a Python list?", "paraphrase"),
    Step("Can you explain what a hash table is?", "paraphrase"),
    Step("What is the distance from the Earth to the Moon?", "paraphrase"),
    Step("What is the capital of France?", "another model", model=OTHER_MODEL),
    Step("What is the capital of France?", "another system prompt", system=OTHER_SYSTEM),
    Step("What is the capital of Germany?", "look-alike, other meaning"),
)


_WARM_UP = (
    "warm up",
    "Loading the embedding model before the session starts.",
    "A somewhat longer sentence, so that the model sees a few different input lengths.",
    "Short one?",
)


def _row(n: str, result: str, ms: str, model: str, why: str, question: str,
         answer: str) -> str:
    return (f"{n:>2}  {result:<22}  {ms:>6}  {model:<11}  {why:<25}  "
            f"{fmt.one_line(question, 44):<44}  {fmt.one_line(answer, 40)}").rstrip()


def _say(out: TextIO | None, text: str = "") -> None:
    if out is not None:
        out.write(text + "\n")
        out.flush()


def run_demo(directory: str = "semcache-demo", latency: float = 0.4,
             out: TextIO | None = None) -> dict[str, Any]:
    """Run the scripted session; print to ``out`` (if given) and return a summary dict."""
    import openai

    import semcache
    from semcache.demo.openai_stub import StubOpenAIServer

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, DEMO_FILE)
    existed = os.path.exists(path)
    cache = semcache.open(path)
    calls: list[dict[str, Any]] = []
    try:
        _say(out, f"semcache demo: cache file {path} "
                  f"({'existing: answers may come from an earlier run' if existed else 'new'})")
        t0 = time.perf_counter()
        cache.warmup()
        if cache.embedder is not None:
            # Load the model, and let a traced model settle (its first calls are slow),
            # so that the latencies below are the steady-state ones. Texts unlike the
            # script's, so the embedding memo does not flatter the lookups.
            for text in _WARM_UP:
                cache.embedder.embed([text])
        load_s = time.perf_counter() - t0
        _say(out, f"embedder {cache.embedder_name} ready in {load_s:.1f}s; "
                  f"similarity threshold {cache.similarity_threshold:g}")
        with StubOpenAIServer(latency=latency) as server:
            _say(out, f"stub OpenAI server at {server.base_url} "
                      f"(simulated model latency {latency:g}s)")
            _say(out)
            client = semcache.wrap(
                openai.OpenAI(base_url=server.base_url, api_key="demo", max_retries=0), cache)
            _say(out, _row("#", "result", "ms", "model", "step", "question", "answer"))
            for n, step in enumerate(SCRIPT, start=1):
                before = server.request_count
                started = time.perf_counter()
                completion = client.chat.completions.create(
                    model=step.model,
                    messages=[{"role": "system", "content": step.system},
                              {"role": "user", "content": step.question}],
                )
                ms = (time.perf_counter() - started) * 1000
                info = semcache.cache_info(completion)
                reached_model = server.request_count > before
                if info is None or not info.hit or reached_model:
                    result, kind, sim = "MISS", "miss", None
                elif info.kind == "exact":
                    result, kind, sim = "HIT exact", "exact", 1.0
                else:
                    sim = float(info.similarity or 0.0)
                    result, kind = f"HIT semantic sim={sim:.2f}", "semantic"
                answer = completion.choices[0].message.content or ""
                usage = completion.usage
                calls.append({
                    "n": n, "question": step.question, "model": step.model,
                    "system": step.system, "why": step.note, "result": kind,
                    "similarity": None if sim is None else round(sim, 4),
                    "latency_ms": round(ms, 1), "reached_model": reached_model,
                    "tokens": usage.total_tokens if usage is not None else 0,
                    "answer": answer,
                })
                _say(out, _row(str(n), result, f"{ms:.1f}", step.model, step.note,
                               step.question, answer.splitlines()[0] if answer else ""))
            model_calls = server.request_count
        stats = cache.stats()
    finally:
        cache.close()
    summary = _summarize(calls, latency, model_calls)
    summary.update(path=path, existed=existed, embedder_load_s=round(load_s, 2),
                   file_stats={k: stats[k] for k in ("entries", "hits", "misses",
                                                     "tokens_saved", "file_bytes")})
    _say(out)
    _say(out, f"{summary['calls']} calls: {summary['hits']} hits "
              f"({summary['exact_hits']} exact, {summary['semantic_hits']} semantic), "
              f"{summary['misses']} misses; hit rate {summary['hit_rate'] * 100:.0f}%")
    _say(out, f"model calls made: {model_calls}; time saved ~{summary['time_saved_s']:.1f}s; "
              f"tokens saved {summary['tokens_saved']}")
    _say(out, f"cache file {path}: {stats['entries']} entries, "
              f"{fmt.human_bytes(stats['file_bytes'])}; all runs so far saved "
              f"{stats['tokens_saved']} tokens")
    if existed:
        _say(out, "answers above came from the file written by an earlier run")
    else:
        _say(out, f"run it again to see every answer served from the file "
                  f"(then: semcache stats {path}; semcache ui {path})")
    return summary


def _summarize(calls: list[dict[str, Any]], latency: float, model_calls: int) -> dict[str, Any]:
    hits = [c for c in calls if c["result"] != "miss"]
    misses = [c for c in calls if c["result"] == "miss"]
    # What a hit saved: the cost of a call that reaches the model (measured on this
    # run's misses; the simulated latency when every call was a hit) minus its own time.
    miss_ms = (sum(c["latency_ms"] for c in misses) / len(misses)) if misses \
        else latency * 1000
    saved_ms = sum(max(miss_ms - c["latency_ms"], 0.0) for c in hits)
    return {
        "calls": len(calls), "hits": len(hits), "misses": len(misses),
        "exact_hits": sum(c["result"] == "exact" for c in calls),
        "semantic_hits": sum(c["result"] == "semantic" for c in calls),
        "hit_rate": round(len(hits) / len(calls), 4) if calls else 0.0,
        "model_calls": model_calls,
        "time_saved_s": round(saved_ms / 1000, 3),
        "tokens_saved": sum(c["tokens"] for c in hits),
        "calls_detail": calls,
    }


__all__ = ["SCRIPT", "Step", "run_demo"]
