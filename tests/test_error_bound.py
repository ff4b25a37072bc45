"""The user-set error bound (SPEC 12; semcache/cache/_bound.py): stored bounds, explorations
whose outcome the request's put records on the candidate (in the put's transaction, seen by
every process, on both engines), verifiers, hit.decision / hit.p_wrong, the counters, feedback
verdicts as outcomes, and a seeded labelled stream whose wrong rate stays within the bound."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import semcache
from semcache.cache import _bound
from semcache.errors import ConfigurationError, InvalidInputError
from semcache.store.base import OutcomePool
from tests.engines import ENGINES
from tests.word_embedder import WordEmbedder

PARIS = "capital of france"
PARAPHRASE = "what is the capital of france please"  # cosine 1.0 under WordEmbedder


@pytest.fixture
def opened() -> Iterator[list[semcache.Cache]]:
    caches: list[semcache.Cache] = []
    yield caches
    for c in caches:
        c.close()


@pytest.fixture
def make(make_location: Callable[..., str],
         opened: list[semcache.Cache]) -> Callable[..., semcache.Cache]:
    def open_cache(name: str = "cache.db", **settings: Any) -> semcache.Cache:
        settings.setdefault("embedder", WordEmbedder())
        settings.setdefault("similarity_threshold", 0.9)
        cache = semcache.open(make_location(name), **settings)
        opened.append(cache)
        return cache
    return open_cache


def explore_always(cache: semcache.Cache) -> None:
    """The bound's coin never serves (a coin of 1.0 is never below bound / upper < 1)."""
    cache._bound.rng = _Always(0.999999)  # type: ignore[assignment]


def serve_always(cache: semcache.Cache) -> None:
    cache._bound.rng = _Always(0.0)  # type: ignore[assignment]


class _Always(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def outcome_counts(cache: semcache.Cache) -> tuple[int, int, int]:
    s = cache.stats()
    return s["explorations"], s["outcomes_right"], s["outcomes_wrong"]


# -- settings ------------------------------------------------------------------------------


@pytest.mark.engines(*ENGINES)
def test_error_bound_is_stored_per_cache_and_per_namespace(make: Callable[..., semcache.Cache]
                                                           ) -> None:
    plain = make("plain.db")
    assert plain.error_bound() is None and plain.settings["error_bound"] is None
    first = make(error_bound=0.01)
    first.set_error_bound("strict", 0.002)
    again = make()  # another handle: reads the file
    assert again.error_bound() == 0.01 and again.error_bound("strict") == 0.002
    assert again.settings["namespace_error_bounds"] == {"strict": 0.002}
    first.set_error_bound("strict", None)  # back to the cache's bound
    assert make().error_bound("strict") == 0.01


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, True, "0.01", float("nan")])
def test_bad_bounds_are_refused_and_nothing_is_written(make: Callable[..., semcache.Cache],
                                                       bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="error_bound"):
        make("bad.db", error_bound=bad)
    cache = make()
    with pytest.raises(InvalidInputError, match="error_bound"):
        cache.set_error_bound("ns", bad)
    assert "error_bound:ns" not in cache.stored_settings()


def test_a_bad_verifier_is_refused_before_anything_is_created(tmp_path: Any) -> None:
    for bad in ("exact", 3, None):
        with pytest.raises(ConfigurationError, match="verifier"):
            semcache.open(str(tmp_path / "v.db"), embedder=WordEmbedder(), verifier=bad)
    assert not (tmp_path / "v.db").exists()
    with pytest.raises(ConfigurationError, match="embedder"):
        semcache.open(str(tmp_path / "h.db"), hash_only=True, verifier="embedding")
    assert not (tmp_path / "h.db").exists()  # a failed open leaves no cache behind


# -- decisions, explorations and outcomes ----------------------------------------------------


