"""Scheduling of batch items over threads (``conelayers._parallel``).

What is checked is behaviour, not speed: every item is done exactly once,
``finish`` runs on the calling thread only, errors on any thread reach the
caller (and leave the shared pool usable), the thread count is the one asked
for, and the default spreads items only when they are long (``_THREADED_ITEM``).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from conelayers import _parallel


def _run_pipeline(count, jobs, solve_seconds=0.0, groups=None, batch=_parallel._BATCH):
    solved_on, finished = {}, []
    caller = threading.get_ident()

    def solve(i):
        time.sleep(solve_seconds)  # releases the GIL, as the solvers do
        solved_on[i] = threading.get_ident()
        return 10 * i

    def finish(items):
        assert threading.get_ident() == caller
        assert 1 <= len(items) <= batch
        if groups is not None:
            groups.append(len(items))
        for i, result in items:
            assert result == 10 * i
            finished.append(i)

    _parallel.pipeline(solve, finish, count, jobs, batch=batch)
    return solved_on, finished, caller


@pytest.mark.parametrize("count", [0, 1, 2, 37])
def test_pipeline_finishes_every_item_once_on_the_calling_thread(count):
    solved_on, finished, _ = _run_pipeline(count, None, solve_seconds=0.002)
    assert sorted(finished) == list(range(count))
    assert sorted(solved_on) == list(range(count))


@pytest.mark.skipif(_parallel.worker_count(None, 2) < 2, reason="needs 2 cores")
def test_pipeline_solves_ahead_on_a_worker_thread():
    solved_on, _, caller = _run_pipeline(40, 2, solve_seconds=0.005)
    threads = set(solved_on.values())
    assert len(threads) == 2 and caller in threads  # the caller solves when idle


def test_pipeline_with_one_job_stays_on_the_calling_thread():
    groups = []
    solved_on, finished, caller = _run_pipeline(10, 1, solve_seconds=0.001, groups=groups,
                                                batch=4)
    assert set(solved_on.values()) == {caller}
    assert finished == list(range(10))
    assert groups == [4, 4, 2]


@pytest.mark.parametrize("jobs", [1, 2])
def test_pipeline_finishes_in_groups(jobs):
    """Items are finished in groups of consecutive items, in order (the forward
    pass refines a group in one batch), whichever threads solved them: the
    grouping, and so a batch's results bit for bit, never depend on timing."""
    groups, seen = [], []

    def solve(i):
        time.sleep(0.001 * (i % 3))  # uneven, so that workers finish out of order
        return i

    def finish(items):
        groups.append([i for i, _ in items])
        seen.extend(r for _, r in items)

    _parallel.pipeline(solve, finish, 50, jobs, batch=8)
    assert [i for g in groups for i in g] == list(range(50)) == seen  # consecutive, in order
    sizes = [len(g) for g in groups]
    assert max(sizes) == 8 and sizes[:4] == [8] * 4
    assert sizes == sorted(sizes, reverse=True)
    if jobs == 1:  # no workers to keep busy: full groups
        assert sizes == [8] * 6 + [2]
    else:  # the last groups shrink, so that workers do not idle behind a long one
        assert sizes[-1] == 1


@pytest.mark.parametrize("where", ["solve", "finish"])
def test_pipeline_errors_reach_the_caller_and_leave_the_pool_usable(where):
    caller = threading.get_ident()

    def solve(i):
        time.sleep(0.001)
        # Raise on a worker thread (or on item 5 wherever it runs).
        if where == "solve" and (i == 5 or threading.get_ident() != caller):
            raise ValueError(f"solve {i}")
        return i

    def finish(items):
        if where == "finish" and any(i == 3 for i, _ in items):
            raise ValueError("finish 3")

    with pytest.raises(ValueError, match=where):
        _parallel.pipeline(solve, finish, 30, 2)
    _, finished, _ = _run_pipeline(12, 2, solve_seconds=0.001)
    assert sorted(finished) == list(range(12))


def test_pipelines_from_concurrent_callers_all_complete():
    """More callers than pool threads: each caller solves what no worker takes."""
    results, errors = {}, []

    def caller(k):
        try:
            _, finished, _ = _run_pipeline(25, None, solve_seconds=0.001)
            results[k] = sorted(finished)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert results == {k: list(range(25)) for k in range(5)}


