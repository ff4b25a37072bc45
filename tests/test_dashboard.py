"""The dashboard without a browser: its figures against ``cache.stats()`` on both engines,
privacy, escaping, the price table, the access rules, and ``semcache ui`` / ``semcache
serve`` as real processes over HTTP (the browser test is test_dashboard_browser.py)."""

from __future__ import annotations

import base64
import html
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import semcache
from semcache.dashboard import Gate, collect, load_prices
from semcache.dashboard.auth import check_bind, is_loopback, resolve_token, token_digest
from semcache.dashboard.figures import namespace_id
from semcache.dashboard.page import render_page
from semcache.dashboard.prices import usage_of
from tests.dashboard_helpers import (
    REPO,
    SCRIPT_NAMESPACE,
    SCRIPT_PROMPT,
    UiProcess,
    known_traffic,
)
from tests.proxy_helpers import ProxyProcess
from tests.word_embedder import WordEmbedder

TOKEN = "dashboard-token-" + "x" * 20
COUNTERS = ("hits", "exact_hits", "semantic_hits", "misses", "puts", "entries", "bytes",
            "tokens_saved", "guard_rejections", "feedback_right", "feedback_wrong")


def _cache_with_traffic(location: str) -> semcache.Cache:
    cache = semcache.open(location, embedder=WordEmbedder(), similarity_threshold=0.8)
    known_traffic(cache)
    return cache


# -- the figures ------------------------------------------------------------------------------


@pytest.mark.engines("sqlite", "postgres")
def test_figures_are_those_of_the_cache(make_location: Callable[..., str]) -> None:
    with _cache_with_traffic(make_location()) as cache:
        figures = collect(cache, load_prices())
        stats = cache.stats()
    assert figures["schema"] == "semcache.dashboard/1"
    assert {k: figures[k] for k in COUNTERS} == {k: stats[k] for k in COUNTERS}
    assert figures["hit_rate"] == stats["hit_rate"] == 0.75
    assert (stats["exact_hits"], stats["semantic_hits"], stats["misses"],
            stats["guard_rejections"]) == (5, 1, 2, 1)
    minutes, days = figures["series"]["minutes"], figures["series"]["days"]
    assert len(minutes) == 60 and len(days) == 30
    for name in ("hits", "exact_hits", "semantic_hits", "misses", "guard_rejections"):
        assert sum(b[name] for b in minutes) == stats[name] == sum(b[name] for b in days)
    assert days[-1]["hit_rate"] == 0.75 and days[0]["hit_rate"] is None
    by_ns = {n["namespace"]: n for n in figures["namespaces"]}
    assert set(by_ns) == {"default", "support", SCRIPT_NAMESPACE}
    assert (by_ns["default"]["entries"], by_ns["support"]["entries"]) == (1, 2)
    top = figures["top_entries"]
    assert [e["hits"] for e in top] == [4, 1, 1]  # 3 exact + 1 semantic; then one each
    assert top[0]["model"] == "gpt-4o-mini-2024-07-18" and "prompt" not in top[0]
    # cost: 5 hits of priced requests, 40 input and 60 output tokens each, at gpt-4o-mini's
    # list price ($0.15 / $0.60 per 1M); the plain prompt has no model: not priced
    cost = figures["cost_saved"]
    assert cost["priced_hits"] == 5 and cost["unpriced_hits"] == 1
    assert cost["usd"] == pytest.approx(5 * (40 * 0.15 + 60 * 0.60) / 1e6)
    assert cost["by_model"][0]["priced_as"] == "gpt-4o-mini"
    wrong = figures["wrong_answers"]
    assert [(w["kind"], w["namespace"]) for w in wrong] == [("semantic", "default")]
    assert wrong[0]["entry_id"] == top[0]["id"] and "prompt" not in wrong[0]
    # The error bound's counters: no bound here, so no exploration; the wrong verdict on the
    # semantic hit is an outcome.
    assert (figures["explorations"], figures["outcomes_right"], figures["outcomes_wrong"]) \
        == (0, 0, 1)
    json.dumps(figures, allow_nan=False)


def test_prompts_appear_only_when_asked(tmp_path: Path) -> None:
    with _cache_with_traffic(str(tmp_path / "c.db")) as cache:
        hidden = collect(cache, load_prices())
        shown = collect(cache, load_prices(), show_prompts=True)
    for figures in (hidden, render_page(hidden)):
        text = json.dumps(figures) if isinstance(figures, dict) else figures
        for secret in ("capital of France", "Paris", "spider", "migration", "pwned"):
            assert secret not in text
    assert shown["top_entries"][0]["prompt"] == "What is the capital of France?"
    assert shown["top_entries"][0]["response"] == "Paris."
    assert shown["wrong_answers"][0]["prompt"] == "What is the capital of France?"
    assert shown["privacy"] == {"show_prompts": True, "namespaces": "names"}


