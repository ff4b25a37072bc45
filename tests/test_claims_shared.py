"""One claims descriptor per file per process (issue 20, item 10).

SQLite claims are ``lockf`` byte ranges on ``<db>.claims``; the kernel drops every such lock
of a process when the process closes *any* descriptor of the file. Closing a second
``Cache`` on the same file used to release the first one's claims: another process then
fetched the same answer again. A real second process observes the claim here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import semcache

_PROBE = """
import sys, semcache
cache = semcache.open(sys.argv[1])
claim = cache.claim(sys.argv[2].encode(), wait=0)
print("free" if claim.held else "held")
claim.release()
cache.close()
"""


def _observed(path: Path, key: str) -> str:
    """What another process sees of the claim on ``key``: "held" or "free"."""
    return subprocess.run([sys.executable, "-c", _PROBE, str(path), key], capture_output=True,
                          text=True, check=True, timeout=120).stdout.strip()


def test_closing_a_second_cache_keeps_the_first_ones_claims(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    first = semcache.open(path, embedder="hashing")
    second = semcache.open(path)
    try:
        with first.claim(b"request-1") as claim:
            assert claim.held and not claim.waited
            assert _observed(path, "request-1") == "held"
            with second.claim(b"request-2"):  # the second cache claims, then closes
                pass
            second.close()
            assert _observed(path, "request-1") == "held"
        assert _observed(path, "request-1") == "free"
    finally:
        second.close()
        first.close()


def test_two_caches_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with semcache.open(path, embedder="hashing") as first, semcache.open(path) as second:
        with first.claim(b"request-1"):
            # POSIX would grant the same process the byte twice: the shared descriptor
            # knows it is held by another cache of this process
            claim = second.claim(b"request-1", wait=0.05)
            assert not claim.held and claim.waited
        with second.claim(b"request-1", wait=0) as claim:
            assert claim.held
        first.close()  # closing one cache releases only its own claims
        with second.claim(b"request-3") as claim:
            assert claim.held and _observed(path, "request-3") == "held"
