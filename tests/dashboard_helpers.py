"""A real ``semcache ui`` process, and a cache with known traffic, for the dashboard tests."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import semcache
from semcache.keys import analyze_request

REPO = Path(__file__).resolve().parents[1]
#: A prompt that would run script if the page did not escape it.
SCRIPT_PROMPT = "<script>window.__pwned = 1</script> What is <b>bold</b>?"
SCRIPT_NAMESPACE = "<img src=x onerror=alert(1)>"
USAGE = {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100}


def completion(text: str, model: str = "gpt-4o-mini-2024-07-18") -> dict[str, Any]:
    """A stored chat completion, as ``wrap`` and the proxy store them."""
    return {"id": "chatcmpl-test", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": dict(USAGE)}


def store_request(cache: semcache.Cache, question: str, answer: str, *,
                  model: str = "gpt-4o-mini", namespace: str | None = None) -> int:
    keys = analyze_request({"model": model, "messages": [{"role": "user", "content": question}]})
    return cache.store(keys.key, completion(answer, model + "-2024-07-18"), text=keys.text,
                       scope=keys.scope, namespace=namespace,
                       metadata={"model": model, "api": "chat.completions"},
                       tokens=USAGE["total_tokens"])


def lookup_request(cache: semcache.Cache, question: str, *, model: str = "gpt-4o-mini",
                   namespace: str | None = None) -> Any:
    keys = analyze_request({"model": model, "messages": [{"role": "user", "content": question}]})
    return cache.lookup(keys.key, text=keys.text, scope=keys.scope, namespace=namespace)


def known_traffic(cache: semcache.Cache) -> None:
    """Requests in two namespaces, exact and semantic hits, misses, a near-miss rejected
    by the guard, a plain prompt carrying markup, verdicts right and wrong."""
    store_request(cache, "What is the capital of France?", "Paris.")
    store_request(cache, "How many legs does a spider have?", "Eight.", namespace="support")
    store_request(cache, "Is it safe to run the migration now?", "Yes.", namespace="support")
    cache.put(SCRIPT_PROMPT, "<script>window.__pwned = 2</script>", namespace=SCRIPT_NAMESPACE)
    for _ in range(3):
        assert lookup_request(cache, "What is the capital of France?") is not None
    semantic = lookup_request(cache, "Tell me the capital of France")
    assert semantic is not None and semantic.kind == "semantic"
    assert lookup_request(cache, "How many legs does a spider have?",
                          namespace="support") is not None
    assert lookup_request(cache, "Is it not safe to run the migration now?",
                          namespace="support") is None  # a near miss: the guard says no
    assert lookup_request(cache, "Who painted the Mona Lisa?") is None
    assert cache.get(SCRIPT_PROMPT, namespace=SCRIPT_NAMESPACE) is not None
    cache.feedback(semantic, False)
    cache.feedback(semantic.entry_id, True, query="What is the capital of France?")


class UiProcess:
    """``python -m semcache ui PATH --port 0 --json ...``; ``url`` once it listens."""

    def __init__(self, path: str | os.PathLike[str], *extra: str,
                 env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.cwd = cwd
        self.args = [sys.executable, "-m", "semcache", "ui", os.fspath(path), "--port", "0",
                     "--json", *extra]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
                    **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> UiProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.env, cwd=self.cwd,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise RuntimeError(f"semcache ui did not start: {self.output()}")
        self.url = json.loads(line)["url"]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def output(self) -> str:
        """Everything the process wrote (after it stopped)."""
        if self.proc is None:
            return ""
        out, err = self.proc.communicate(timeout=10)
        return (out or "") + (err or "")

    def __enter__(self) -> UiProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
