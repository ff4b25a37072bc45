"""What the docs say about the program holds (issue 20, item 16): the demo's table, the
blank-namespace rule, the README's trust snippet, the stub server and what the demo leaves
in a checkout."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import semcache
from semcache.demo import run_demo

ROOT = Path(semcache.__file__).parent.parent


def test_the_demo_writes_only_what_a_checkout_ignores(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    directory = tmp_path / inspect.signature(run_demo).parameters["directory"].default
    directory.mkdir()
    # every file a cache of the demo's makes: database, WAL, mirror, lock, claims
    with semcache.open(directory / "demo.db", embedder="hashing") as cache:
        cache.put("What is the capital of France?", "Paris")
        cache.get("Tell me the capital of France")  # a semantic lookup maps the mirror
        with cache.claim(b"k"):
            pass
        names = sorted(p.name for p in directory.iterdir())
    assert {"demo.db", "demo.db.claims", "demo.db.lock"} <= set(names)
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert status.split() == ["??", ".gitignore"], status


def test_the_demo_table_shows_what_the_demo_prints() -> None:
    text = (ROOT / "docs" / "cli.md").read_text("utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| 13 |"))
    # the demo prints a similarity only for semantic hits: a miss shows none
    assert "MISS" in row and not re.search(r"similarity \d", row)


def test_a_blank_namespace_is_refused_as_the_docs_say(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "integrations.md").read_text("utf-8")
    assert "is accepted\n  everywhere" not in text and "blank one" in text
    with semcache.open(tmp_path / "c.db", embedder="hashing") as cache:
        for blank in ("", "   "):
            with pytest.raises(semcache.InvalidInputError):
                cache.put("q", "a", namespace=blank)


def test_the_readme_checks_for_a_miss_before_feedback() -> None:
    text = (ROOT / "README.md").read_text("utf-8")
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "cache.feedback(hit" in line:
            before = "\n".join(lines[max(0, i - 3):i + 1])
            assert "hit is not None" in before, before


def test_the_stub_server_is_documented_and_runs_as_documented(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "integrations.md").read_text("utf-8")
    assert "python -m semcache.demo.openai_stub --port 8000" in text
    proc = subprocess.run([sys.executable, "-m", "semcache.demo.openai_stub", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--port" in proc.stdout and "--latency" in proc.stdout
