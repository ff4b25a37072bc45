"""numpy's BLAS as the embedder's forward pass uses it: a bound on its threads, its kernels.

numpy's BLAS (OpenBLAS in the numpy wheels) starts one thread per core by default. In the
normal deployment, N app workers on N cores, every worker embedding with N threads makes
N * N threads fight for N cores: they spin-wait on each other and latency goes up, not down.
So the ``minilm`` embedder limits BLAS to 1 thread (by default) while it runs, and puts the
application's own setting back afterwards.

The BLAS thread count is process-wide, not per thread, so overlapping forward passes in
several threads share one limit: the first to start sets it, the last to finish restores the
previous value. The limit is applied with threadpoolctl (part of the ``[local]`` extra); if
it is not installed, BLAS is left alone and a debug message says so.

:func:`small_gemm_kernels` says whether that BLAS multiplies small matrices in place (see
:mod:`semcache.embedders._kernels`), which decides the layout of the model's weights.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from semcache.errors import ConfigurationError

logger = logging.getLogger("semcache")

#: Environment variable with the default thread count of the ``minilm`` embedder:
#: a positive int, or ``0`` / ``none`` to leave BLAS threads as the application set them.
THREADS_ENV = "SEMCACHE_EMBED_THREADS"
DEFAULT_THREADS = 1


def threads_from_env() -> int | None:
    """The thread count ``SEMCACHE_EMBED_THREADS`` asks for (``None`` = leave BLAS alone).

    Unset or empty means :data:`DEFAULT_THREADS`. Raises :class:`ConfigurationError` for a
    value that is not a non-negative int or ``none``.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_THREADS
    if raw.lower() in ("0", "none"):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 1:
        raise ConfigurationError(
            f"{THREADS_ENV}={raw!r}: expected a positive int, or 0 / 'none' to leave BLAS "
            "threads alone"
        )
    return value


class BlasThreadLimit:
    """Reference-counted, process-wide limit of BLAS threads (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._controller: Any = None
        self._saved: list[tuple[Any, int]] = []
        self._unavailable = False

    def _blas(self) -> Any:
        """threadpoolctl's BLAS controller (built once: it scans the loaded libraries)."""
        if self._controller is None and not self._unavailable:
            try:
                from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]
            except ImportError:
                self._unavailable = True
                logger.debug("threadpoolctl is not installed: BLAS threads are not bounded")
                return None
            self._controller = ThreadpoolController().select(user_api="blas")
        return self._controller

    def prepare(self) -> None:
        """Find the BLAS libraries now (a scan of the loaded libraries, ~1 ms), not on the
        first forward pass."""
        with self._lock:
            self._blas()

    @contextmanager
    def limit(self, threads: int | None) -> Iterator[None]:
        """Run the block with at most ``threads`` BLAS threads (``None``: no change)."""
        if threads is None:
            yield
            return
        with self._lock:
            if self._active == 0:
                self._apply(threads)
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._restore()

    def _apply(self, threads: int) -> None:
        blas = self._blas()
        if blas is None:
            return
        self._saved = []
        for lib in blas.lib_controllers:
            current = lib.get_num_threads()  # live value: the app may have changed it
            if current != threads:
                self._saved.append((lib, current))
                lib.set_num_threads(threads)

    def _restore(self) -> None:
        for lib, threads in self._saved:
            lib.set_num_threads(threads)
        self._saved = []


    def libraries(self) -> list[dict[str, Any]]:
        """threadpoolctl's description of each BLAS library loaded (empty without it)."""
        with self._lock:
            blas = self._blas()
        return [] if blas is None else [lib.info() for lib in blas.lib_controllers]


#: The one limit every embedder of this process shares (the BLAS setting is process-wide).
BLAS_THREADS = BlasThreadLimit()

#: OpenBLAS core types (its ``openblas_get_corename``) with AVX-512 small-matrix sgemm
#: kernels. AMD Zen 4 and 5 run as "SkylakeX"; ``OPENBLAS_CORETYPE=Haswell`` selects the
#: AVX2 kernels, which have none.
SMALL_GEMM_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})


def numpy_blas_libraries() -> list[dict[str, Any]]:
    """threadpoolctl's description of the BLAS numpy multiplies with (empty without it).

    Other packages may load their own (faiss loads an OpenMP OpenBLAS, whose thread count is
    per thread); numpy's is the one its wheels vendor (``numpy.libs``, ``numpy/.dylibs``)
    when one is loaded, else every BLAS library is taken for it.
    """
    libraries = BLAS_THREADS.libraries()
    vendored = [lib for lib in libraries if _vendored_by_numpy(str(lib.get("filepath", "")))]
    return vendored or libraries


def small_gemm_kernels() -> bool:
    """True if numpy's BLAS is an OpenBLAS running a core with small-matrix sgemm kernels.

    Found with threadpoolctl (False without it: the plain weight layout is right for every
    BLAS, the blocked one only for these kernels).
    """
    return any(lib.get("internal_api") == "openblas"
               and str(lib.get("architecture", "")).lower() in SMALL_GEMM_CORES
               for lib in numpy_blas_libraries())


def _vendored_by_numpy(path: str) -> bool:
    parts = os.path.normpath(path).split(os.sep)
    return "numpy.libs" in parts or any(
        a == "numpy" and b == ".dylibs" for a, b in zip(parts, parts[1:], strict=False))
