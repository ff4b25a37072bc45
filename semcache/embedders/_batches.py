"""A batch of tokenized texts as forward passes, run on one thread or several.

``put_many`` and imports embed many texts in one ``embed()`` call. The texts are sorted
longest first and cut into passes of similar lengths (at most ``batch_size`` texts and
:data:`PASS_TOKENS` tokens, which bounds the memory of one pass). With ``threads > 1`` the
passes are shared by that many threads, each running BLAS on 1 thread: the matrix products
and most numpy loops release the GIL, so two threads embed a large batch ~1.7x faster on
two cores. A pass's vectors do not depend on which thread ran it, nor on the other passes:
the result is the same, bit for bit, with any number of threads.

Threads are started per call (never kept in a pool), so a process that forks after
embedding (gunicorn ``--preload``) has no half-alive pool in its children.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

#: Most tokens in one forward pass: ~6 MB per (tokens, 384) float32 activation.
PASS_TOKENS = 4096
#: Fewest texts per thread worth starting a thread for (a thread costs ~0.1 ms, one text ~4 ms).
MIN_TEXTS_PER_THREAD = 2
#: Most threads ``"auto"`` uses: past a few, the Python between the numpy calls (which holds
#: the GIL) is what the threads wait on.
MAX_AUTO_THREADS = 4


def auto_batch_threads(blas_threads: int | None) -> int:
    """Threads for large batches by default: the cores this process may use, divided by
    the BLAS threads of each (1 if BLAS is left alone: it may already use every core)."""
    if blas_threads is None:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_THREADS, cores // blas_threads))


def plan_passes(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The texts (indices into ``lengths``) of each forward pass, longest texts first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    passes: list[list[int]] = []
    tokens = 0
    for i in order:
        if not passes or len(passes[-1]) >= batch_size or tokens + lengths[i] > PASS_TOKENS:
            passes.append([])
            tokens = 0
        passes[-1].append(i)
        tokens += lengths[i]
    return passes


def run_passes(ids: Sequence[Sequence[int]], passes: list[list[int]],
               pool: Callable[[list[Sequence[int]]], np.ndarray], out: np.ndarray,
               threads: int) -> None:
    """Fill ``out[i]`` with ``pool``'s row for ``ids[i]``, pass by pass, on ``threads``
    threads (the caller's included). An exception in any thread is raised here."""
    threads = max(1, min(threads, len(passes), len(ids) // MIN_TEXTS_PER_THREAD))
    if threads == 1:
        for texts in passes:
            out[texts] = pool([ids[i] for i in texts])
        return
    lock = threading.Lock()
    remaining = iter(passes)
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            with lock:
                if errors:
                    return
                texts = next(remaining, None)
            if texts is None:
                return
            try:
                out[texts] = pool([ids[i] for i in texts])
            except BaseException as exc:  # re-raised by the calling thread
                with lock:
                    errors.append(exc)
                return

    helpers = [threading.Thread(target=work, name=f"semcache-embed-{n}", daemon=True)
               for n in range(1, threads)]
    for helper in helpers:
        helper.start()
    work()
    for helper in helpers:
        helper.join()
    if errors:
        raise errors[0]
