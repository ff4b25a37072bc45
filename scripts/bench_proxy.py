#!/usr/bin/env python3
"""What ``semcache serve`` adds in front of an OpenAI-compatible server, measured end to end.

Peers, on the same machine over localhost, each timed in its own blocks, alternated:

* ``direct``       - the local stub server (``python -m semcache.demo.openai_stub``, no latency),
                     a fresh question per request;
* ``proxy_miss``   - the same through ``semcache serve`` (a fresh question: lookup, upstream
                     call, store before answering);
* ``proxy_exact``  - a stored question again (exact hit: the upstream is not called);
* ``proxy_semantic`` - a paraphrase of a stored question (semantic hit).

Latency: one keep-alive connection, requests one after another, with a minimal raw
HTTP/1.1 client (so the client's own overhead stays small); p50 and p99 per peer.
"Added on a miss" is proxy_miss p50 - direct p50 of the same run. Beside them, the CPU
time the proxy's processes spent per request of each peer (``proxy_cpu_ms``, from
/proc): on a shared machine it moves far less with the load than the wall clock does.

Throughput: ``--clients`` processes each keep ``--concurrency`` requests in flight for
``--duration`` seconds (asyncio, raw HTTP/1.1, keep-alive) against the proxy with
``--workers`` workers (exact hits), and against the stub directly (fresh questions).

The proxy's cache is a new file per run with the ``--embedder`` (``hashing`` by default: the
proxy's own cost; ``minilm`` adds the model's embedding to every miss and semantic hit).
Results: medians over ``--runs``, with their range, and the load average, to
benchmarks/results/proxy.json.

Full run (quiet machine)::

    python scripts/bench_proxy.py --requests 2000 --runs 3 --workers 4 --duration 10

Smoke::

    python scripts/bench_proxy.py --requests 60 --runs 1 --workers 2 --duration 1 \\
        --clients 1 --concurrency 4 --out /tmp/proxy-smoke.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CTX = mp.get_context("spawn")
AUTH = "Bearer sk-bench"
STORED = "What is the capital city of France?"
PARAPHRASE = "what is the capital city of france"


def _body(text: str) -> bytes:
    return json.dumps({"model": "bench", "messages": [{"role": "user", "content": text}]}).encode()


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {AUTH}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise RuntimeError(f"response without Content-Length: {head[:200]!r}")


class RawClient:
    """A blocking keep-alive HTTP/1.1 client for Content-Length responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def post(self, path: str, body: bytes) -> tuple[bytes, bytes]:
        self.sock.sendall(_request(self.host, self.port, path, body))
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(65536)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        size = _content_length(head)
        while len(self.buffer) < size:
            self.buffer += self.sock.recv(65536)
        payload, self.buffer = self.buffer[:size], self.buffer[size:]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{head.splitlines()[0]!r}: {payload[:200]!r}")
        return head, payload

    def close(self) -> None:
        self.sock.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(port: int, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port} after {timeout} s")


def _start(args: list[str], port: int, path: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _wait(port, path)
    return proc


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_ms": 1000 * ordered[len(ordered) // 2],
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "n": len(ordered)}


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) of process ``pid`` and its children so far:
    what the proxy itself spent, whatever the machine's load did to the wall clock."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    for one in pids:
        for task in Path(f"/proc/{one}/task").glob("*"):
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread ended meanwhile
    return total / 1e9