def test_hashed_namespaces_hide_the_names(tmp_path: Path) -> None:
    with _cache_with_traffic(str(tmp_path / "c.db")) as cache:
        figures = collect(cache, load_prices(), hashed_namespaces=True)
    text = json.dumps(figures)
    assert "support" not in text and "default" not in text and "onerror" not in text
    ids = {n["namespace"] for n in figures["namespaces"]}
    assert ids == {namespace_id(n) for n in ("default", "support", SCRIPT_NAMESPACE)}
    assert all(i.startswith("ns-") and len(i) == 15 for i in ids)
    assert figures["wrong_answers"][0]["namespace"] == namespace_id("default")


def test_everything_from_the_cache_is_escaped(tmp_path: Path) -> None:
    with _cache_with_traffic(str(tmp_path / "c.db")) as cache:
        page = render_page(collect(cache, load_prices(), show_prompts=True))
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert html.escape(SCRIPT_PROMPT) in page  # shown, as text
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>bold" not in page


# -- the price table ---------------------------------------------------------------------------


def test_price_lookup_follows_model_names() -> None:
    prices = load_prices()
    for name, expected in [("gpt-4o-mini", "gpt-4o-mini"), ("GPT-4o-mini", "gpt-4o-mini"),
                           ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
                           ("openai/gpt-4o-2024-08-06", "gpt-4o"),
                           ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
                           ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
                           ("gemini/gemini-2.5-flash", "gemini-2.5-flash")]:
        found = prices.lookup(name)
        assert found is not None and found[0] == expected, name
    # a different product that merely starts like a priced one is not priced as it
    assert prices.lookup("gpt-4o-audio-preview") is None
    assert prices.lookup("my-own-model") is None
    price = prices.lookup("gpt-4o")
    assert price is not None and price[1].cost(1_000_000, 1_000_000) == pytest.approx(12.5)


def test_a_price_file_overrides_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"as_of": "2026-01", "models": {
        "gpt-4o-mini": {"input": 0.1, "output": 0.2}, "my-model": {"input": 1, "output": 2}}}))
    prices = load_prices(str(path))
    mini, mine, gpt4o = (prices.lookup(m) for m in ("gpt-4o-mini", "my-model-2025", "gpt-4o"))
    assert mini is not None and (mini[1].input, mini[1].output) == (0.1, 0.2)
    assert mine is not None and mine[0] == "my-model"
    assert gpt4o is not None and gpt4o[1].input == 2.5  # the rest of the built-in table
    assert prices.describe()["source"] == "prices.json over the built-in table"
    for bad in ('{"models": {"m": {"input": -1, "output": 0}}}', '{"models": []}', "not json",
                '{"models": {"m": {"input": 1}}}', '{"models": {"m": {"in": 1, "out": 2}}}',
                '{"models": {"m": {"input": true, "output": 1}}}'):
        path.write_text(bad)
        with pytest.raises(semcache.ConfigurationError, match="prices.json"):
            load_prices(str(path))
    with pytest.raises(semcache.ConfigurationError, match="cannot read"):
        load_prices(str(tmp_path / "missing.json"))


