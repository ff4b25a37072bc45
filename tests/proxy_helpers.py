"""Run a real ``semcache serve`` process for tests (and the proxy benchmark)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ProxyProcess:
    """``python -m semcache serve ...`` in a subprocess; a context manager.

    Its stdout and stderr go to ``log_path``; ``url`` is ``http://127.0.0.1:PORT``.
    ``nofile``: the process's file-descriptor limits (``ulimit -Sn``, ``ulimit -Hn``).
    """

    def __init__(self, upstream: str, cache: str | os.PathLike[str], *extra: str,
                 log_path: str | os.PathLike[str], workers: int = 1,
                 startup_timeout: float = 60.0, nofile: tuple[int, int] | None = None,
                 ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.args = [sys.executable, "-m", "semcache", "serve", "--upstream", upstream,
                     "--cache", os.fspath(cache), "--port", str(self.port),
                     "--workers", str(workers), *extra]
        self.startup_timeout = startup_timeout
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None

    def _limit_descriptors(self) -> None:  # in the child, before exec
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def start(self) -> ProxyProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True,
                                     preexec_fn=None if self.nofile is None
                                     else self._limit_descriptors)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"semcache serve exited: {self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"semcache serve did not start: {self.log_path.read_text()}")

    def children(self) -> list[int]:
        """Pids of the worker processes (with --workers > 1)."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
