"""Threshold calibration: the lowest similarity threshold whose wrong-hit rate stays under
a target, from labelled observations.

An *observation* is one candidate hit with a verdict: its similarity to the query and
whether its answer was right for that query (a recorded ``cache.feedback`` verdict on a
served hit, or a labelled pair ``{"query", "stored", "same"}``). At a threshold ``t``,
the *hits* are the observations with similarity ``>= t`` (and not rejected by the
near-miss guard), the *wrong* ones those with a wrong verdict, and the wrong-hit rate is
``wrong / hits``.

**The decision rule.** A measured rate from a handful of verdicts proves nothing, so the
rule uses the one-sided Wilson score upper bound of the wrong-hit rate at ``confidence``
(default 95%). The chosen threshold is the lowest one on the grid whose *upper bound* is
``<= target_wrong``. With no wrong verdict at all, the bound is ``z^2 / (n + z^2)``, so a
1% target at 95% needs at least 268 verdicts above the threshold, all right (the
Clopper-Pearson "rule of three" gives 299 for the same case: Wilson is the slightly less
conservative standard choice). When no threshold qualifies, :func:`calibrate` decides
nothing (``threshold is None``) and says how many more verdicts it needs: for the lowest
threshold whose measured rate is under the target, the verdicts to add above it, at the
wrong rate measured so far, for the bound to fall under the target. If every threshold
already measures a rate at or above the target, more verdicts cannot help and it says so.

Everything here is pure (stdlib + the embedder you pass), so the CLI and recorded
feedback share it: :func:`parse_pairs_jsonl` reads a labelled file, :func:`observations_from_pairs`
turns it into observations with any embedder, :func:`calibrate` decides,
:func:`format_curve` prints and :func:`plot_curve` draws (matplotlib imported lazily).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Protocol

import numpy as np

from semcache.errors import InvalidInputError, ThresholdError

__all__ = [
    "DEFAULT_CONFIDENCE", "DEFAULT_TARGET_WRONG", "DEFAULT_THRESHOLDS", "Calibration",
    "COLLECT_VERDICTS", "CurvePoint", "LabelledPair", "Observation", "calibrate", "compute_curve",
    "format_curve", "observations_from_pairs", "parse_pairs_jsonl", "plot_curve",
    "verdicts_needed", "wilson_upper",
]

#: Where verdicts come from, as the messages say it.
COLLECT_VERDICTS = (
    "record them with cache.feedback(hit, correct) on served semantic hits (or "
    "cache.feedback(entry_id, correct, query=..., similarity=...) from "
    "semcache.cache_info), or label pairs in a JSONL file "
    '({"query": ..., "stored": ..., "same": true|false} per line) and run '
    "`semcache calibrate CACHE --pairs FILE`")

DEFAULT_TARGET_WRONG = 0.01
DEFAULT_CONFIDENCE = 0.95
#: The grid searched by default: 0.500, 0.505, ..., 0.995.
#: Texts embedded per call when scoring labelled pairs (the progress of ``calibrate --pairs``).
EMBED_BATCH = 256
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.005 * i, 3) for i in range(100))


class TextEmbedder(Protocol):
    """What :func:`observations_from_pairs` needs: ``embed(list[str]) -> (n, dim) array``."""

    def embed(self, texts: list[str]) -> np.ndarray: ...


class GuardLike(Protocol):
    """What :func:`observations_from_pairs` needs from a near-miss guard."""

    def check(self, query: str, stored: str) -> object | None: ...


@dataclass(frozen=True, slots=True)
class Observation:
    """One candidate hit with a verdict.

    ``guarded`` marks a candidate the near-miss guard rejects: it is never served, at any
    threshold, so it counts neither as a hit nor as a wrong one.
    """

    similarity: float
    correct: bool
    guarded: bool = False


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """One line of a labelled JSONL file (``line`` is 1-based, for messages)."""

    query: str
    stored: str
    same: bool
    line: int


@dataclass(frozen=True, slots=True)
class CurvePoint:
    """The hits at one threshold.

    ``wrong_rate`` is ``wrong / hits`` (``None`` without hits), ``upper_bound`` its Wilson
    upper bound (1.0 without hits), ``recall`` the fraction of all right observations that
    are hits (how much of the reuse the threshold keeps; ``None`` without right ones).
    """

    threshold: float
    hits: int
    wrong: int
    wrong_rate: float | None
    upper_bound: float
    recall: float | None


@dataclass(frozen=True, slots=True)
class Calibration:
    """The outcome of :func:`calibrate`.

    ``threshold`` is ``None`` when the verdicts cannot support any threshold; then
    ``needed`` is how many more verdicts (above ``candidate``) would, at the wrong rate
    measured so far (with no hit at any threshold yet: the fewest that could, all right),
    or ``None`` when no number of verdicts would (every threshold with hits measures a
    rate at or above the target). ``message`` says it, and how to collect verdicts.
    """

    threshold: float | None
    target_wrong: float
    confidence: float
    observations: int
    guarded: int
    curve: tuple[CurvePoint, ...]
    candidate: float | None = None
    needed: int | None = None
    message: str = ""

    @property
    def decided(self) -> bool:
        """Whether a threshold was chosen."""
        return self.threshold is not None

    def point(self, threshold: float) -> CurvePoint | None:
        """The curve point at ``threshold`` (``None`` if not on the grid)."""
        for p in self.curve:
            if math.isclose(p.threshold, threshold, abs_tol=1e-9):
                return p
        return None


def _z(confidence: float) -> float:
    if not 0.5 <= confidence < 1.0:
        raise InvalidInputError(f"confidence must be in [0.5, 1), got {confidence!r}")
    return NormalDist().inv_cdf(confidence)


def wilson_upper(wrong: float, n: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """One-sided Wilson score upper bound of a rate seen ``wrong`` times in ``n``.

    ``wrong`` may be fractional (an expected count). 1.0 when ``n == 0``.
    """
    if n <= 0:
        return 1.0
    z = _z(confidence)
    p = min(max(wrong / n, 0.0), 1.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def verdicts_needed(wrong_rate: float, have: int, target_wrong: float = DEFAULT_TARGET_WRONG,
                    confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """How many verdicts to add to ``have`` (all at ``wrong_rate``) for the Wilson upper
    bound to reach ``target_wrong``; 0 if already there, ``None`` if never
    (``wrong_rate >= target_wrong``)."""
    _check_target(target_wrong)
    if wrong_rate >= target_wrong:
        return None
    if wilson_upper(wrong_rate * have, have, confidence) <= target_wrong and have > 0:
        return 0
    hi = max(1, have)
    while wilson_upper(wrong_rate * hi, hi, confidence) > target_wrong:
        hi *= 2
    lo = max(1, hi // 2)
    while lo < hi:  # the bound falls as n grows at a fixed rate: bisect the first n
        mid = (lo + hi) // 2
        if wilson_upper(wrong_rate * mid, mid, confidence) <= target_wrong:
            hi = mid
        else:
            lo = mid + 1
    return max(0, lo - have)


def _check_target(target_wrong: float) -> None:
    if not (isinstance(target_wrong, (int, float)) and 0.0 < target_wrong < 1.0):
        raise ThresholdError(f"target wrong-hit rate must be in (0, 1), got {target_wrong!r}")


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    grid = sorted(float(t) for t in thresholds)
    if not grid:
        raise ThresholdError("the threshold grid is empty")
    bad = [t for t in grid if not 0.0 <= t <= 1.0]
    if bad:
        raise ThresholdError(f"thresholds must be in [0, 1], got {bad[0]!r}")
    return grid


def _as_observations(observations: Iterable[Observation | tuple[float, bool]]) -> list[Observation]:
    out = []
    for i, item in enumerate(observations):
        obs = item if isinstance(item, Observation) else Observation(float(item[0]), bool(item[1]))
        if not math.isfinite(obs.similarity):
            raise InvalidInputError(f"observation {i}: similarity {obs.similarity!r} is not finite")
        out.append(obs)
    return out


def compute_curve(observations: Iterable[Observation | tuple[float, bool]],
                  thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                  confidence: float = DEFAULT_CONFIDENCE) -> list[CurvePoint]:
    """Hits, wrong hits, wrong rate, its upper bound and recall at each threshold.

    ``observations`` are :class:`Observation` or ``(similarity, correct)`` tuples.
    """
    obs = [o for o in _as_observations(observations) if not o.guarded]
    return _curve(obs, _check_thresholds(thresholds), confidence)


def _curve(obs: list[Observation], grid: list[float], confidence: float) -> list[CurvePoint]:
    sims = np.array([o.similarity for o in obs], dtype=np.float64)
    right = np.array([o.correct for o in obs], dtype=bool)
    total_right = int(right.sum())
    points = []
    for t in grid:
        above = sims >= t
        hits = int(above.sum())
        wrong = int((above & ~right).sum())
        points.append(CurvePoint(
            threshold=t, hits=hits, wrong=wrong,
            wrong_rate=wrong / hits if hits else None,
            upper_bound=wilson_upper(wrong, hits, confidence),
            recall=(hits - wrong) / total_right if total_right else None,
        ))
    return points


def calibrate(observations: Iterable[Observation | tuple[float, bool]],
              target_wrong: float = DEFAULT_TARGET_WRONG,
              thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
              confidence: float = DEFAULT_CONFIDENCE) -> Calibration:
    """Choose the lowest threshold whose wrong-hit rate is under ``target_wrong`` with
    ``confidence`` (the rule in the module docstring), or say what is missing."""
    _check_target(target_wrong)
    obs = _as_observations(observations)
    served = [o for o in obs if not o.guarded]
    curve = tuple(_curve(served, _check_thresholds(thresholds), confidence))

    def result(threshold: float | None, candidate: float | None, needed: int | None,
               message: str) -> Calibration:
        return Calibration(threshold=threshold, target_wrong=target_wrong, confidence=confidence,
                           observations=len(obs), guarded=len(obs) - len(served), curve=curve,
                           candidate=candidate, needed=needed, message=message)

    if not any(p.hits for p in curve):
        # Nothing to read a curve from: say how many verdicts the target takes at best
        # (all right, all at or above the threshold) and where they come from.
        need = verdicts_needed(0.0, 0, target_wrong, confidence)
        have = (f"{len(obs)} verdicts, none at a similarity of {curve[0].threshold:.3f} or "
                "more (or all rejected by the guard)" if obs else "no verdicts yet")
        return result(None, None, need, (
            f"no threshold decided: {have}. A {target_wrong:.2%} target at "
            f"{confidence:.0%} confidence needs at least {need} verdicts on semantic hits, "
            f"all right; {COLLECT_VERDICTS}"))
    for p in curve:
        if p.hits and p.upper_bound <= target_wrong:
            return result(p.threshold, p.threshold, 0, (
                f"threshold {p.threshold:.3f}: {p.wrong} wrong of {p.hits} hits "
                f"({_pct(p.wrong_rate)}), upper bound {p.upper_bound:.2%} <= target "
                f"{target_wrong:.2%} at {confidence:.0%} confidence"))
    below = [p for p in curve if p.hits and p.wrong_rate is not None
             and p.wrong_rate < target_wrong]
    if not below:
        return result(None, None, None, (
            f"no threshold decided: {len(served)} usable verdicts, and every threshold with "
            f"hits measures a wrong-hit rate at or above the target {target_wrong:.2%}; more "
            "verdicts at these similarities cannot lower it (collect verdicts on hits at "
            "higher similarity, or accept a higher target)"))
    cand = below[0]
    rate = cand.wrong_rate or 0.0
    more = verdicts_needed(rate, cand.hits, target_wrong, confidence)
    return result(None, cand.threshold, more, (
        f"no threshold decided: too few verdicts. At {cand.threshold:.3f} there are "
        f"{cand.hits} hits with {cand.wrong} wrong ({_pct(cand.wrong_rate)}), upper bound "
        f"{cand.upper_bound:.2%} > target {target_wrong:.2%}; about {more} more verdicts on "
        f"hits at or above {cand.threshold:.3f} (at the same wrong rate) are needed; "
        f"{COLLECT_VERDICTS}"))


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2%}"


# -- labelled pairs ----------------------------------------------------------------------------


def parse_pairs_jsonl(source: str | Path | Iterable[str]) -> list[LabelledPair]:
    """Read ``{"query": str, "stored": str, "same": bool}`` lines (blank lines skipped).

    ``source`` is a path or an iterable of lines. Every error names its line.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            lines: Iterable[str] = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"labelled pairs file {str(path)!r} cannot be read: {exc}") from None
    else:
        lines = source
    pairs = [_parse_line(text, number) for number, text in enumerate(lines, 1) if text.strip()]
    if not pairs:
        raise InvalidInputError("labelled pairs: no pair found (expected JSON lines "
                                '{"query": str, "stored": str, "same": bool})')
    return pairs


