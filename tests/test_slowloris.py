"""Slow clients against a real ``semcache serve`` process (slowloris).

An attacker keeps 1,500 connections open that trickle a header line every second and never
finish a request, reopening those the server closes at its next round (as slowloris.py
does). Normal clients must still get answers within a second, the server must never run
out of descriptors, and its log must stay small (1,200 such connections used to take the
proxy down and write 538 MB of log in 40 s). Twice: with the soft file-descriptor limit
at 1,024 and a hard limit above (a common default: the server raises its soft limit), and
with both at 1,024 (the server holds ~350 connections and makes room by closing the
slowest). Smaller tests check each timeout on its own.
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import semcache
from semcache.demo.openai_stub import StubOpenAIServer
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.proxy_helpers import ProxyProcess

ATTACKERS = 1500
ATTACK_SECONDS = 6.0
PARTIAL = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors() -> Iterator[None]:
    """This process holds the attacker's sockets: raise its soft limit for the module."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = ATTACKERS + 512
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.fail(f"the hard file-descriptor limit {hard} is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def stub() -> Iterator[StubOpenAIServer]:
    with StubOpenAIServer() as server:
        yield server


def _proxy(stub: StubOpenAIServer, root: Path, *extra: str,
           nofile: tuple[int, int] = (1024, 1024)) -> ProxyProcess:
    db = root / "proxy.db"
    if not db.exists():
        semcache.open(db, embedder="hashing").close()
    return ProxyProcess(stub.base_url, db, *extra, log_path=root / "proxy.log", nofile=nofile)


class Attacker:
    """Keeps ``count`` connections open, each trickling one header line per second and
    never ending its headers; the connections the server closed are opened again at the
    next round."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.opened = 0
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, selector: selectors.BaseSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            return
        selector.register(sock, selectors.EVENT_WRITE, "new")
        self.opened += 1

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            for _ in range(self.count):
                self._open(selector)
            last_trickle = time.monotonic()
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if key.data == "new":  # connected: the start of a request, then wait
                        try:
                            sock.send(PARTIAL)
                            selector.modify(sock, selectors.EVENT_READ, "open")
                            continue
                        except OSError:
                            pass
                    else:
                        try:
                            if sock.recv(4096):
                                continue  # a 408 / 503 before the close: wait for EOF
                        except BlockingIOError:
                            continue
                        except OSError:
                            pass
                    selector.unregister(sock)  # closed by the server
                    sock.close()
                    self.closed_by_server += 1
                if time.monotonic() - last_trickle > 1.0:
                    last_trickle = time.monotonic()
                    for _ in range(self.count - len(selector.get_map())):
                        self._open(selector)
                    for key in list(selector.get_map().values()):
                        if key.data == "open":
                            try:
                                key.fileobj.send(b"X-Slow: 1\r\n")  # type: ignore[union-attr]
                            except OSError:
                                pass
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()

    def __enter__(self) -> Attacker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.parametrize("nofile", [(1024, 8192), (1024, 1024)], ids=["raised", "at-1024"])
def test_1500_slow_connections_do_not_take_the_proxy_down(
        stub: StubOpenAIServer, tmp_path: Path, nofile: tuple[int, int]) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "What is a slowloris?"}]}
    headers = {"Authorization": "Bearer sk-slowloris"}
    with _proxy(stub, tmp_path, nofile=nofile) as proxy:
        assert proxy.proc is not None
        httpx.post(proxy.url + "/v1/chat/completions", json=chat, headers=headers, timeout=10)
        log_before = proxy.log_path.stat().st_size
        latencies: list[float] = []
        failures: list[str] = []
        peak_fds = 0
        with Attacker(proxy.port, ATTACKERS) as attacker:
            time.sleep(1.0)  # the attack is in place
            deadline = time.monotonic() + ATTACK_SECONDS
            n = 0
            while time.monotonic() < deadline:
                n += 1
                started = time.monotonic()
                try:
                    if n % 3:
                        r = httpx.get(proxy.url + "/healthz", timeout=1.0)
                    else:  # a cached answer: the app's whole path, thread pool included
                        r = httpx.post(proxy.url + "/v1/chat/completions", json=chat,
                                       headers=headers, timeout=1.0)
                        assert r.headers.get("x-semcache") == "hit-exact"
                    r.raise_for_status()
                except (httpx.HTTPError, AssertionError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                latencies.append(time.monotonic() - started)
                peak_fds = max(peak_fds, _descriptors(proxy.proc.pid))
                time.sleep(0.1)
            opened, closed = attacker.opened, attacker.closed_by_server
        log_growth = proxy.log_path.stat().st_size - log_before
        log = proxy.log()
    assert failures == []
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    assert len(latencies) >= 10  # enough probes ran (a loaded machine runs fewer)
    assert opened >= ATTACKERS and closed > 0  # the server made room, the attack went on
    assert peak_fds < nofile[1]
    assert "Too many open files" not in log and "out of system resource" not in log
    assert log_growth < 64_000, log_growth


def test_each_timeout_and_the_limit_on_their_own(stub: StubOpenAIServer, tmp_path: Path) -> None:
    with _proxy(stub, tmp_path, "--header-timeout", "1", "--body-timeout", "1",
                "--max-connections", "4") as proxy:
        # Headers trickled byte by byte: closed (408) at the deadline, not kept alive.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            started = time.monotonic()
            answer = b""
            for byte in PARTIAL:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.05)
                if time.monotonic() - started > 4:
                    break
            sock.settimeout(3)
            try:
                answer = sock.recv(4096)
            except OSError:
                pass
            assert time.monotonic() - started < 3.0
            assert answer.startswith(b"HTTP/1.1 408")
        # A body that stops midway: closed after the pause.
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mo")
            started = time.monotonic()
            sock.settimeout(5)
            try:
                while sock.recv(4096):
                    pass
            except OSError:
                pass
            assert 0.8 < time.monotonic() - started < 3.0
        # Four idle connections and a fifth client: the oldest idle one makes room.
        idle = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(4)]
        try:
            idle[0].send(PARTIAL[:10])  # the slow one: it makes room at once
            time.sleep(0.2)
            assert httpx.get(proxy.url + "/healthz", timeout=1.0).status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_a_connection_limit_beyond_the_descriptor_limit_is_refused(tmp_path: Path) -> None:
    proc = run_cli("serve", "--upstream", "http://127.0.0.1:9/v1", "--cache",
                   str(tmp_path / "c.db"), "--max-connections", "100000000")
    line = assert_one_line_error(proc, 1)
    assert "--max-connections 100000000 needs" in line and "ulimit -n" in line
    line = assert_one_line_error(run_cli("serve", "--upstream", "http://127.0.0.1:9/v1",
                                         "--header-timeout", "0"), 1)
    assert "header_timeout must be a number of seconds > 0" in line


def test_log_lines_are_rate_limited_per_kind() -> None:
    from semcache.integrations.proxy.logs import RateLimitFilter

    now = [0.0]
    limiter = RateLimitFilter(burst=3, period=10.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    flood = [record(f"socket.accept() out of system resource {i}") for i in range(1000)]
    assert sum(limiter.filter(r) for r in flood) == 3
    assert limiter.filter(record("another kind of message"))
    now[0] = 10.5
    late = record("socket.accept() out of system resource 1001")
    assert limiter.filter(late)
    assert "997 similar log lines dropped" in late.getMessage()