@pytest.mark.engines(*ENGINES)
def test_hits_say_what_decided_them(make: Callable[..., semcache.Cache]) -> None:
    threshold = make("t.db", guard=False)
    threshold.put(PARIS, "Paris")
    exact, semantic = threshold.get(PARIS), threshold.get(PARAPHRASE)
    assert exact is not None and (exact.decision, exact.p_wrong) == ("exact", None)
    assert semantic is not None and semantic.decision == "threshold"
    assert threshold.stats()["explorations"] == 0  # no bound: never explores
    bounded = make("b.db", guard=False, error_bound=0.2)
    serve_always(bounded)
    bounded.put(PARIS, "Paris")
    assert bounded.get(PARIS).decision == "exact"  # type: ignore[union-attr]
    hit = bounded.get(PARAPHRASE)
    assert hit is not None and hit.decision == "bound" and hit.response == "Paris"
    # No decision on the pair (guard off): the prior is one in two, nothing learnt yet.
    assert hit.p_wrong == pytest.approx(_bound.UNKNOWN_PRIOR)


@pytest.mark.engines(*ENGINES)
def test_an_exploration_is_verified_by_the_put_and_shared(make: Callable[..., semcache.Cache]
                                                          ) -> None:
    cache = make(guard=False, error_bound=0.01)
    explore_always(cache)
    (candidate,) = [cache.put(PARIS, "Paris")]
    assert cache.get(PARAPHRASE) is None  # explored: answered a miss
    assert outcome_counts(cache) == (1, 0, 0)
    cache.put(PARAPHRASE, "  paris. ")  # the fresh answer: the same text, normalized
    assert outcome_counts(cache) == (1, 1, 0)
    other = make()  # another handle (another process would see the same rows)
    (o,) = [o for o in other.outcomes() if o.entry_id == candidate]
    assert (o.correct, o.source, o.prior, o.similarity) == (True, "explore", 0.5,
                                                            pytest.approx(1.0))
    assert other.outcome_pools("default") == [OutcomePool(9, 1, 0, 0.5)]
    # A wrong answer, through lookup/store (what wrap, the proxy and LangChain use).
    cache.store(b"req-1", "Paris", text=PARIS, scope="m")
    assert cache.lookup(b"req-2", text=PARAPHRASE, scope="m") is None
    cache.store(b"req-2", "Lyon", text=PARAPHRASE, scope="m")
    assert outcome_counts(cache) == (2, 1, 1)
    cache.put("an unrelated question", "x")  # answers no exploration
    assert outcome_counts(cache) == (2, 1, 1)


