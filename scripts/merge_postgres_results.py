#!/usr/bin/env python3
"""Fold separate cache-level runs of bench_postgres.py into postgres.json.

    python scripts/merge_postgres_results.py benchmarks/results/postgres_semantic.json:1000000 \
        benchmarks/results/postgres_semantic_100k.json:100000 \
        benchmarks/results/postgres_puts.json:throughput

A 1M-entry PostgreSQL cache takes ~10 min to build, so the semantic figures may come from a
run of their own; each ``FILE:SIZE`` replaces ``cache.semantic_get[SIZE]`` of
postgres.json with that run's row, records where it came from (date, arguments, load
average) under ``cache.semantic_get_runs``, and recomputes the goals and README rows.
``FILE:throughput`` replaces the throughput points that run measured (e.g. ``put_8_procs``
from ``--kinds put put_relaxed``), recorded under ``cache.throughput_runs``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_postgres import goals_and_headline  # noqa: E402 - the sibling script

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "benchmarks" / "results" / "postgres.json"


def main(argv: list[str]) -> int:
    main_result = json.loads(MAIN.read_text())
    runs = main_result["cache"].setdefault("semantic_get_runs", {})
    for arg in argv:
        path, _, size = arg.rpartition(":")
        other = json.loads(Path(path).read_text())
        source = {"file": Path(path).name, "date": other.get("date"), "argv": other["argv"],
                  "load_average_start": other["load_average_start"],
                  "load_average_end": other["load_average_end"]}
        if size == "throughput":
            points = other["cache"]["throughput"]
            main_result["cache"]["throughput"].update(points)
            done = main_result["cache"].setdefault("throughput_runs", {})
            done.update({name: source for name in points})
            continue
        main_result["cache"]["semantic_get"][size] = other["cache"]["semantic_get"][size]
        runs[size] = source
    main_result["goals"], main_result["headline"] = goals_and_headline(main_result)
    MAIN.write_text(json.dumps(main_result, indent=2) + "\n")
    for goal in main_result["goals"]:
        print(goal)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