def test_usage_of_stored_answers() -> None:
    chat = {"model": "gpt-4o", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    responses = {"model": "gpt-4.1", "usage": {"input_tokens": 5, "output_tokens": 6}}
    assert usage_of(chat, None, 7) == ("gpt-4o", 3, 4)
    assert usage_of(responses, None, 11) == ("gpt-4.1", 5, 6)
    assert usage_of("plain text", {"model": "o3"}, 9) == ("o3", 9, 0)  # no split: input rate
    assert usage_of({"usage": {"prompt_tokens": -1, "completion_tokens": 2}}, None, 4) == (
        None, 4, 0)


# -- access rules ------------------------------------------------------------------------------


def test_the_gate() -> None:
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    local = {"host": "127.0.0.1:8089"}
    gate = Gate.for_bind("127.0.0.1", TOKEN)
    assert gate.digest == token_digest(TOKEN) and TOKEN not in repr(gate)
    assert gate.check({**local, "authorization": f"Bearer {TOKEN}"}) is None
    assert gate.check({**local, "authorization": f"Basic {basic}"}) is None
    for auth in ("", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Basic !!!", f"Token {TOKEN}",
                 "Basic " + base64.b64encode(TOKEN.encode()).decode()):
        denied = gate.check({**local, "authorization": auth})
        assert denied is not None and denied.status == 401 and TOKEN not in denied.message
        assert ("WWW-Authenticate", 'Basic realm="semcache dashboard", charset="UTF-8"') in \
            denied.headers
    # no token, loopback: only requests that name a loopback host (no DNS rebinding)
    open_gate = Gate.for_bind("127.0.0.1", None)
    for host in ("127.0.0.1:8089", "localhost:8089", "[::1]:8089", "localhost"):
        assert open_gate.check({"host": host}) is None, host
    for host in ("evil.example:8089", "127.0.0.1.evil.example", "", "10.0.0.1:8089"):
        denied = open_gate.check({"host": host})
        assert denied is not None and denied.status == 403, host
    # with a token, any host name (a reverse proxy, a LAN name) works
    assert Gate.for_bind("0.0.0.0", TOKEN).check(
        {"host": "dash.example", "authorization": f"Bearer {TOKEN}"}) is None


def test_tokens_and_binds(monkeypatch: pytest.MonkeyPatch,
                          caplog: pytest.LogCaptureFixture) -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com"))
    monkeypatch.delenv("SEMCACHE_DASHBOARD_TOKEN", raising=False)
    assert resolve_token(None) is None
    monkeypatch.setenv("SEMCACHE_DASHBOARD_TOKEN", TOKEN)
    assert resolve_token(None) == TOKEN and resolve_token("other-token-0123456789") != TOKEN
    for bad in ("has spaces in the middle of it", "tab\tinside-the-token-xx", " ",
                "caf\u00e9-token-with-accent"):
        with pytest.raises(semcache.ConfigurationError) as info:
            resolve_token(bad)
        assert bad.strip() == "" or bad not in str(info.value)
    with caplog.at_level("WARNING", logger="semcache"):
        assert resolve_token("s3cret") == "s3cret"  # accepted, with a warning
    assert "fewer than 16" in caplog.text and "s3cret" not in caplog.text
    check_bind("semcache ui", "127.0.0.1", None)
    check_bind("semcache ui", "0.0.0.0", TOKEN)
    with pytest.raises(semcache.ConfigurationError, match="--dashboard-token"):
        check_bind("semcache ui", "0.0.0.0", None)


# -- semcache ui, a real process ----------------------------------------------------------------


def _get(url: str, headers: dict[str, str] | None = None, data: bytes | None = None,
         method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _ui(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "semcache", "ui", *args], capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "",
                                                      "HF_HUB_OFFLINE": "1", **(env or {})})


def test_ui_refuses_a_public_bind_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    semcache.open(path, embedder="hashing").close()
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        result = _ui(str(path), "--host", host, "--port", "0")
        assert result.returncode == 1, result
        assert "needs a token" in result.stderr and "--dashboard-token" in result.stderr
        assert result.stdout == ""  # nothing served
    bad = _ui(str(path), "--host", "0.0.0.0", "--dashboard-token", "secret with spaces")
    assert bad.returncode == 1 and "secret with spaces" not in bad.stderr
    assert "printable ASCII" in bad.stderr