def _parse_line(text: str, number: int) -> LabelledPair:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"labelled pairs line {number}: not JSON ({exc.msg})") from None
    if not isinstance(item, dict):
        raise InvalidInputError(f"labelled pairs line {number}: expected an object, got "
                                f"{type(item).__name__}")
    for key in ("query", "stored"):
        value = item.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InvalidInputError(f"labelled pairs line {number}: {key!r} must be a non-empty "
                                    f"string, got {value!r}")
    same = item.get("same")
    if not isinstance(same, bool):
        raise InvalidInputError(f"labelled pairs line {number}: 'same' must be true or false, "
                                f"got {same!r}")
    unknown = sorted(set(item) - {"query", "stored", "same"})
    if unknown:
        raise InvalidInputError(f"labelled pairs line {number}: unknown key {unknown[0]!r} "
                                "(expected query, stored, same)")
    return LabelledPair(item["query"], item["stored"], same, number)


def observations_from_pairs(pairs: Sequence[LabelledPair], embedder: TextEmbedder,
                            guard: GuardLike | None = None,
                            progress: Callable[[int, int], object] | None = None,
                            ) -> list[Observation]:
    """Cosine similarity of each pair with ``embedder`` (texts embedded in batches of
    :data:`EMBED_BATCH`), the label as the verdict, and the guard's decision if a guard
    is given (as the cache would run it). ``progress(texts_done, texts)`` after each batch."""
    texts = list(dict.fromkeys(t for p in pairs for t in (p.query, p.stored)))
    parts = []
    for start in range(0, len(texts), EMBED_BATCH):
        parts.append(np.asarray(embedder.embed(texts[start:start + EMBED_BATCH]),
                                dtype=np.float64))
        if progress is not None:
            progress(min(start + EMBED_BATCH, len(texts)), len(texts))
    vectors = np.concatenate(parts) if parts else np.zeros((0, 1))
    if vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise InvalidInputError(f"embedder returned shape {vectors.shape} for {len(texts)} texts")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms == 0, 1.0, norms)
    row = {t: i for i, t in enumerate(texts)}
    out = []
    for p in pairs:
        sim = float(vectors[row[p.query]] @ vectors[row[p.stored]])
        guarded = guard is not None and guard.check(p.query, p.stored) is not None
        out.append(Observation(sim, p.same, guarded))
    return out


