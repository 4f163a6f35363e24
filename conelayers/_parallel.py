"""Scheduling the items of a batch across cores.

Items run in threads, not processes: measured on this 2-core machine, SCS,
Clarabel and SuperLU/LAPACK release the GIL (raw Clarabel solves of the
benchmark problems on two threads: 1.5x–2.2x faster than on one), and threads
share the layer's structures and the results without pickling, where a process
pool pays ~1 ms per item to ship data and 4–7 ms per call at B = 1
(``executor="processes"`` is the opt-in, see :mod:`conelayers._pool`). While
items run in parallel, BLAS is held to one thread per worker: OpenBLAS's own
threads on matrices this small made a 157×157 LU 70x slower (7 ms instead of
0.1 ms).

What does not spread over threads is our own refinement and derivative work:
short NumPy and LAPACK calls, a GIL hand-off every few microseconds. On the
benchmark suite (B = 64, this machine, interleaved, per item) backward items
(0.2–1.6 ms each) were 1.1x–1.8x *slower* on two threads than on one, and
forward items (solve and refine) of 1.2–1.6 ms 7–9 % slower, while the dense
QP's (22–52 ms forward, 4 ms backward: Clarabel and LAPACK on matrices of order
389) ran 2.3x and 1.5x faster. Hence two schedules:

* :func:`pipeline` (the forward pass): worker threads solve, the calling thread
  refines groups of consecutive items (one batched evaluation per step for a
  group, see ``_refine.refine_many``);
* :func:`for_each` (backward, JVP, on the same groups, :func:`groups_of`): with
  the default thread count the first call runs alone and timed, and the rest go
  to threads only if it took at least ``_THREADED_ITEM`` seconds per item. An
  explicit count (``n_jobs_*``) is used as given.

Workers idle at the end of a refinement-bound forward pass (every item solved,
groups still to refine). Two ways of using them were measured and dropped
(2026-12-02, AMD 2-core machine, B = 128 unless noted, interleaved, forward +
backward per item): workers refining groups from the back while the calling
thread refines from the front (same results bit for bit), forward only:
NNLS + l1 +17 % at B = 64 but −9 % at B = 128, sparsemax −4 %, QP and logistic
regression ±2 %; workers factoring K at finished groups' refined points for
the backward (same results): NNLS + l1 −9 % and +6 % in two runs, sparsemax
+7 % and 0 %, SDP −2 % and −7 %, QP +1 %, dense QP (B = 32) −3 %. In both the
second thread's Python and ``gecon`` (which holds the GIL) slowed the
refining thread about as much as the work it took over."""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["for_each", "for_groups", "group_size", "groups_of", "pipeline", "worker_count"]

T = TypeVar("T")

# os.cpu_count() reads the system each call (~40 µs, measured at B = 1).
_CORES = os.cpu_count() or 1
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
# Inspecting the loaded BLAS libraries costs ~0.8 ms; do it once.
_BLAS: ThreadpoolController | None = None
# Calls inside _one_blas_thread, and the thread counts it found on entry.
_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_SAVED: list[tuple[Any, int]] = []


@contextlib.contextmanager
def _one_blas_thread(controller: ThreadpoolController) -> Iterator[None]:
    """BLAS on one thread while any call of the process is inside, as found
    before the first of them entered once the last has left.

    Reference-counted: threadpoolctl's ``limit`` restores, on exit, what it
    found on entry, so two overlapping calls (layers used from several
    threads) left BLAS at one thread for good, and the second call's work ran
    on BLAS's own threads once the first had left (measured: OpenBLAS 2 → 1
    after two overlapping calls). Only the BLAS libraries (not PyTorch's
    OpenMP, which the user's other threads may be using).
    """
    global _BLAS_USERS, _BLAS_SAVED
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            _BLAS_SAVED = [(lib, lib.get_num_threads()) for lib in controller.lib_controllers
                           if lib.user_api == "blas"]
            for lib, threads in _BLAS_SAVED:
                if threads != 1:
                    _set_blas_threads(lib, 1)
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                for lib, threads in _BLAS_SAVED:
                    if threads != 1:
                        _set_blas_threads(lib, threads)


