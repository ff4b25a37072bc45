"""The user-set error bound (``open(..., error_bound=)``, ``Cache.set_error_bound``; SPEC 12):
a namespace with a bound ``eps`` serves a semantic candidate only with a probability that
keeps the expected fraction of its lookups that serve a wrong answer at or below ``eps``.

How (after vCache, arXiv 2502.03771, adapted to a shared, persistent cache):

* **Estimate.** The semantic decision's calibrated ``p_wrong`` of the candidate for this
  query is the prior ``p0``. A namespace learns a multiplicative correction ``k`` of it
  from its verified outcomes: every outcome adds the prior it had to ``expected`` and 1 to
  ``wrong`` when the candidate's answer was wrong, and ``k`` has the Gamma posterior
  ``Gamma(a0 + wrong, a0 + expected)`` (Poisson counts of wrong answers, prior mean 1).
  Each score bin (of ``p0``) refines it, shrunk toward the namespace; each entry's own
  outcomes may raise it again (wrong answers; shrunk toward 1). ``p_wrong`` (what ``Hit.p_wrong`` reports) uses
  the posterior means, ``upper`` the :data:`CONFIDENCE` quantiles.
* **Budget.** The bound is on the fraction of the namespace's lookups, and only lookups that
  reach a candidate can serve a wrong answer. Each semantic lookup of the namespace credits
  this process's balance with ``eps`` (up to :data:`BUDGET_LOOKUPS` lookups' worth); a
  candidate is served with probability ``q = min(1 - MIN_EXPLORATION, balance / upper)``
  and the decision spends ``q * upper``, its expected wrong answers at most.
* **Exploration.** When the coin does not serve, the lookup answers a miss (an
  *exploration*): the caller calls the model anyway, and the ``put``/``store`` of the same
  request (same exact key, this process, within :data:`EXPLORATION_TTL`) compares its fresh
  answer with the candidate's (the verifier) and records the outcome on the candidate and
  its namespace's pools, in the put's own write transaction, for every process.

So the expected number of wrong answers a process served in a namespace never exceeds
``eps`` times its semantic lookups there, whenever ``upper >= p_true``, at every moment.
The guarantee's assumptions are in docs/quality.md ("Error bound").
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from semcache.errors import ConfigurationError
from semcache.store.base import NewEntry, Outcome, OutcomePool, Store
from semcache.store.codecs import decode_response

log = logging.getLogger("semcache")

#: Upper edges of the score bins of the prior ``p_wrong`` (bin i: below edge i; the last
#: bin: everything above the last edge).
PRIOR_EDGES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
PRIOR_BINS = len(PRIOR_EDGES) + 1
#: The prior of a candidate the decision did not judge (``guard=False``, a vector lookup,
#: an entry stored without its prompt): one in two, until its namespace learns better.
UNKNOWN_PRIOR = 0.5
#: Prior strength of the namespace correction ``k`` (Gamma(a0, a0): mean 1, in units of
#: expected wrong answers). 1: before any outcome, ``upper`` is 3x the decision's p_wrong
#: (the decision predicted a third of the wrong answers on a split it was not made on).
NAMESPACE_STRENGTH = 1.0
#: How much of the namespace's evidence a score bin borrows (expected wrong answers).
BIN_STRENGTH = 8.0
#: How much an entry's own outcomes weigh against its namespace (expected wrong answers).
#: They only ever raise its estimate: right answers to the queries that reached it so far
#: (often its own paraphrases) say little of the next one (a look-alike).
ENTRY_STRENGTH = 1.0
#: The smallest share of candidates explored: a namespace whose balance would serve every
#: candidate still checks some, so that its estimate keeps learning.
MIN_EXPLORATION = 0.05
#: The posterior quantile that the exploration probability is computed from.
CONFIDENCE = 0.95
#: Seconds a process trusts its last read of a namespace's pools (outcomes recorded since,
#: by any process including this one, count from its next read).
POOL_TTL = 1.0
#: The most a namespace's unspent budget grows to, in lookups' worth: a quiet period does not
#: buy a burst of risky answers later.
BUDGET_LOOKUPS = 1000
#: Explorations remembered per process (oldest dropped first), and for how long.
MAX_EXPLORATIONS = 10_000
EXPLORATION_TTL = 600.0
#: The "embedding" verifier: two answers are the same when the cosine of their embeddings
#: is at least this.
EMBEDDING_CUTOFF = 0.9

Verifier = Callable[[Any, Any], bool]


def prior_bin(p: float) -> int:
    """The score bin of a prior ``p_wrong``."""
    return bisect.bisect_right(PRIOR_EDGES, p)


def gamma_quantile(q: float, shape: float) -> float:
    """The ``q`` quantile of Gamma(shape, 1): Wilson-Hilferty from shape 10 (within 0.1%),
    below it bisection on the incomplete gamma function's series."""
    if shape >= 10.0:
        z = math.sqrt(2.0) * _erfinv(2.0 * q - 1.0)
        c = 1.0 / (9.0 * shape)
        return shape * max(0.0, 1.0 - c + z * math.sqrt(c)) ** 3
    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _gamma_cdf(shape, mid) < q else (low, mid)
    return high


