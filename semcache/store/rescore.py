"""Exact-cosine rescoring of search candidates, and the one policy for a damaged stored
vector, shared by both engines.

A Hamming search over 256-bit codes only proposes candidates; the decision is made on the
exact cosine of the query with each candidate's stored float vector (little-endian
float32). The cosine divides by both norms, never trusting a stored one: a vector of norm
10 written by hand is scored by its true cosine.

A candidate whose stored vector is damaged - missing, of the wrong length, all zeros or
not finite - is skipped: it is never served and never fails the lookup. The engine logs it
once (:class:`DamagedVectors`), returns its id in :attr:`Neighbours.damaged` so that the
cache counts it (``stats()["damaged_vectors"]``), and its ``check()`` (``semcache verify``)
reports it. The SQLite engine and PostgreSQL with bytea vectors rescore here
(:func:`rescore`); PostgreSQL with pgvector computes the cosines in SQL, a NULL marking a
damaged vector (:func:`ranked`).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from semcache.kernels.projection import c_einsum
from semcache.store.base import EntryRow, Neighbours

log = logging.getLogger("semcache")

#: Damaged entries remembered per store for "log once" (then the memory starts over).
_REMEMBERED = 10_000


class DamagedVectors:
    """Logs each damaged entry of one store once per process."""

    def __init__(self, location: str) -> None:
        self._location = location
        self._logged: set[int] = set()

    def note(self, ids: list[int]) -> None:
        new = [i for i in ids if i not in self._logged]
        if not new:
            return
        if len(self._logged) > _REMEMBERED:
            self._logged.clear()
        self._logged.update(new)
        log.warning("semcache: %s: the stored vector of entry %s is damaged (missing, of the "
                    "wrong length, zero or not finite); skipped by semantic lookups - delete "
                    "it, or put it again (`semcache verify` lists them)", self._location,
                    ", ".join(map(str, new)))


def rescore(rows: list[EntryRow], query: np.ndarray, damaged: DamagedVectors) -> Neighbours:
    """Rows (read with their vectors) ranked by the exact cosine of their vector with
    ``query`` (a unit float32 vector), best first, ties newest first; damaged ones apart."""
    size = 4 * query.shape[0]
    good: list[EntryRow] = []
    bad: list[int] = []
    for row in rows:
        if type(row.vector) is bytes and len(row.vector) == size:
            good.append(row)
        else:
            bad.append(row.id)
    ranked: list[tuple[EntryRow, float]] = []
    scored: list[tuple[float, int, EntryRow]] = []  # sorted as tuples: cheaper than a key
    if good:
        # One (k, dim) @ (dim,) product and one row-wise sum of squares; the k cosines are
        # then finished in Python (k <= 16: cheaper than more numpy calls).
        blob = good[0].vector if len(good) == 1 else b"".join(
            [r.vector for r in good])  # type: ignore[misc]
        m = np.frombuffer(blob, dtype="<f4").reshape(len(good), -1).astype(  # type: ignore[arg-type]
            np.float64)
        q = query.astype(np.float64)
        # ndarray.dot: the BLAS routines ``@`` reaches (ddot, dgemv), without the matmul
        # ufunc's dispatch (0.4 us less each; the same bits).
        qq = float(q.dot(q))
        for row, dot, ss in zip(good, m.dot(q).tolist(), c_einsum("ij,ij->i", m, m).tolist(),
                                strict=True):
            sim = dot / math.sqrt(ss * qq) if ss > 0.0 and qq > 0.0 else math.nan
            if math.isfinite(sim):
                scored.append((min(max(sim, -1.0), 1.0), row.id, row))
            else:  # a zero or non-finite stored vector
                bad.append(row.id)
        scored.sort(reverse=True)  # ids are unique: rows themselves are never compared
        ranked = [(row, sim) for sim, _, row in scored]
    if bad:
        damaged.note(bad)
    return Neighbours(ranked, bad)


def ranked(rows: list[tuple[EntryRow, float | None]], damaged: DamagedVectors) -> Neighbours:
    """:class:`Neighbours` of rows whose cosine the engine computed (None: damaged)."""
    scored = [(min(max(float(sim), -1.0), 1.0), row.id, row) for row, sim in rows
              if sim is not None and math.isfinite(sim)]
    bad = [row.id for row, sim in rows if sim is None or not math.isfinite(sim)]
    scored.sort(reverse=True)
    if bad:
        damaged.note(bad)
    return Neighbours([(row, sim) for sim, _, row in scored], bad)


__all__ = ["DamagedVectors", "rescore", "ranked"]