def _set_blas_threads(lib: Any, threads: int) -> None:
    """``lib``'s thread count, checked: OpenBLAS (0.3.30 here) ignores
    ``openblas_set_num_threads`` from a thread other than the main one once the
    main thread has called it, and its ``openblas_set_num_threads_local``
    (OpenBLAS ≥ 0.3.27) then sets it (measured: the dense QP from a thread,
    after a call from the main thread, forward 24 → 40 ms per item without)."""
    lib.set_num_threads(threads)
    if lib.get_num_threads() != threads:
        local = getattr(getattr(lib, "dynlib", None), "openblas_set_num_threads_local", None)
        if local is not None:
            local(threads)


def worker_count(requested: int | None, items: int) -> int:
    """Threads for ``items`` items: ``requested`` (cvxpylayers' ``n_jobs``; -1 or
    None = all cores), never more than the items."""
    n = _CORES if requested is None or requested < 1 else requested
    return max(1, min(n, items))


def _pool() -> tuple[ThreadPoolExecutor, ThreadpoolController]:
    global _POOL, _BLAS
    with _POOL_LOCK:
        if _POOL is None or _BLAS is None:
            _POOL = ThreadPoolExecutor(max_workers=max(2, _CORES),
                                       thread_name_prefix="conelayers")
            _BLAS = ThreadpoolController()
        return _POOL, _BLAS


def _after_fork_in_child() -> None:
    """A forked child (a PyTorch DataLoader worker, a ``fork`` multiprocessing
    pool) inherits ``_POOL`` but not its threads: every batch it submitted
    waited forever (found by a probe: a DataLoader worker with the layer in its
    dataset hung after one call in the parent). The child starts its own pool;
    locks a parent thread may have held at the fork are new, and a BLAS thread
    count a parent call had set for its duration is restored."""
    global _POOL, _POOL_LOCK, _BLAS_LOCK, _BLAS_USERS, _BLAS_SAVED
    _POOL, _POOL_LOCK, _BLAS_LOCK = None, threading.Lock(), threading.Lock()
    if _BLAS_USERS:
        for lib, threads in _BLAS_SAVED:
            if threads != 1:
                _set_blas_threads(lib, threads)
    _BLAS_USERS, _BLAS_SAVED = 0, []


if hasattr(os, "register_at_fork"):  # (not on Windows, which cannot fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Time of the first item at or above which the rest of a batch is spread over
# threads, when the thread count is the default (see the module docstring:
# items of 1.6 ms and less lost on two threads, items of 4 ms and more gained;
# forward items of 4–5 ms, NNLS+l1 and the logistic regression, 8–12 %).
_THREADED_ITEM = 2e-3


def for_each(fn: Callable[[int], None], count: int, jobs: int | None,
             items: Callable[[int], int] = lambda i: 1) -> None:
    """Call ``fn(i)`` for i in range(count) on up to ``jobs`` threads (cvxpylayers'
    ``n_jobs``: -1 for all cores; ``None``, the default, for all cores where
    items are long enough to gain from them, see ``_THREADED_ITEM``), in
    contiguous chunks; the first exception raised by any call is re-raised here.
    ``items(i)``: how many batch items call i works on (a group, see
    :func:`groups_of`); the rule is on the time per batch item.

    BLAS runs single-threaded meanwhile, even with one worker: the per-item
    matrices are small, and OpenBLAS's threads made them 70x slower.
    """
    if count == 0:
        return
    workers = worker_count(jobs, count)
    pool, blas = _pool()
    with _one_blas_thread(blas):
        first = 0
        if workers > 1 and jobs is None:
            started = time.perf_counter()
            fn(0)
            first = 1
            if time.perf_counter() - started < _THREADED_ITEM * items(0):
                workers = 1
        if workers <= 1 or count - first == 1:
            for i in range(first, count):
                fn(i)
            return

        def run(chunk: np.ndarray) -> None:
            for i in chunk:
                fn(int(i))

        chunks = np.array_split(np.arange(first, count), workers)
        futures = [pool.submit(run, chunk) for chunk in chunks]
        for f in futures:
            f.result()