def _for_each_threads(count, jobs, seconds, items=None, meet=()):
    """The threads that ran ``for_each``'s calls. The calls ``meet`` (the first
    of each chunk where two threads are expected) wait for each other at a
    barrier, which only as many threads can pass: observing which threads
    happened to run the calls instead failed once on a loaded machine, one pool
    thread taking both chunks while the other waited for the GIL."""
    used = {}
    barrier = threading.Barrier(len(meet), timeout=10) if meet else None

    def fn(i):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:  # holds the GIL, like refinement
            pass
        if barrier is not None and i in meet:
            barrier.wait()
        used[i] = threading.get_ident()

    if items is None:
        _parallel.for_each(fn, count, jobs)
    else:
        _parallel.for_each(fn, count, jobs, lambda i: items)
    assert sorted(used) == list(range(count))
    return set(used.values())


def test_for_each_default_keeps_short_items_on_the_calling_thread():
    assert _for_each_threads(20, None, 0.0) == {threading.get_ident()}


two_cores = pytest.mark.skipif(_parallel.worker_count(None, 2) < 2, reason="needs 2 cores")


@two_cores
def test_for_each_default_spreads_long_items():
    # The first item runs on the caller, timed; the rest in two chunks of ~16 ms
    # (items 1–4 and 5–8).
    threads = _for_each_threads(9, None, 2 * _parallel._THREADED_ITEM, meet=(1, 5))
    assert len(threads - {threading.get_ident()}) == 2


@two_cores
def test_for_each_default_judges_groups_by_their_time_per_item():
    """A call that works on a group of 16 items (the derivative's groups) is
    judged by its time per item: 16 items of 1/4 of _THREADED_ITEM stay on the
    calling thread although the call takes 4 times _THREADED_ITEM; the same
    call counted as one item is spread."""
    long_call = 4 * _parallel._THREADED_ITEM
    assert _for_each_threads(5, None, long_call, items=16) == {threading.get_ident()}
    spread = _for_each_threads(5, None, long_call, items=1, meet=(1, 3))  # chunks 1–2, 3–4
    assert len(spread - {threading.get_ident()}) == 2


@two_cores
def test_for_each_explicit_jobs_are_used_as_given():
    """Items far shorter than _THREADED_ITEM still go to two threads when asked
    (chunks 0–9 and 10–19)."""
    assert len(_for_each_threads(20, 2, 0.001, meet=(0, 10))) == 2
    assert _for_each_threads(20, 1, 0.001) == {threading.get_ident()}



class _FakeBlas:
    """A BLAS library's thread control, as threadpoolctl's controllers expose it."""

    user_api = "blas"

    def __init__(self, threads):
        self.threads, self.calls = threads, []

    def get_num_threads(self):
        return self.threads

    def set_num_threads(self, threads):
        self.calls.append(threads)
        self.threads = threads


class _FakeController:
    def __init__(self, *libs):
        self.lib_controllers = list(libs)


def test_overlapping_calls_hold_blas_at_one_thread_and_restore_it():
    """Two calls from two threads, overlapping (A enters, B enters, A leaves, B
    works, B leaves): BLAS is on one thread while either is inside, and back at
    what it was once both have left; other libraries (OpenMP) untouched.
    (threadpoolctl's ``limit`` per call restored what it found on entry: B then
    worked on BLAS's own threads after A left, and left BLAS at one thread for
    good; seen with OpenBLAS here. A fake controller: OpenBLAS ignores thread
    counts set from a thread other than the main one once the main one has set
    one, which would make the real libraries' state depend on test order.)"""
    blas, single, openmp = _FakeBlas(2), _FakeBlas(1), _FakeBlas(2)
    openmp.user_api = "openmp"
    controller = _FakeController(blas, single, openmp)
    a_inside, b_inside, a_left = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with _parallel._one_blas_thread(controller):
            a_inside.set()
            assert b_inside.wait(5)
            seen["a"] = (blas.threads, single.threads, openmp.threads)

    def b():
        assert a_inside.wait(5)
        with _parallel._one_blas_thread(controller):
            b_inside.set()
            assert a_left.wait(5)
            seen["b after a left"] = (blas.threads, single.threads, openmp.threads)

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start()
    tb.start()
    ta.join(5)
    a_left.set()
    tb.join(5)
    assert not ta.is_alive() and not tb.is_alive()
    assert seen == {"a": (1, 1, 2), "b after a left": (1, 1, 2)}
    assert (blas.threads, single.threads, openmp.threads) == (2, 1, 2)
    assert blas.calls == [1, 2] and single.calls == [] and openmp.calls == []