def measure_latency(stub_port: int, proxy_port: int, requests: int, blocks: int,
                    proxy_pid: int | None = None) -> dict[str, dict[str, float]]:
    """Sequential latencies of the four peers, in alternated blocks (and, for the proxy's
    peers, its CPU time per request when ``proxy_pid`` is given and /proc is there)."""
    direct = RawClient("127.0.0.1", stub_port)
    proxied = RawClient("127.0.0.1", proxy_port)
    proxied.post("/v1/chat/completions", _body(STORED))  # stored once
    peers: dict[str, tuple[RawClient, str, Any]] = {
        "direct": (direct, "/v1/chat/completions", lambda: _body(f"q {uuid.uuid4()}")),
        "proxy_miss": (proxied, "/v1/chat/completions", lambda: _body(f"q {uuid.uuid4()}")),
        "proxy_exact": (proxied, "/v1/chat/completions", lambda: _body(STORED)),
        "proxy_semantic": (proxied, "/v1/chat/completions", lambda: _body(PARAPHRASE)),
    }
    samples: dict[str, list[float]] = {name: [] for name in peers}
    cpu: dict[str, float] = {name: 0.0 for name in peers}
    track = proxy_pid is not None and Path(f"/proc/{proxy_pid}/task").exists()
    per_block = max(1, requests // blocks)
    for _ in range(blocks):
        for name, (client, path, make) in peers.items():
            spent = _cpu_seconds(proxy_pid) if track and proxy_pid else 0.0
            for _ in range(per_block):
                body = make()
                started = time.perf_counter()
                head, _ = client.post(path, body)
                samples[name].append(time.perf_counter() - started)
                if name.startswith("proxy_") and name != "proxy_miss":
                    kind = name.split("_")[1].encode()
                    assert b"x-semcache: hit-" + kind in head.lower(), head
            if track and proxy_pid and name != "direct":
                cpu[name] += _cpu_seconds(proxy_pid) - spent
    direct.close()
    proxied.close()
    out = {name: _percentiles(values) for name, values in samples.items()}
    if track:
        for name, seconds in cpu.items():
            if name != "direct":
                out[name]["proxy_cpu_ms"] = 1000 * seconds / len(samples[name])
    return out


async def _load(port: int, bodies: list[bytes], concurrency: int, duration: float) -> int:
    done = 0
    stop = time.perf_counter() + duration

    async def connection(offset: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        while time.perf_counter() < stop:
            writer.write(_request("127.0.0.1", port, "/v1/chat/completions",
                                  bodies[i % len(bodies)]))
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(_content_length(head))
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.splitlines()[0].decode())
            done += 1
            i += concurrency
        writer.close()

    await asyncio.gather(*(connection(k) for k in range(concurrency)))
    return done


def _load_process(port: int, fresh: bool, concurrency: int, duration: float,
                  barrier: Any, out: Any) -> None:
    bodies = ([_body(f"q {uuid.uuid4()}") for _ in range(20_000)] if fresh
              else [_body(STORED)])
    barrier.wait()
    out.put(asyncio.run(_load(port, bodies, concurrency, duration)))


def measure_throughput(port: int, fresh: bool, clients: int, concurrency: int,
                       duration: float) -> float:
    """Requests per second of ``clients`` processes x ``concurrency`` connections."""
    barrier, out = CTX.Barrier(clients), CTX.Queue()
    procs = [CTX.Process(target=_load_process, args=(port, fresh, concurrency, duration,
                                                     barrier, out)) for _ in range(clients)]
    for proc in procs:
        proc.start()
    total = sum(out.get(timeout=duration + 120) for _ in procs)
    for proc in procs:
        proc.join()
    return total / duration


def one_run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import semcache

    db = workdir / f"proxy-{uuid.uuid4().hex[:8]}.db"
    semcache.open(db, embedder=args.embedder, similarity_threshold=0.75).close()
    stub_port, proxy_port = _free_port(), _free_port()
    stub = _start(["-m", "semcache.demo.openai_stub", "--port", str(stub_port), "--latency", "0",
                   "--chunk-delay", "0"], stub_port, "/v1/models")
    proxy = _start(["-m", "semcache", "serve", "--upstream",
                    f"http://127.0.0.1:{stub_port}/v1", "--cache", str(db), "--port",
                    str(proxy_port), "--workers", str(args.workers), "--no-access-log",
                    "--log-level", "warning"], proxy_port, "/healthz")
    try:
        latency = measure_latency(stub_port, proxy_port, args.requests, args.blocks, proxy.pid)
        throughput = {
            "proxy_exact_hits_per_s": measure_throughput(
                proxy_port, False, args.clients, args.concurrency, args.duration),
            "direct_per_s": measure_throughput(
                stub_port, True, args.clients, args.concurrency, args.duration),
        }
    finally:
        for proc in (proxy, stub):
            proc.terminate()
            proc.wait(30)
    added = latency["proxy_miss"]["p50_ms"] - latency["direct"]["p50_ms"]
    return {"latency": latency, "added_on_miss_p50_ms": added, "throughput": throughput,
            "loadavg": os.getloadavg()}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    out: dict[str, Any] = {"latency": {}, "throughput": {}}
    for peer in runs[0]["latency"]:
        for pct in ("p50_ms", "p99_ms", "proxy_cpu_ms"):
            if pct in runs[0]["latency"][peer]:
                out["latency"][f"{peer}_{pct}"] = stat([r["latency"][peer][pct] for r in runs])
    out["added_on_miss_p50_ms"] = stat([r["added_on_miss_p50_ms"] for r in runs])
    for name in runs[0]["throughput"]:
        out["throughput"][name] = stat([r["throughput"][name] for r in runs])
    return out


#: The proxy's goals (issue 16, tightened by issue 23): (summary key, goal text, target ms).
GOALS = (("proxy_exact_p50_ms", "proxy: exact hit over HTTP, p50", 0.5),
         ("added_on_miss_p50_ms", "proxy: added on a miss (vs direct), p50", 1.0))


def _goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals in the list form scripts/report.py reads (median and range of the runs)."""
    out = []
    for key, text, target in GOALS:
        cell = summary["latency"].get(key) or summary.get(key)
        out.append({"goal": text, "target": target, "unit": "ms",
                    "measured": round(cell["median"], 3),
                    "range": [round(cell["min"], 3), round(cell["max"], 3)],
                    "met": cell["median"] <= target})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per latency peer per run")
    parser.add_argument("--blocks", type=int, default=10, help="alternated blocks per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="proxy worker processes")
    parser.add_argument("--clients", type=int, default=4, help="load processes")
    parser.add_argument("--concurrency", type=int, default=16, help="connections per client")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load test")
    parser.add_argument("--embedder", default="hashing")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "proxy.json"))
    args = parser.parse_args()
    started_load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="semcache-bench-proxy-") as tmp:
        runs = []
        for run in range(args.runs):
            result = one_run(args, Path(tmp))
            runs.append(result)
            lat = result["latency"]
            print(f"run {run + 1}: exact hit p50 {lat['proxy_exact']['p50_ms']:.3f} ms "
                  f"(p99 {lat['proxy_exact']['p99_ms']:.3f}, proxy CPU "
                  f"{lat['proxy_exact'].get('proxy_cpu_ms', float('nan')):.3f}), semantic hit p50 "
                  f"{lat['proxy_semantic']['p50_ms']:.3f} ms, miss p50 "
                  f"{lat['proxy_miss']['p50_ms']:.3f} ms (proxy CPU "
                  f"{lat['proxy_miss'].get('proxy_cpu_ms', float('nan')):.3f}) vs direct "
                  f"{lat['direct']['p50_ms']:.3f} ms (+{result['added_on_miss_p50_ms']:.3f}); "
                  f"{result['throughput']['proxy_exact_hits_per_s']:.0f} hits/s with "
                  f"{args.workers} workers vs {result['throughput']['direct_per_s']:.0f} "
                  f"req/s direct; load {result['loadavg'][0]:.2f}", flush=True)
    summary = _summary(runs)
    report = {
        "benchmark": "proxy",
        "params": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_start": started_load,
                    "loadavg_end": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "goals": _goals(summary),
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