def test_explorations_without_a_put_expire_and_are_bounded(make: Callable[..., semcache.Cache],
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(_bound, "MAX_EXPLORATIONS", 2)
    cache = make(guard=False, error_bound=0.01)
    explore_always(cache)
    cache.put("alpha beta", "A")
    for q in ("alpha beta please", "what alpha beta", "the alpha beta"):
        assert cache.get(q) is None
    assert len(cache._bound._pending) == 2  # the oldest dropped
    cache.put("alpha beta please", "A")  # its exploration was dropped: no outcome
    assert outcome_counts(cache)[1:] == (0, 0)
    clock = [1000.0]
    monkeypatch.setattr(_bound.time, "monotonic", lambda: clock[0])
    cache.get("alpha beta the")  # hmm: same words, an exploration at t=1000
    clock[0] += _bound.EXPLORATION_TTL + 1
    cache.put("alpha beta the", "A")  # too late: not recorded
    assert outcome_counts(cache)[1:] == (0, 0)


@pytest.mark.engines(*ENGINES)
def test_semantic_verdicts_are_outcomes(make: Callable[..., semcache.Cache]) -> None:
    cache = make(guard=False, error_bound=0.3)
    serve_always(cache)
    entry = cache.put(PARIS, "Paris")
    hit = cache.get(PARAPHRASE)
    assert hit is not None and hit.decision == "bound"
    cache.feedback(hit, False)
    cache.feedback(cache.get(PARIS), True)  # type: ignore[arg-type]  # exact: no outcome
    assert outcome_counts(cache) == (0, 0, 1)
    (o,) = [o for o in cache.outcomes() if o.entry_id == entry]
    assert (o.correct, o.source) == (False, "feedback")
    before = cache._bound.estimate("default", entry, None)
    assert before.p_wrong > _bound.UNKNOWN_PRIOR  # one wrong answer raised its estimate


# -- verifiers --------------------------------------------------------------------------------


def test_the_text_verifier_reads_the_answers_of_every_integration() -> None:
    chat = {"choices": [{"message": {"role": "assistant", "content": "Paris."}}]}
    assert _bound.answer_text(chat) == "Paris."
    same = {"choices": [{"message": {"content": "paris"}}], "id": "x"}
    assert _bound.text_verifier(chat, same)
    assert not _bound.text_verifier(chat, {"choices": [{"message": {"content": "Lyon"}}]})
    generations = [{"text": "Paris", "generation_info": None}]
    assert _bound.text_verifier(generations, "PARIS")
    assert _bound.text_verifier({"a": 1, "b": [2]}, {"b": [2], "a": 1})  # else canonical JSON
    assert not _bound.text_verifier(1, 2)


def test_embedding_and_callable_verifiers(make: Callable[..., semcache.Cache]) -> None:
    calls: list[tuple[Any, Any]] = []

    def verdict(new: Any, cached: Any) -> bool:
        calls.append((new, cached))
        return bool(new["ok"])

    for name, verifier, answers, expected in (
            ("e.db", "embedding", ("capital paris", "paris capital"), (1, 1, 0)),
            ("c.db", verdict, ({"ok": 0}, {"ok": 1}), (1, 0, 1))):
        cache = make(name, guard=False, error_bound=0.01, verifier=verifier)
        explore_always(cache)
        cache.put(PARIS, answers[1])
        assert cache.get(PARAPHRASE) is None
        cache.put(PARAPHRASE, answers[0])
        assert outcome_counts(cache) == expected
    assert calls == [({"ok": 0}, {"ok": 1})]


def test_a_failing_verifier_never_fails_the_put(make: Callable[..., semcache.Cache],
                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(new: Any, cached: Any) -> bool:
        raise RuntimeError("no")

    cache = make(guard=False, error_bound=0.01, verifier=broken)
    explore_always(cache)
    cache.put(PARIS, "Paris")
    assert cache.get(PARAPHRASE) is None
    entry = cache.put(PARAPHRASE, "Paris")
    assert cache.entry(entry) is not None and outcome_counts(cache) == (1, 0, 0)
    assert "verifier failed" in caplog.text


# -- the estimator -------------------------------------------------------------------------------


def test_gamma_quantiles() -> None:
    # Reference values: scipy.stats.gamma.ppf(0.9, a).
    for shape, ppf in ((0.1, 0.26616), (0.5, 1.35277), (1.0, 2.30259), (2.0, 3.88972),
                       (10.0, 14.20599), (100.0, 113.01052)):
        assert _bound.gamma_quantile(0.9, shape) == pytest.approx(ppf, rel=2e-3)


class _Pools:
    def __init__(self, pools: list[OutcomePool]) -> None:
        self.pools = pools

    def outcome_pools(self, namespace: str) -> list[OutcomePool]:
        return self.pools

    def entry_outcomes(self, entry_id: int) -> list[Any]:
        return []


def make_bound(pools: list[OutcomePool]) -> Any:
    return _bound.ErrorBound(_Pools(pools), _bound.text_verifier)  # type: ignore[arg-type]


def test_the_namespace_correction_learns_a_miscalibrated_prior() -> None:
    """A prior that says 1% where 4% happen: the pools raise the estimate toward 4%, and the
    upper bound covers the truth once a few dozen wrong answers were seen."""
    fresh = make_bound([]).estimate("ns", 1, 0.01)
    assert fresh.p_wrong == pytest.approx(0.01) and fresh.upper > 0.01
    seen = [OutcomePool(4, 960, 40, 10.0)]  # 1000 outcomes at prior 0.01: 40 wrong
    learnt = make_bound(seen).estimate("ns", 1, 0.01)
    assert 0.035 < learnt.p_wrong < 0.045 and 0.04 < learnt.upper < 0.05
    assert isinstance(learnt, _bound.Estimate)


# -- the guarantee on a labelled stream ---------------------------------------------------------


class TableEmbedder:
    """Vectors from a table the test builds (unknown texts: a random direction)."""

    name = "test-table:v1"
    dim = 32

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def labelled_stream(seed: int, intents: int = 40, queries: int = 2500, spread: float = 0.3
                    ) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Every query a fresh phrasing (no exact repeats) of one of ``intents`` intents, in
    look-alike pairs: a query's nearest stored phrasing above the 0.9 floor is sometimes its
    twin's, whose answer is wrong for it."""
    rng = np.random.default_rng(seed)
    centres = []
    for _ in range(intents // 2):
        base = _unit(rng.normal(size=TableEmbedder.dim))
        centres += [_unit(base + spread * _unit(rng.normal(size=TableEmbedder.dim)))
                    for _ in range(2)]
    table: dict[str, np.ndarray] = {}
    stream: list[tuple[str, str]] = []
    for n, i in enumerate(rng.integers(0, intents, size=queries)):
        text = f"query {n} of intent {i}"
        table[text] = _unit(centres[i] + 0.12 * _unit(rng.normal(size=TableEmbedder.dim)))
        stream.append((text, f"answer {i}"))
    return table, stream


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def run_stream(path: str, table: dict[str, np.ndarray], stream: list[tuple[str, str]],
               seed: int, **settings: Any) -> tuple[float, float, dict[str, Any]]:
    """(wrong answers served / queries, hits / queries, stats) of the stream: a miss
    "calls the model" and puts the intent's answer."""
    with semcache.open(path, embedder=TableEmbedder(table), similarity_threshold=0.9,
                       guard=False, max_entries=None, **settings) as cache:
        cache._bound.rng = random.Random(seed)
        wrong = hits = 0
        for text, answer in stream:
            hit = cache.get(text)
            if hit is None:
                cache.put(text, answer)
            else:
                hits += 1
                wrong += hit.response != answer
        return wrong / len(stream), hits / len(stream), cache.stats()


@pytest.mark.parametrize("bound", [0.02, 0.05])
def test_the_wrong_rate_of_a_labelled_stream_stays_within_the_bound(
        tmp_path: Any, bound: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeded stream and coin, and the namespace's pools read at every estimate
    (``POOL_TTL`` 0): deterministic. With the default one-second TTL the number of pool
    reads during the stream depends on the machine's speed, and so does what the estimate
    has learned: the hit share moved between 0.50 and 0.58 of the free run's (one CI run
    under load fell under the 0.5 asserted below). Without the bound the cosine serves 19%
    wrong answers; with it the wrong rate stays at or below the bound (the guarantee is on
    the expectation: a margin of 20% of the bound covers the stream's randomness, two
    standard deviations of a binomial count of ~50 at 2500 queries; measured: 0.04% at
    0.02 and 0.12% at 0.05, serving 62% and 82% of the free run's hits)."""
    monkeypatch.setattr(_bound, "POOL_TTL", 0.0)
    table, stream = labelled_stream(seed=3)
    free, free_hits, _ = run_stream(str(tmp_path / "free.db"), table, stream, seed=3)
    assert free > 2 * bound  # the stream is hard: the cosine alone breaks the bound
    wrong, hits, stats = run_stream(str(tmp_path / "bound.db"), table, stream, seed=3,
                                    error_bound=bound)
    assert wrong <= 1.2 * bound
    assert hits > 0.5 * free_hits  # it still serves (measured: 60-80% of the queries)
    assert stats["explorations"] > 0
    assert stats["outcomes_right"] + stats["outcomes_wrong"] == stats["explorations"]


def test_the_budget_never_spends_more_than_the_bound_per_lookup() -> None:
    """Each lookup credits the bound; each decision spends its serving probability times its
    upper estimate: the expected wrong answers never exceed bound x lookups."""
    bound = make_bound([])
    bound.rng = _Always(0.0)
    risky = _bound.Estimate(0.05, 0.1, 0.05)
    bound.looked_up("ns", 0.01)
    assert bound.serve("ns", risky)  # q = 0.01 / 0.1
    assert bound._budget["ns"] == pytest.approx(0.0)
    bound.rng = _Always(0.97)
    for _ in range(20):  # 20 lookups without candidate: 0.2 of budget
        bound.looked_up("ns", 0.01)
    assert bound.serve("ns", risky) is False  # q capped at 1 - MIN_EXPLORATION = 0.95
    assert bound._budget["ns"] == pytest.approx(0.2 - (1 - _bound.MIN_EXPLORATION) * 0.1)
    for _ in range(5 * _bound.BUDGET_LOOKUPS):  # a quiet period buys at most 1000 lookups
        bound.looked_up("ns", 0.01)
    assert bound._budget["ns"] == pytest.approx(0.01 * _bound.BUDGET_LOOKUPS)
    assert "other" not in bound._budget


def test_calibrate_counts_the_outcomes_of_explorations(tmp_path: Any) -> None:
    from tests.cli_helpers import run_cli

    path = str(tmp_path / "cal.db")
    with semcache.open(path, embedder="hashing", guard=False, error_bound=0.01) as cache:
        explore_always(cache)
        cache.put("How do I configure the billing service?", "answer")
        for i in range(3):
            query = f"How do I configure the billing service? ({i})"
            if cache.get(query) is None:
                cache.put(query, "answer" if i else "another")
        explored = cache.stats()["explorations"]
        assert explored >= 1 and len(cache.outcomes()) == explored
    proc = run_cli("calibrate", path, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["observations"] == explored


@pytest.mark.engines(*ENGINES)
def test_export_and_import_carry_bounds_outcomes_and_pools(make: Callable[..., semcache.Cache],
                                                           tmp_path: Any) -> None:
    from semcache.transfer import export_jsonl, import_jsonl

    original = make("original.db", guard=False, error_bound=0.02)
    original.set_error_bound("strict", 0.005)
    explore_always(original)
    original.put(PARIS, "Paris")
    assert original.get(PARAPHRASE) is None
    original.put(PARAPHRASE, "Lyon")  # a wrong outcome on the first entry
    path = tmp_path / "export.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        export_jsonl(original, out)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["settings"]["error_bound"] == 0.02
    ns = {x["namespace_state"]: x for x in lines if "namespace_state" in x}
    assert ns["strict"]["settings"] == {"error_bound": 0.005}
    assert ns["default"]["trust"]["outcome_pools"] == [
        {"bin": 9, "right": 0, "wrong": 1, "expected": 0.5}]
    (judged,) = [x for x in lines if "response" in x and x.get("trust")]
    assert judged["prompt"] == PARIS and judged["trust"]["outcomes"][0]["correct"] is False

    copy = make("copy.db", guard=False)
    for _ in range(2):  # twice: nothing doubled
        report = import_jsonl(copy, str(path), apply_settings=True)
        assert report.bad_count == 0 and report.ignored_keys == []
    assert copy.outcome_pools() == [OutcomePool(9, 0, 1, 0.5)]
    (o,) = copy.outcomes()
    assert o.correct is False and copy.entry(o.entry_id).prompt == PARIS  # type: ignore[union-attr]
    assert copy.error_bound("strict") == 0.005


def test_the_dashboard_shows_explorations_and_outcomes(make: Callable[..., semcache.Cache]
                                                       ) -> None:
    from semcache.dashboard import collect, load_prices
    from semcache.dashboard.page import render_page

    cache = make(guard=False, error_bound=0.01)
    explore_always(cache)
    cache.put(PARIS, "Paris")
    for text, answer in ((PARAPHRASE, "Paris"), ("the capital of france", "Lyon")):
        assert cache.get(text) is None
        cache.put(text, answer)
    figures = collect(cache, load_prices())
    assert (figures["explorations"], figures["outcomes_right"], figures["outcomes_wrong"]) \
        == outcome_counts(cache) == (2, 1, 1)
    page = render_page(figures)
    for name, value in (("explorations", 2), ("outcomes_right", 1), ("outcomes_wrong", 1)):
        assert f'id="{name}" data-value="{value}"' in page
