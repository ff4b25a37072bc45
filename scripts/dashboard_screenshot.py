#!/usr/bin/env python3
"""docs/dashboard.png: the dashboard of a cache after a simulated month of traffic.

    python scripts/dashboard_screenshot.py                 # writes docs/dashboard.png
    python scripts/dashboard_screenshot.py --keep /tmp/d   # and keeps the cache there

Everything is real except the clock: chat requests go through ``semcache.wrap`` and the
real ``openai`` SDK to the local stub server (semcache.demo.openai_stub), into a MiniLM cache
in three namespaces; a simulated clock spreads them over the 30 days that end now (more
each day, and a busy last hour), so the charts have something to show. The requests are
the paraphrase pairs and hard negatives of benchmarks/data: stored questions asked again
(exact hits), their paraphrases (semantic hits), look-alike questions that ask something
else (near misses the guard rejects), new questions (misses); a few semantic hits are
reported wrong with ``Cache.feedback``. Then ``semcache ui`` serves the file and Debian's
Chromium (``--headless --screenshot``) takes the picture, prompts hidden as by default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import semcache  # noqa: E402
from semcache.demo.openai_stub import StubOpenAIServer  # noqa: E402

DAY = 86_400
#: Namespace and model of each kind of traffic.
APPS = (("support", "gpt-4o-mini"), ("search", "gpt-4.1-mini"), ("docs", "claude-haiku-4-5"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(path: str, seed: int) -> dict[str, Any]:
    import openai

    rng = random.Random(seed)
    pairs = json.loads((REPO / "benchmarks/data/paraphrase_pairs.json").read_text())
    negatives = json.loads((REPO / "benchmarks/data/hard_negatives.json").read_text())["pairs"]
    rng.shuffle(pairs)
    end = time.time()
    clock = Clock(end - 30 * DAY)
    asked: list[tuple[dict[str, str], str, str]] = []  # (pair, namespace, model) stored
    with semcache.open(path, ttl=None, clock=clock) as cache, StubOpenAIServer() as stub:
        client = semcache.wrap(openai.OpenAI(base_url=stub.base_url, api_key="sk-demo"), cache)
        fresh = iter(pairs)
        near = iter(negatives)

        def request(text: str, namespace: str, model: str) -> Any:
            return client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}],
                semcache={"namespace": namespace})

        def one(t: float) -> None:
            clock.now = t
            roll = rng.random()
            if not asked or roll < 0.3:  # a new question: a miss, then stored
                pair = next(fresh)
                namespace, model = rng.choice(APPS)
                request(pair["origin"], namespace, model)
                asked.append((pair, namespace, model))
            elif roll < 0.62:  # asked again, word for word
                pair, namespace, model = rng.choice(asked)
                request(pair["origin"], namespace, model)
            elif roll < 0.95:  # asked again, in other words
                pair, namespace, model = rng.choice(asked)
                completion = request(pair["similar"], namespace, model)
                info = semcache.cache_info(completion)
                if info is not None and info.hit and info.kind == "semantic" and \
                        rng.random() < 0.04:
                    cache.feedback(info.entry_id, False, query=pair["similar"])
            else:  # a look-alike question that asks something else
                negative = next(near)
                namespace, model = APPS[0]
                request(negative["stored"], namespace, model)
                request(negative["query"], namespace, model)

        for day in range(30):
            start = end - (30 - day) * DAY
            n = 12 + 3 * day
            for t in sorted(start + rng.uniform(0, DAY - 3600) for _ in range(n)):
                one(t)
        for t in sorted(end - 3600 + rng.uniform(0, 3590) for _ in range(160)):
            one(t)
        return cache.stats()


def screenshot(path: str, out: Path, width: int, height: int) -> None:
    # Run where the file is, so that the page shows its name as a newcomer would type it.
    ui = subprocess.Popen([sys.executable, "-m", "semcache", "ui", os.path.basename(path),
                           "--port", "0", "--json"], stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(path), env={**os.environ, "PYTHONPATH": str(REPO)})
    profile = tempfile.mkdtemp(prefix="semcache-chromium-")
    try:
        assert ui.stdout is not None
        url = json.loads(ui.stdout.readline())["url"]
        subprocess.run([os.environ.get("SEMCACHE_CHROMIUM", "chromium"), *CHROMIUM_FLAGS,
                        f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--screenshot={out}", url], check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        ui.terminate()
        ui.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "docs/dashboard.png"))
    parser.add_argument("--keep", metavar="DIR", help="keep the cache file in DIR")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1530)
    args = parser.parse_args()
    directory = args.keep or tempfile.mkdtemp(prefix="semcache-dashboard-")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "llm.db")
    if os.path.exists(path):
        sys.exit(f"{path} exists: pick another --keep directory")
    started = time.monotonic()
    stats = simulate(path, args.seed)
    print(f"simulated traffic in {time.monotonic() - started:.0f} s: "
          f"{stats['hits']} hits ({stats['exact_hits']} exact, {stats['semantic_hits']} "
          f"semantic), {stats['misses']} misses, {stats['guard_rejections']} near misses "
          f"rejected, {stats['entries']} entries")
    screenshot(path, Path(args.out).resolve(), args.width, args.height)
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
