"""Scheduling the items of a batch across cores.

Items run in threads, not processes: measured on this 2-core machine, SCS
and SuperLU/LAPACK release the GIL (1.6-1.9x with 2 threads), Clarabel
mostly (1.3x), and threads share the layer's structures and the results
without pickling, where a process pool pays ~1 ms per item to ship data
(see benchmarks/README of the performance suite). While items run in
parallel, BLAS is held to one thread per worker: OpenBLAS's own threads on
matrices this small made a 157×157 LU 70x slower (7 ms instead of 0.1 ms).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["for_each", "worker_count"]

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
# Inspecting the loaded BLAS libraries costs ~0.8 ms; do it once.
_BLAS: ThreadpoolController | None = None


def worker_count(requested: int | None, items: int) -> int:
    """Threads for ``items`` items: ``requested`` (cvxpylayers' ``n_jobs``; -1 or
    None = all cores), never more than the items."""
    cores = os.cpu_count() or 1
    n = cores if requested is None or requested < 1 else requested
    return max(1, min(n, items))


def _pool() -> tuple[ThreadPoolExecutor, ThreadpoolController]:
    global _POOL, _BLAS
    with _POOL_LOCK:
        if _POOL is None or _BLAS is None:
            _POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1),
                                       thread_name_prefix="conelayers")
            _BLAS = ThreadpoolController()
        return _POOL, _BLAS


def for_each(fn: Callable[[int], None], count: int, workers: int) -> None:
    """Call ``fn(i)`` for i in range(count) on ``workers`` threads (in contiguous
    chunks); the first exception raised by any call is re-raised here.

    BLAS runs single-threaded meanwhile, even with one worker: the per-item
    matrices are small, and OpenBLAS's threads made them 70x slower.
    """
    if count == 0:
        return
    pool, blas = _pool()
    with blas.limit(limits=1):
        if workers <= 1 or count == 1:
            for i in range(count):
                fn(i)
            return

        def run(chunk: np.ndarray) -> None:
            for i in chunk:
                fn(int(i))

        futures = [pool.submit(run, chunk) for chunk in np.array_split(np.arange(count), workers)]
        for f in futures:
            f.result()
