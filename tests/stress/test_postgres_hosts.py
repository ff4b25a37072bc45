"""Several hosts on one PostgreSQL cache, simulated by 8 processes with a pool each, and a
writer killed with SIGKILL mid-write (scripts/stress_postgres.py does the work in real
processes against the test server; the long runs are the slow tests and the script)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.pg_server import PgServer
from tests.stress.stress_helpers import ROOT

SCRIPT = ROOT / "scripts" / "stress_postgres.py"


def run(url: str, *args: str, timeout: float = 900) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--url", url, "--out", "-"],
                          capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"stress_postgres.py failed ({proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}") from None


def _assert_hosts(hosts: dict[str, Any], procs: int) -> None:
    assert hosts["errors"] == [] and hosts["exceptions_escaped"] == 0
    assert hosts["exitcodes"] == [0] * procs
    assert hosts["wrong_answers"] == 0, hosts["wrong"]
    assert hosts["missing_after"] == 0, hosts["missing"]
    assert hosts["resurrected"] == 0
    for name, pair in hosts["counters"].items():
        assert pair["server"] == pair["expected"], name
    assert hosts["verify_ok"], hosts["verify_problems"]
    counts = hosts["counts"]
    assert counts["puts"] > 100 * procs // 8 and counts["hits"] > 0 and counts["deletes"] > 0
    assert hosts["ok"]


def _assert_kill(kill: dict[str, Any], kills: int) -> None:
    assert kill["failures"] == []
    assert kill["kills"] == kills
    for name in ("verify_failures", "lost", "resurrected", "wrong_values", "torn_batches",
                 "semantic_misses"):
        assert kill[name] == 0, name
    assert kill["acked_puts"] > kills  # the writer really worked between kills
    assert kill["ok"]


def test_eight_hosts_mixed_load_and_killed_writers(pg_server: PgServer) -> None:
    report = run(pg_server.url, "full", "--procs", "8", "--seconds", "10", "--kills", "5",
                 "--seed", "3")
    _assert_hosts(report["hosts"], 8)
    _assert_kill(report["kill"], 5)
    assert report["ok"]


@pytest.mark.slow
def test_eight_hosts_long_and_fifty_kills(pg_server: PgServer) -> None:
    report = run(pg_server.url, "full", "--procs", "8", "--seconds", "60", "--kills", "50",
                 "--seed", "5", timeout=3600)
    _assert_hosts(report["hosts"], 8)
    _assert_kill(report["kill"], 50)