# -- output -------------------------------------------------------------------------------------


def format_curve(cal: Calibration, every: float = 0.01) -> str:
    """A text table of the curve (one row per ``every`` step) and the decision."""
    lines = [f"{'threshold':>9} {'hits':>6} {'wrong':>6} {'wrong %':>8} {'bound %':>8} "
             f"{'recall %':>8}"]
    step = max(1, round(every / _grid_step(cal.curve)))
    for i, p in enumerate(cal.curve):
        if i % step and p.threshold != cal.threshold:
            continue
        mark = "  <- chosen" if p.threshold == cal.threshold else ""
        lines.append(f"{p.threshold:9.3f} {p.hits:6d} {p.wrong:6d} "
                     f"{_num(p.wrong_rate):>8} {100 * p.upper_bound:8.2f} "
                     f"{_num(p.recall):>8}{mark}")
    lines.append(cal.message)
    return "\n".join(lines)


def _grid_step(curve: Sequence[CurvePoint]) -> float:
    if len(curve) < 2:
        return 1.0
    return max(1e-9, curve[1].threshold - curve[0].threshold)


def _num(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.2f}"


def plot_curve(cal: Calibration, path: str | Path, title: str | None = None) -> Path:
    """Draw wrong-hit rate (with its upper bound) and recall vs threshold to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [p.threshold for p in cal.curve]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(ts, [100 * (p.wrong_rate or 0.0) for p in cal.curve], label="wrong-hit rate (measured)")
    ax.plot(ts, [100 * p.upper_bound for p in cal.curve], "--",
            label=f"upper bound ({cal.confidence:.0%})")
    ax.axhline(100 * cal.target_wrong, color="grey", ls="-.", lw=1, label="target")
    ax.set_xlabel("similarity threshold")
    ax.set_ylabel("% of hits")
    ax.set_ylim(0, min(100.0, max(5.0, 300 * cal.target_wrong)))
    ax2 = ax.twinx()
    ax2.plot(ts, [100 * (p.recall or 0.0) for p in cal.curve], color="tab:green",
             label="recall (right answers kept)")
    ax2.set_ylabel("recall %")
    ax2.set_ylim(0, 100)
    if cal.threshold is not None:
        ax.axvline(cal.threshold, color="red", lw=1, alpha=0.7)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title(title or (f"calibration: {cal.observations} verdicts, chosen "
                           f"{'none' if cal.threshold is None else f'{cal.threshold:.3f}'}"))
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