@pytest.mark.parametrize("schedule", ["for_each", "pipeline"])
def test_the_schedules_run_their_work_with_one_blas_thread(schedule, monkeypatch):
    """for_each and pipeline run every item inside ``_one_blas_thread``."""
    blas = _FakeBlas(2)
    pool, _ = _parallel._pool()
    monkeypatch.setattr(_parallel, "_pool", lambda: (pool, _FakeController(blas)))
    seen = []
    if schedule == "for_each":
        _parallel.for_each(lambda i: seen.append(blas.threads), 3, 1)
    else:
        _parallel.pipeline(lambda i: seen.append(blas.threads), lambda items: None, 3, 1)
    assert seen == [1, 1, 1] and blas.threads == 2


def test_blas_is_held_to_one_thread_on_a_thread_after_the_main_one_set_it():
    """The real BLAS libraries: OpenBLAS (0.3.30 here) ignores a thread count
    set from a thread other than the main one once the main thread has set one
    (as this test does first, as any earlier call from the main thread does);
    ``_set_blas_threads`` checks and falls back. Inside a call from another
    thread BLAS is on one thread, and back at two once it has left."""
    from threadpoolctl import ThreadpoolController, threadpool_info

    def threads():
        return sorted((lib["filepath"], lib["num_threads"]) for lib in threadpool_info()
                      if lib["user_api"] == "blas")

    libs = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    found = [lib.get_num_threads() for lib in libs]
    try:
        for lib in libs:
            lib.set_num_threads(2)  # (on the main thread)
        before = threads()
        if 2 not in [n for _, n in before]:
            pytest.skip("no BLAS library here runs on two threads")
        seen = []
        worker = threading.Thread(
            target=lambda: _parallel.for_each(lambda i: seen.append(threads()), 1, 1))
        worker.start()
        worker.join(10)
        assert seen == [[(path, 1) for path, _ in before]]
        assert threads() == before
    finally:
        for lib, n in zip(libs, found, strict=True):
            lib.set_num_threads(n)


def _solve_in_child(layer, values, conn):
    conn.send(layer(values)[0])
    conn.close()


def _simplex_layer(n, **kwargs):
    import cvxpy as cp

    from conelayers import CvxpyLayer

    x, y = cp.Variable(n), cp.Parameter(n)
    return CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - y)), [cp.sum(x) == 1, x >= 0]),
                      parameters=[y], variables=[x], **kwargs)


def _solved_in_forked_child(layer, values):
    """``layer(values)[0]`` in a forked child, which must finish and exit."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe(duplex=False)
    child = context.Process(target=_solve_in_child, args=(layer, values, theirs))
    child.start()
    try:
        assert ours.poll(60), "the forked child's batch did not finish within 60 s"
        result = ours.recv()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    return result


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_regression_solves_a_batch():
    """A forked child (a PyTorch DataLoader worker) solves batches after the
    parent has: it had inherited the parent's thread pool without its threads,
    and its first batch waited forever (found by a probe, 2026-12-04)."""
    import numpy as np

    layer = _simplex_layer(5)
    values = np.random.default_rng(0).standard_normal((8, 5))
    (expected,) = layer(values)  # the parent's pool now exists, with its threads
    assert _parallel._POOL is not None
    np.testing.assert_array_equal(_solved_in_forked_child(layer, values), expected)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_regression_solves_in_process_for_the_process_pool():
    """A layer built with executor="processes", called in a forked child after
    the parent used the pool: it hung (the layer held the parent's pool object)
    or, passed per call, raised ChildProcessError (the child inherits the
    parent's forkserver; found by a probe). The child solves in-process, the
    same answer, and exits."""
    import numpy as np

    layer = _simplex_layer(4, executor="processes")
    values = np.random.default_rng(1).standard_normal((6, 4))
    (expected,) = layer(values)  # the parent's pool now exists, with its workers
    np.testing.assert_allclose(_solved_in_forked_child(layer, values), expected, atol=1e-12)
