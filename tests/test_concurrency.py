"""One layer called from 4 threads at once gives what sequential calls give.

The NumPy core (solve, adjoint and derivative, batched, with the layer's own
per-item thread pool underneath, and with different solvers per thread), one
Solution differentiated from 4 threads (its factorizations are built lazily,
under a lock), generated problems, and the TensorFlow front-end (eager and
tf.function). The PyTorch front-end's test is in test_torch_layer.py.

The threads start together (a barrier) and each makes several calls, so that
calls overlap; every result is compared bit for bit with the sequential one.
"""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest
from generators import fuzz_settings, generated_problems
from helpers import random_direction
from hypothesis import given, note
from hypothesis import strategies as st
from problems import CASES

from conelayers import CvxpyLayer

THREADS = 4
TIMEOUT = 120  # seconds; a deadlock fails the test instead of hanging the suite


def run_in_threads(work, jobs):
    """``work(job)`` for every job, on THREADS threads started together; returns
    the results in job order, re-raising the first exception of any thread."""
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def worker(k):
        try:
            barrier.wait(timeout=TIMEOUT)
            for i in range(k, len(jobs), THREADS):
                results[i] = work(jobs[i])
        except BaseException as exc:  # handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread is still running: deadlock?"
    if errors:
        raise errors[0]
    return results


def assert_same(a, b):
    """Nested tuples/lists of arrays and statuses, equal bit for bit."""
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def core_work(layer):
    """A job: solve a batch, then adjoint and derivative along fixed directions."""
    def work(job):
        values, weights, direction, options = job
        sol = layer.solve(*values, solver_args=options, throw=False)
        return sol.values, sol.status, sol.adjoint(*weights), sol.derivative(*direction)
    return work


def jobs_for(case, rng, count, batch, options=None):
    jobs = []
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp)
    for k in range(count):
        values = case.sample_batch(rng, batch) if batch else case.sample(rng)
        outs = layer(*values)
        weights = [rng.standard_normal(np.shape(o)) for o in outs]
        direction = random_direction(case, values, rng)
        jobs.append((values, weights, direction, (options or [{}])[k % len(options or [{}])]))
    return jobs


@pytest.mark.parametrize("batch", [0, 5], ids=["unbatched", "batch of 5"])
@pytest.mark.parametrize("name", ["qp", "socp", "sdp", "logistic", "geometric"])
def test_core_threads_match_sequential_calls(name, batch, rng):
    case = CASES[name]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp)
    jobs = jobs_for(case, rng, 12, batch)
    work = core_work(layer)
    sequential = [work(job) for job in jobs]
    assert_same(run_in_threads(work, jobs), sequential)


def test_core_threads_with_different_solvers_and_options(rng):
    """Threads asking one layer for different solvers (prepared lazily, once) and
    options at the same time get what each asks for."""
    case = CASES["socp"]()
    options = [{"solve_method": "Clarabel"}, {"solve_method": "SCS", "eps": 1e-9},
               {"solve_method": "ECOS"}, {"mode": "dense"}, {"refine": 0}]
    jobs = jobs_for(case, rng, 15, 3, options)
    fresh = CvxpyLayer(case.problem, case.parameters, case.variables)
    sequential = [core_work(fresh)(job) for job in jobs]
    layer = CvxpyLayer(case.problem, case.parameters, case.variables)  # nothing prepared
    assert_same(run_in_threads(core_work(layer), jobs), sequential)


@pytest.mark.parametrize("name", ["qp", "psd_projection", "softmax"])
def test_one_solution_differentiated_from_threads(name, rng):
    """adjoint/derivative of one Solution from 4 threads at once: its per-item
    factorizations are built once, under its lock, and every answer is right."""
    case = CASES[name]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables)
    values = case.sample_batch(rng, 6)
    outs = layer(*values)
    jobs = []
    for _ in range(12):
        jobs.append(([rng.standard_normal(np.shape(o)) for o in outs],
                     random_direction(case, values, rng)))
    reference = layer.solve(*values)
    sequential = [(reference.adjoint(*w), reference.derivative(*d)) for w, d in jobs]
    shared = layer.solve(*values)  # fresh: no factorization yet
    results = run_in_threads(lambda job: (shared.adjoint(*job[0]), shared.derivative(*job[1])),
                             jobs)
    assert_same(results, sequential)


@fuzz_settings(6)
@given(g=generated_problems(), seed=st.integers(0, 2**32 - 1))
def test_generated_problems_threads_match_sequential_calls(g, seed):
    note(repr(g))
    rng = np.random.default_rng(seed)
    layer = CvxpyLayer(g.problem, g.parameters, g.variables)
    outs = layer(*g.values)
    jobs = []
    for k in range(8):
        # The generator's values are feasible by construction, other values need
        # not be: the jobs share the values and differ in cotangents, tangents
        # and refinement steps (at least one: without refinement the layer can
        # warn at regular points, see test_fuzz's
        # test_derivative_warning_regression_unrefined_point).
        jobs.append((g.values, [rng.standard_normal(np.shape(o)) for o in outs],
                     random_direction(g, g.values, rng), {"refine": 1 + k % 3}))
    work = core_work(layer)
    sequential = [work(job) for job in jobs]
    assert_same(run_in_threads(work, jobs), sequential)


# -- TensorFlow -------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="tensorflow is not installed")
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
@pytest.mark.parametrize("name", ["qp", "psd_projection", "geometric"])
def test_tensorflow_threads_match_sequential_calls(name, graph, rng):
    """One TF layer from 4 threads: outputs and GradientTape gradients equal the
    sequential ones (the backward pass finds its own forward pass's solution in
    the layer's registry, whatever the other threads do meanwhile)."""
    import tensorflow as tf

    from conelayers.tensorflow import CvxpyLayer as TFLayer

    case = CASES[name]()
    layer = TFLayer(case.problem, case.parameters, case.variables, gp=case.gp)
    jobs = []
    for _ in range(12):
        values = case.sample_batch(rng, 3)
        outs = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp)(*values)
        jobs.append((values, [rng.standard_normal(np.shape(o)) for o in outs]))

    def forward_and_gradient(*args):
        n = len(case.parameters)
        params, weights = list(args[:n]), args[n:]
        with tf.GradientTape() as tape:
            tape.watch(params)
            outs = layer(*params)
            loss = tf.add_n([tf.reduce_sum(o * w) for o, w in zip(outs, weights, strict=True)])
        return outs, tape.gradient(loss, params)

    fn = tf.function(forward_and_gradient) if graph else forward_and_gradient

    def work(job):
        values, weights = job
        outs, grads = fn(*[tf.constant(v) for v in values],
                         *[tf.constant(w) for w in weights])
        return [o.numpy() for o in outs], [g.numpy() for g in grads]

    sequential = [work(job) for job in jobs]
    assert_same(run_in_threads(work, jobs), sequential)