def test_ui_requires_its_token(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with _cache_with_traffic(str(path)) as cache:
        stats = cache.stats()
    with UiProcess(path, env={"SEMCACHE_DASHBOARD_TOKEN": TOKEN}) as ui:
        for route in ("", "api/stats"):
            status, headers, body = _get(ui.url + route)
            assert status == 401 and "Basic" in headers["WWW-Authenticate"]
            assert b"hits" not in body
            assert _get(ui.url + route, {"Authorization": "Bearer not-the-token"})[0] == 401
        status, headers, body = _get(ui.url + "api/stats", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and headers["Content-Type"] == "application/json"
        figures = json.loads(body)
        assert {k: figures[k] for k in COUNTERS} == {k: stats[k] for k in COUNTERS}
        basic = base64.b64encode(f"me:{TOKEN}".encode()).decode()
        status, headers, page = _get(ui.url, {"Authorization": f"Basic {basic}"})
        assert status == 200 and b'id="hits" data-value="6"' in page
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    assert TOKEN not in ui.output()


def test_ui_serves_two_routes_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    _cache_with_traffic(str(path)).close()
    with UiProcess(path) as ui:
        assert _get(ui.url + "nope")[0] == 404
        assert _get(ui.url + "api/stats", data=b"x" * 100)[0] == 413
        assert _get(ui.url + "api/stats", data=b"x" * 100, method="POST")[0] == 405
        assert _get(ui.url + "api/stats", method="DELETE")[0] == 405
        assert _get(ui.url + "api/stats", {"Host": "evil.example:8089"})[0] == 403
        status, _, page = _get(ui.url + "?refresh=1")
        assert status == 200
    text = page.decode()
    assert "capital of France" not in text and "&lt;script&gt;" not in text  # no prompts
    assert "prompts and answers hidden" in text


def test_the_readme_command_opens_the_demo_cache(tmp_path: Path) -> None:
    import re

    from semcache.cli import build_parser
    from semcache.demo import DEMO_FILE

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Dashboard"):]
    command = re.search(r"^semcache ui (\S+)", section, re.MULTILINE)
    assert command is not None
    demo_dir = build_parser().parse_args(["demo"]).dir  # where `semcache demo` writes
    assert command.group(1) == f"{demo_dir}/{DEMO_FILE}"
    os.makedirs(tmp_path / demo_dir)
    with semcache.open(tmp_path / demo_dir / DEMO_FILE, embedder="hashing") as cache:
        cache.put("q", "a")
        cache.get("q")
    with UiProcess(command.group(1), cwd=tmp_path) as ui:  # run where the demo ran
        assert ui.url.startswith("http://127.0.0.1:")
        status, _, body = _get(ui.url + "api/stats")
    assert status == 200 and json.loads(body)["hits"] == 1


# -- semcache serve: the same page at / ---------------------------------------------------------


@pytest.fixture(scope="module")
def stub() -> Any:
    from semcache.demo.openai_stub import StubOpenAIServer

    with StubOpenAIServer() as server:
        yield server


def _proxy_traffic(proxy: ProxyProcess) -> list[str]:
    keys = [f"sk-test-{uuid.uuid4().hex}" for _ in range(2)]
    for key in keys:
        for text in ("What is the secret recipe of tenant soup?",) * 2:
            response = httpx.post(proxy.url + "/v1/chat/completions", timeout=30,
                                  headers={"Authorization": f"Bearer {key}"},
                                  json={"model": "gpt-4o-mini",
                                        "messages": [{"role": "user", "content": text}]})
            assert response.status_code == 200
    return keys


def test_serve_page_shows_hashed_tenants_only(stub: Any, tmp_path: Path) -> None:
    db = tmp_path / "proxy.db"
    semcache.open(db, embedder="hashing").close()
    with ProxyProcess(stub.base_url, db, log_path=tmp_path / "log") as proxy:
        keys = _proxy_traffic(proxy)
        figures = httpx.get(proxy.url + "/api/stats", timeout=30).json()
        page = httpx.get(proxy.url + "/", timeout=30).text
        assert httpx.get(proxy.url + "/", headers={"Host": "evil.example"}).status_code == 403
    assert (figures["hits"], figures["misses"], figures["entries"]) == (2, 2, 2)
    assert figures["privacy"] == {"show_prompts": False, "namespaces": "hashed"}
    names = [n["namespace"] for n in figures["namespaces"]]
    assert len(names) == 2 and all(n.startswith("ns-") for n in names)
    for text in (json.dumps(figures), page):
        assert "secret recipe" not in text
        assert not any(key in text for key in keys)
        assert '"t-' not in text and ">t-" not in text  # the per-key namespace names
    assert "hashed ids (one per API key)" in page


def test_serve_shows_prompts_only_when_shared(stub: Any, tmp_path: Path) -> None:
    db = tmp_path / "proxy.db"
    semcache.open(db, embedder="hashing").close()
    refused = subprocess.run(
        [sys.executable, "-m", "semcache", "serve", "--upstream", stub.base_url, "--cache",
         str(db), "--port", "0", "--show-prompts"], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "", "HF_HUB_OFFLINE": "1"})
    assert refused.returncode == 1 and "--show-prompts needs --shared" in refused.stderr
    public = subprocess.run(
        [sys.executable, "-m", "semcache", "serve", "--upstream", stub.base_url, "--cache",
         str(db), "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True,
        timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "", "HF_HUB_OFFLINE": "1"})
    assert public.returncode == 1 and "--no-dashboard" in public.stderr
    with ProxyProcess(stub.base_url, db, "--shared", "--show-prompts",
                      log_path=tmp_path / "log") as proxy:
        _proxy_traffic(proxy)
        figures = httpx.get(proxy.url + "/api/stats", timeout=30).json()
    assert figures["privacy"] == {"show_prompts": True, "namespaces": "names"}
    assert figures["top_entries"][0]["prompt"] == "What is the secret recipe of tenant soup?"
