"""The dashboard in a real browser: headless Chromium (Debian's package) loads the page of
``semcache ui`` against a real cache with known traffic; the figures in the rendered DOM
are checked against ``cache.stats()``, markup stored in the cache stays inert text, the
token is required, and the page fits a phone-width screen.

Skipped where no Chromium is installed, unless SEMCACHE_REQUIRE_BROWSER=1 (.ci/run sets
it, and installs Debian's ``chromium``): then a missing browser fails the test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import semcache
from tests.browser import Chromium, find_chromium
from tests.dashboard_helpers import SCRIPT_NAMESPACE, SCRIPT_PROMPT, UiProcess, known_traffic
from tests.word_embedder import WordEmbedder

TOKEN = "browser-test-token-" + "k" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHONE_WIDTH = 375


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    binary = find_chromium()
    if binary is None:
        if os.environ.get("SEMCACHE_REQUIRE_BROWSER") == "1":
            pytest.fail("SEMCACHE_REQUIRE_BROWSER=1 but no chromium found "
                        "(apt-get install -y chromium)")
        pytest.skip("no chromium installed (apt-get install -y chromium)")
    return binary


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("dashboard") / "llm.db"
    with semcache.open(path, embedder=WordEmbedder(), similarity_threshold=0.8) as cache:
        known_traffic(cache)
    with semcache.open(path, embedder=WordEmbedder()) as cache:
        stats = cache.stats()
    return path, stats


# What the page shows, read from the DOM the browser built.
READ_PAGE = """(() => {
  const fig = id => { const e = document.getElementById(id);
                      return e ? [e.dataset.value, e.textContent.trim()] : null; };
  const ids = ["hits", "exact_hits", "semantic_hits", "misses", "guard_rejections",
               "tokens_saved", "entries", "puts", "feedback_wrong", "feedback_right",
               "hit_rate", "cost_saved"];
  const sum = (sel, key) => [...document.querySelectorAll(sel)]
      .reduce((n, g) => n + Number(g.dataset[key]), 0);
  const rows = id => [...document.querySelectorAll("#" + id + " tbody tr")]
      .map(tr => [...tr.cells].map(td => td.textContent));
  return {
    figures: Object.fromEntries(ids.map(id => [id, fig(id)])),
    minuteBuckets: document.querySelectorAll("#last-hour .bucket").length,
    dayBuckets: document.querySelectorAll("#last-30-days .bucket").length,
    minuteHits: sum("#last-hour .bucket", "hits"),
    minuteMisses: sum("#last-hour .bucket", "misses"),
    daySemantic: sum("#last-30-days .bucket", "semantic"),
    namespaces: rows("namespaces"), top: rows("top-entries"), wrong: rows("wrong-answers"),
    scripts: document.scripts.length, images: document.images.length,
    pwned: typeof window.__pwned, alerts: typeof window.__alerted,
    text: document.body.innerText,
  };
})()"""


def test_the_page_shows_the_cache_figures(chromium_binary: str,
                                          cache_file: tuple[Path, dict[str, Any]],
                                          tmp_path: Path) -> None:
    path, stats = cache_file
    with UiProcess(path, "--show-prompts", env={"SEMCACHE_DASHBOARD_TOKEN": TOKEN}) as ui, \
            Chromium(chromium_binary) as browser:
        browser.open(ui.url, AUTH)
        page = browser.evaluate(READ_PAGE)
        browser.screenshot(tmp_path / "desktop.png")
    figures = page["figures"]
    for name in ("hits", "exact_hits", "semantic_hits", "misses", "guard_rejections",
                 "tokens_saved", "entries", "puts", "feedback_wrong", "feedback_right"):
        value, text = figures[name]
        assert int(value) == stats[name], name
        assert text.replace(",", "") == str(stats[name]), name
    assert float(figures["hit_rate"][0]) == stats["hit_rate"]
    assert figures["hit_rate"][1] == f"{stats['hit_rate'] * 100:.1f}%"
    assert figures["cost_saved"][1] == "$0.00021"  # 5 hits x (40 in + 60 out) of gpt-4o-mini
    # the charts: 60 minutes, 30 days; their bars add up to the counters
    assert (page["minuteBuckets"], page["dayBuckets"]) == (60, 30)
    assert (page["minuteHits"], page["minuteMisses"]) == (stats["hits"], stats["misses"])
    assert page["daySemantic"] == stats["semantic_hits"]
    # markup stored in the cache is text on the page, never markup
    assert (page["scripts"], page["images"], page["pwned"]) == (0, 0, "undefined")
    assert SCRIPT_PROMPT in page["text"] and SCRIPT_NAMESPACE in page["text"]
    assert {row[0]: row[1] for row in page["namespaces"]} == {
        "default": "1", "support": "2", SCRIPT_NAMESPACE: "1"}
    top = {row[0]: row for row in page["top"]}
    assert top["1"][6] == "What is the capital of France?" and top["1"][2] == "4"
    assert any(SCRIPT_PROMPT == row[6] for row in page["top"])
    assert page["wrong"][0][1:4] == ["1", "default", "semantic"]


def test_the_token_is_required_in_the_browser(chromium_binary: str,
                                              cache_file: tuple[Path, dict[str, Any]]) -> None:
    path, stats = cache_file
    with UiProcess(path, env={"SEMCACHE_DASHBOARD_TOKEN": TOKEN}) as ui, \
            Chromium(chromium_binary) as browser:
        browser.open(ui.url)
        statuses = [e["params"]["response"]["status"] for e in browser.events
                    if e.get("method") == "Network.responseReceived"]
        denied = browser.evaluate("document.body.innerText")
        browser.open(ui.url, AUTH)
        shown = browser.evaluate("document.getElementById('hits').dataset.value")
    assert statuses == [401] and "hits" not in denied.lower()
    assert int(shown) == stats["hits"]


def test_the_page_fits_a_phone(chromium_binary: str, cache_file: tuple[Path, dict[str, Any]],
                               tmp_path: Path) -> None:
    path, stats = cache_file
    with UiProcess(path, "--show-prompts") as ui, Chromium(chromium_binary) as browser:
        browser.viewport(PHONE_WIDTH, 800, mobile=True)
        browser.open(ui.url)
        layout = browser.evaluate("""(() => ({
          width: window.innerWidth, page: document.documentElement.scrollWidth,
          tiles: [...document.querySelectorAll('.tile')].map(t => t.getBoundingClientRect())
                   .map(r => [r.left, r.right]),
          charts: [...document.querySelectorAll('svg.chart')]
                   .map(s => s.getBoundingClientRect().width),
          hits: document.getElementById('hits').textContent }))()""")
        png = browser.screenshot(tmp_path / "phone.png")
    assert layout["width"] == PHONE_WIDTH
    assert layout["page"] <= PHONE_WIDTH  # nothing but the tables' own boxes scrolls sideways
    assert all(0 <= left and right <= PHONE_WIDTH for left, right in layout["tiles"])
    assert len(layout["charts"]) == 2 and all(0 < w <= PHONE_WIDTH for w in layout["charts"])
    assert layout["hits"] == str(stats["hits"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == PHONE_WIDTH