def _gamma_cdf(shape: float, x: float) -> float:
    """The regularized lower incomplete gamma function P(shape, x), by its series."""
    if x <= 0.0:
        return 0.0
    term = total = 1.0 / shape
    n = 1
    while term > total * 1e-12 and n < 1000:
        term *= x / (shape + n)
        total += term
        n += 1
    return min(1.0, math.exp(shape * math.log(x) - x - math.lgamma(shape)) * total)


def _erfinv(y: float) -> float:
    """Inverse error function (Giles' single-precision approximation, then two Newton
    steps)."""
    w = -math.log((1.0 - y) * (1.0 + y))
    if w < 5.0:
        w -= 2.5
        p = 2.81022636e-08
        for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941):
            p = c + p * w
    else:
        w = math.sqrt(w) - 3.0
        p = -0.000200214257
        for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                  -0.0076224613, 0.00943887047, 1.00167406, 2.83297682):
            p = c + p * w
    x = p * y
    for _ in range(2):
        x -= (math.erf(x) - y) / (2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    return x


class Estimate(NamedTuple):
    """A candidate's estimated probability of a wrong answer, and its upper bound."""

    p_wrong: float
    upper: float
    prior: float


@dataclass(slots=True)
class Exploration:
    """A candidate not served, waiting for the fresh answer of the same request."""

    entry_id: int
    namespace: str
    similarity: float
    prior: float
    cached: Any  # the candidate's answer, decoded
    at: float  # monotonic seconds


# -- verifiers -------------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def answer_text(value: Any) -> str:
    """The text of an answer as the "text" verifier compares it: a string itself; for the
    JSON of a chat completion, a LangChain generation or a LiteLLM response, the strings
    under ``content`` and ``text`` keys, in order; else the canonical JSON."""
    if isinstance(value, str):
        return value
    found: list[str] = []
    _collect(value, found)
    return "\n".join(found) if found else json.dumps(value, sort_keys=True)


def _collect(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("content", "text") and isinstance(v, str):
                out.append(v)
            else:
                _collect(v, out)
    elif isinstance(value, list):
        for v in value:
            _collect(v, out)


def normalized(text: str) -> str:
    """Case, surrounding punctuation and runs of white space do not count."""
    return _SPACE.sub(" ", text.casefold()).strip(" .!?;:,\"'")


def text_verifier(new: Any, cached: Any) -> bool:
    return normalized(answer_text(new)) == normalized(answer_text(cached))


def check_verifier(spec: Any) -> None:
    """Refuse a ``verifier=`` that is none of "text", "embedding" or a callable."""
    if not (spec in ("text", "embedding") or (callable(spec) and not isinstance(spec, str))):
        raise ConfigurationError(f"verifier must be 'text', 'embedding' or a callable "
                                 f"(new_answer, cached_answer) -> bool; got {spec!r}")


def make_verifier(spec: Any, embedder: Any) -> Verifier:
    """The verifier named by ``open(..., verifier=)``: "text", "embedding" (needs the
    cache's ``embedder``, else None) or a callable ``(new_answer, cached_answer) -> bool``."""
    if spec == "text":
        return text_verifier
    if spec == "embedding":
        if embedder is None:
            raise ConfigurationError("verifier='embedding' needs a cache with an embedder; "
                                     "use verifier='text' or a callable")

        def same_embedding(new: Any, cached: Any) -> bool:
            a, b = np.asarray(embedder.embed([answer_text(new), answer_text(cached)]),
                              dtype=np.float64)
            norms = float(np.linalg.norm(a) * np.linalg.norm(b))
            return norms > 0 and float(np.dot(a, b)) / norms >= EMBEDDING_CUTOFF

        return same_embedding
    check_verifier(spec)
    return spec


# -- the estimator and the explorations --------------------------------------------------------


class _Pools:
    """A namespace's pools as read at ``read_at``: the correction per bin."""

    def __init__(self, pools: Sequence[OutcomePool], read_at: float) -> None:
        self.read_at = read_at
        wrong = sum(p.wrong for p in pools)
        expected = sum(p.expected for p in pools)
        self.shape = NAMESPACE_STRENGTH + wrong
        self.rate = NAMESPACE_STRENGTH + expected
        self.by_bin = {p.bin: p for p in pools}
        self._memo: dict[int, tuple[float, float]] = {}

    def correction(self, b: int) -> tuple[float, float]:
        """(mean, upper quantile) of the correction ``k`` in bin ``b``."""
        found = self._memo.get(b)
        if found is None:
            mean = self.shape / self.rate
            borrowed = min(self.rate, BIN_STRENGTH)  # the namespace's weight in the bin
            shape, rate = borrowed * mean, borrowed
            pool = self.by_bin.get(b)
            if pool is not None:
                shape, rate = shape + pool.wrong, rate + pool.expected
            found = self._memo[b] = (shape / rate, gamma_quantile(CONFIDENCE, shape) / rate)
        return found


class ErrorBound:
    """The estimator and this process's pending explorations (see the module docstring)."""

    def __init__(self, store: Store, verifier: Verifier) -> None:
        self.store = store
        self.verifier = verifier
        #: The coin of the exploration; seeded from the OS (tests may seed it).
        self.rng = random.Random()
        self._lock = threading.Lock()
        self._pools: dict[str, _Pools] = {}
        self._pending: OrderedDict[bytes, Exploration] = OrderedDict()
        self._budget: dict[str, float] = {}  # namespace -> unspent expected wrong answers

    def looked_up(self, namespace: str, bound: float) -> None:
        """Credit the namespace's budget with one semantic lookup's worth (``bound``), up to
        :data:`BUDGET_LOOKUPS` lookups' worth."""
        with self._lock:
            balance = self._budget.get(namespace, 0.0) + bound
            self._budget[namespace] = min(balance, bound * BUDGET_LOOKUPS)

    def serve(self, namespace: str, estimate: Estimate) -> bool:
        """The coin: serve with probability ``q = min(1 - MIN_EXPLORATION, balance /
        upper)``, and spend ``q * upper`` (the expected wrong answers, at most)."""
        with self._lock:
            balance = self._budget.get(namespace, 0.0)
            q = 1.0 if estimate.upper <= 0 else max(0.0, min(1.0 - MIN_EXPLORATION,
                                                             balance / estimate.upper))
            self._budget[namespace] = balance - q * estimate.upper
        return self.rng.random() < q

    def estimate(self, namespace: str, entry_id: int, prior: float | None) -> Estimate:
        """The candidate's ``p_wrong`` and its upper bound (see the module docstring)."""
        p0 = UNKNOWN_PRIOR if prior is None else min(max(float(prior), 1e-6), 1.0)
        mean, upper = self._namespace(namespace).correction(prior_bin(p0))
        own = self.store.entry_outcomes(entry_id)
        if own:
            wrong = sum(not o.correct for o in own)
            expected = sum(o.prior for o in own) * mean
            factor = max(1.0, (ENTRY_STRENGTH + wrong) / (ENTRY_STRENGTH + expected))
            mean, upper = mean * factor, upper * factor
        return Estimate(min(1.0, mean * p0), min(1.0, upper * p0), p0)

    def _namespace(self, namespace: str) -> _Pools:
        now = time.monotonic()
        pools = self._pools.get(namespace)
        if pools is None or now - pools.read_at > POOL_TTL:
            pools = self._pools[namespace] = _Pools(self.store.outcome_pools(namespace), now)
        return pools

    def forget(self) -> None:
        """The cache was replaced: read every namespace's pools again, drop explorations."""
        with self._lock:
            self._pools.clear()
            self._pending.clear()

    # -- explorations ------------------------------------------------------------------------

    def explored(self, key: bytes, exploration: Exploration) -> None:
        with self._lock:
            self._pending.pop(key, None)
            self._pending[key] = exploration
            while len(self._pending) > MAX_EXPLORATIONS:
                self._pending.popitem(last=False)

    def outcomes_for(self, entries: Sequence[NewEntry], now: float) -> list[Outcome]:
        """The outcomes of the explorations that ``entries`` (about to be written) answer:
        each entry's fresh answer compared with the explored candidate's. Called before the
        write transaction (a verifier may embed)."""
        if not self._pending:
            return []
        found: list[tuple[NewEntry, Exploration]] = []
        limit = time.monotonic() - EXPLORATION_TTL
        with self._lock:
            for e in entries:
                x = self._pending.pop(e.key_hash, None)
                if x is not None and x.at >= limit and x.namespace == e.namespace:
                    found.append((e, x))
        out = []
        for e, x in found:
            try:
                right = bool(self.verifier(decode_response(e.response), x.cached))
            except Exception as exc:  # a user's verifier: its failure must not fail the put
                log.warning("semcache: the verifier failed (%s: %s); outcome of entry %d "
                            "not recorded", type(exc).__name__, exc, x.entry_id)
                continue
            out.append(Outcome(x.entry_id, x.namespace, x.similarity, x.prior,
                               prior_bin(x.prior), right, "explore", now))
        return out


__all__ = ["CONFIDENCE", "EMBEDDING_CUTOFF", "UNKNOWN_PRIOR", "ErrorBound", "Estimate",
           "Exploration", "answer_text", "gamma_quantile", "make_verifier", "prior_bin",
           "text_verifier"]