# Solved items the calling thread gathers before finishing them together (the
# forward pass refines them in one batch, see _refine.refine_many); it also bounds
# how many solved items wait in memory.
_BATCH = 16


def group_size(together: bool) -> int:
    """Items per group: ``_BATCH`` where the program's items are worked on
    together (``_refine.batchable``), else one."""
    return _BATCH if together else 1


def groups_of(items: np.ndarray, together: bool) -> list[np.ndarray]:
    """``items`` in consecutive groups of :func:`group_size`: the units of a
    pass that works on groups of items (the derivative, see _diff.vjp_many)."""
    size = group_size(together)
    return [items[k:k + size] for k in range(0, items.size, size)]


def for_groups(fn: Callable[[np.ndarray], None], groups: list[np.ndarray],
               jobs: int | None) -> None:
    """``fn(group)`` for every group, as :func:`for_each` runs calls (the
    thread rule judged per item of a group)."""
    for_each(lambda k: fn(groups[k]), len(groups), jobs, lambda k: groups[k].size)


def pipeline(solve: Callable[[int], T], finish: Callable[[list[tuple[int, T]]], None],
             count: int, jobs: int | None, batch: int = _BATCH) -> None:
    """``finish([(i, solve(i)), ...])`` over i in range(count), in groups of
    at most ``batch`` consecutive items, in order:
    ``solve`` on up to ``jobs`` threads (as in :func:`for_each`), ``finish``
    on the calling thread only.

    For the forward pass: the solvers release the GIL (raw Clarabel solves on
    two threads, measured: 1.5x–2.2x faster than on one), while refinement is
    short NumPy calls that do not (two refining threads were slower than one,
    see the module docstring). So worker threads solve items ahead and the
    calling thread finishes each group once it is solved (a group is refined
    in one batch, about as many NumPy calls as one item); until then it
    solves the next unsolved item itself, so that solver-bound batches still
    solve on every thread. The groups depend only on ``count``, ``batch`` and
    whether threads are used, never on timing: a batch's results are the same
    bit for bit however its solves were spread over threads.
    """
    workers = worker_count(jobs, count)
    if count == 0:
        return
    pool, blas = _pool()
    with _one_blas_thread(blas):
        if workers <= 1 or count == 1:
            for first in range(0, count, batch):
                finish([(i, solve(i)) for i in range(first, min(first + batch, count))])
            return
        lock, stop, taken = threading.Lock(), threading.Event(), [0]
        bounds = [0]  # groups of `batch`, halving over the last ones (see below)
        while bounds[-1] < count:
            left = count - bounds[-1]
            bounds.append(bounds[-1] + min(batch, max(1, left // 2)))
        done: queue.SimpleQueue = queue.SimpleQueue()

        def take() -> int | None:
            with lock:
                i = taken[0]
                if i >= count or stop.is_set():
                    return None
                taken[0] = i + 1
                return i

        def produce() -> None:
            while (i := take()) is not None:
                try:
                    done.put((i, solve(i), None))
                except BaseException as error:  # re-raised on the calling thread
                    done.put((i, None, error))
                    return

        solved: dict[int, T] = {}

        def arrived(item: tuple[int, T | None, BaseException | None]) -> None:
            i, result, error = item
            if error is not None:
                raise error
            solved[i] = result  # type: ignore[assignment]

        futures = [pool.submit(produce) for _ in range(workers - 1)]
        try:
            # Once every item is taken, the workers idle while this thread finishes
            # the last group: the groups halve towards the end so that the last is
            # one item (NNLS + l1, refinement 4x the solve: a last group of 16 was
            # 12 % of the batch's time).
            for first, end in itertools.pairwise(bounds):
                group = range(first, end)
                while True:
                    while True:  # what the workers have solved meanwhile
                        try:
                            arrived(done.get_nowait())
                        except queue.Empty:
                            break
                    if all(i in solved for i in group):
                        break
                    own = take()
                    if own is not None:
                        solved[own] = solve(own)
                    else:  # every item is taken: wait for one in flight
                        arrived(done.get())
                finish([(i, solved.pop(i)) for i in group])
        finally:
            stop.set()
            for f in futures:
                f.cancel()  # not started (another call holds the pool's threads)
            wait(futures)
