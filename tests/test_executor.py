"""Running batches on executors: a process pool and a real Dask LocalCluster
give the same results, statuses and gradients as the in-process engine, and a
worker that dies produces an error naming its items."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor

import cvxpy as cp
import numpy as np
import pytest
from problems import CASES

from conelayers import CvxpyLayer, ExecutorError, ParameterError, SolverError, Status


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as executor:
        yield executor


def compare(layer, values, executor, rng, chunk_size=None):
    here = layer.solve(*values, throw=False)
    there = layer.solve(*values, throw=False, executor=executor)
    assert there.status == here.status
    for a, b in zip(here.values, there.values, strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, atol=1e-12)
    w = [rng.standard_normal(np.shape(o)) for o in here.values]
    for g_here, g_there in zip(here.adjoint(*w), there.adjoint(*w), strict=True):
        np.testing.assert_allclose(g_here, g_there, atol=1e-10)
    v = [rng.standard_normal(np.shape(x)) for x in values]
    for d_here, d_there in zip(here.derivative(*v), there.derivative(*v), strict=True):
        np.testing.assert_allclose(d_here, d_there, atol=1e-10, equal_nan=True)


@pytest.mark.parametrize("name", ["qp", "psd_projection", "logistic", "geometric"])
def test_process_pool_equals_in_process(pool, name, rng):
    case = CASES[name]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp, chunk_size=2)
    compare(layer, case.sample_batch(rng, 5), pool, rng)


def failing_batch():
    x = cp.Variable(2)
    lo, s = cp.Parameter(2), cp.Parameter()
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x >= lo, cp.sum(x) <= s])
    # (item 3 not at lo = 0, where x = max(lo, 0) has a kink and the layer warns)
    lo_v = np.array([[0.5, 0.5], [0.5, 0.5], [0.1, 0.2], [-0.3, 0.2]])
    s_v = np.array([2.0, 0.0, 1.0, 1.0])  # item 1 is infeasible
    return CvxpyLayer(prob, [lo, s], [x], chunk_size=1), (lo_v, s_v)


def test_failures_on_an_executor_are_reported_like_in_process(pool, rng):
    layer, values = failing_batch()
    compare(layer, values, pool, rng)
    sol = layer.solve(*values, throw=False, executor=pool)
    assert sol.status[1] is Status.infeasible
    with pytest.raises(SolverError, match="item 1: infeasible"):
        layer.solve(*values, executor=pool)


class DyingExecutor(Executor):
    """A process pool whose worker dies on the task holding a chosen item."""

    def __init__(self, inner: ProcessPoolExecutor, fatal_item: int) -> None:
        self.inner, self.fatal_item, self.calls = inner, fatal_item, 0

    def submit(self, fn, *args, **kwargs) -> Future:
        fn_args = args[3] if len(args) > 3 else ()
        first = fn_args[-1] if fn_args else None
        if first == self.fatal_item:
            return self.inner.submit(os._exit, 1)
        return self.inner.submit(fn, *args, **kwargs)


class CountingExecutor(Executor):
    """A pass-through that counts the tasks it was given."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.tasks = inner, 0

    def submit(self, fn, *args, **kwargs) -> Future:
        self.tasks += 1
        return self.inner.submit(fn, *args, **kwargs)


def test_a_worker_that_dies_names_the_items_it_held(rng):
    layer, values = failing_batch()
    with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as inner:
        message = r"the executor failed on batch item\(s\) [0-9, -]+ \("
        with pytest.raises(ExecutorError, match=message) as info:
            layer.solve(*values, throw=False, executor=DyingExecutor(inner, fatal_item=2))
    assert 2 in info.value.items
    assert layer.solve(*values, throw=False).ok.sum() == 3  # the layer is unaffected


def test_own_pool_regression_is_made_again_after_a_worker_dies(rng):
    """A worker of executor="processes" killed (out of memory, SIGKILL): every
    later call in the process raised a bare BrokenProcessPool, at once, forever
    (found by a probe). The call that held it raises ExecutorError; the next
    call gets a new pool and its answer."""
    import signal

    from conelayers import _pool

    layer, values = failing_batch()
    expected = layer.solve(*values, throw=False).values[0]
    layer.solve(*values, throw=False, executor="processes")  # the pool's workers run
    for pid in list(_pool.process_pool()._processes):
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExecutorError):
        for _ in range(3):  # (the pool notices its loss within a call or two)
            layer.solve(*values, throw=False, executor="processes")
    again = layer.solve(*values, throw=False, executor="processes")
    np.testing.assert_allclose(again.values[0], expected, atol=1e-12, equal_nan=True)


def test_stopped_executors_regression_raise_executor_error():
    """A shut-down pool's RuntimeError ("cannot schedule new futures after
    shutdown") escaped as it was (found by a probe); ExecutorError now, naming
    the items, before anything is solved."""
    from concurrent.futures import ThreadPoolExecutor

    layer, values = failing_batch()
    pool = ThreadPoolExecutor(2)
    pool.shutdown()
    with pytest.raises(ExecutorError, match=r"the executor refused the work \(RuntimeError: "
                       r"cannot schedule new futures after shutdown\)") as info:
        layer.solve(*values, throw=False, executor=pool)
    assert info.value.items == (0, 1, 2, 3)


def test_copies_regression_keep_the_executor():
    """copy.copy and copy.deepcopy (of the NumPy layer and of a PyTorch module
    holding one: a target network) dropped the executor without a word, as
    pickling does, where the copy stays in this process (found by a probe);
    a pickled "processes" layer keeps the name of its new process's own pool."""
    import copy
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    _, values = failing_batch()
    with ThreadPoolExecutor(2) as inner:
        pool = CountingExecutor(inner)
        x, lo, s = cp.Variable(2), cp.Parameter(2), cp.Parameter()
        layer = CvxpyLayer(layer_problem(x, lo, s), [lo, s], [x], chunk_size=1, executor=pool)
        expected = layer.solve(*values, throw=False).values[0]
        sent = pool.tasks
        for twin in (copy.copy(layer), copy.deepcopy(layer)):
            np.testing.assert_array_equal(twin.solve(*values, throw=False).values[0], expected)
            assert pool.tasks == sent + 4  # (one task per item: chunk_size=1)
            sent = pool.tasks
    assert pickle.loads(pickle.dumps(layer))._executor is None  # (a local resource)
    torch = pytest.importorskip("torch")
    from conelayers.torch import CvxpyLayer as TorchLayer

    with ThreadPoolExecutor(2) as inner:
        pool = CountingExecutor(inner)
        module = TorchLayer(layer_problem(x, lo, s), [lo, s], [x], executor=pool)
        twin = copy.deepcopy(module)  # (a target network)
        out = twin(*[torch.tensor(v) for v in values], throw=False)[0]
        assert pool.tasks > 0
        np.testing.assert_array_equal(out.numpy(), expected)


def layer_problem(x, lo, s):
    return cp.Problem(cp.Minimize(cp.sum_squares(x)), [x >= lo, cp.sum(x) <= s])


def test_executor_argument_is_checked():
    layer, _ = failing_batch()
    with pytest.raises(ParameterError, match=r"`executor` must be a concurrent.futures.Executor"
                       r".*'processes'.*got 'dask'"):
        layer.solve(np.zeros(2), 1.0, executor="dask")


def test_the_layers_own_process_pool_equals_in_process(rng):
    """executor="processes": one shared pool (a worker per usable core), the
    same results as in this process, failures included; and the layer pickles
    with it (the name of the receiving process's own pool)."""
    import pickle

    from conelayers._pool import process_pool, usable_cores

    layer, values = failing_batch()
    compare(layer, values, "processes", rng)
    case = CASES["logistic"]()
    own = CvxpyLayer(case.problem, case.parameters, case.variables, executor="processes")
    assert own._executor == "processes" and process_pool()._max_workers == usable_cores()
    plain = CvxpyLayer(case.problem, case.parameters, case.variables)
    values = case.sample_batch(rng, 6)
    there, here = own.solve(*values), plain.solve(*values)
    np.testing.assert_allclose(there.values[0], here.values[0], atol=1e-12)
    w = [rng.standard_normal(np.shape(o)) for o in here.values]
    for g_there, g_here in zip(there.adjoint(*w), here.adjoint(*w), strict=True):
        np.testing.assert_allclose(g_there, g_here, atol=1e-10)
    # ("processes" names the receiving process's own pool: it travels.)
    assert pickle.loads(pickle.dumps(own))._executor == "processes"


def test_front_ends_use_the_executor(pool, rng):
    torch = pytest.importorskip("torch")
    from conelayers.torch import CvxpyLayer as TorchLayer

    case = CASES["sparsemax"]()
    layer = TorchLayer(case.problem, case.parameters, case.variables, chunk_size=2)
    z = torch.tensor(case.sample_batch(rng, 4)[0], requires_grad=True)
    (x_here,) = layer(z)
    (x_there,) = layer(z, executor=pool)
    torch.testing.assert_close(x_here, x_there, atol=1e-12, rtol=0)
    (g_here,) = torch.autograd.grad(x_here[:, 0].sum(), z)
    (g_there,) = torch.autograd.grad(x_there[:, 0].sum(), z)
    torch.testing.assert_close(g_here, g_there, atol=1e-10, rtol=0)


def test_tensorflow_front_end_uses_the_executor(pool, rng):
    """Eagerly and inside tf.function, per call and from construction."""
    tf = pytest.importorskip("tensorflow")
    from conelayers.tensorflow import CvxpyLayer as TFLayer

    case = CASES["sparsemax"]()
    here = TFLayer(case.problem, case.parameters, case.variables)
    z = tf.Variable(case.sample_batch(rng, 4)[0])

    def value_and_grad(layer, **kwargs):
        with tf.GradientTape() as tape:
            (x,) = layer(z, **kwargs)
            loss = tf.reduce_sum(x[:, 0])
        return x, tape.gradient(loss, z)

    x_ref, g_ref = value_and_grad(here)
    per_call, at_construction = CountingExecutor(pool), CountingExecutor(pool)
    there = TFLayer(case.problem, case.parameters, case.variables, executor=at_construction,
                    chunk_size=2)
    for x, g in (value_and_grad(there), value_and_grad(here, executor=per_call),
                 tf.function(lambda: value_and_grad(there))()):
        np.testing.assert_allclose(x.numpy(), x_ref.numpy(), atol=1e-12, rtol=0)
        np.testing.assert_allclose(g.numpy(), g_ref.numpy(), atol=1e-10, rtol=0)
    # 2 chunks forward + 2 backward per call (chunk_size 2, B = 4); the per-call
    # executor gets B/16 rounded up = 1 item a chunk: 4 forward + 4 backward
    assert at_construction.tasks >= 8 and per_call.tasks >= 8


def test_dask_local_cluster(rng):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        executor = client.get_executor()
        case = CASES["qp"]()
        layer = CvxpyLayer(case.problem, case.parameters, case.variables, chunk_size=3)
        compare(layer, case.sample_batch(rng, 8), executor, rng)
        failing, values = failing_batch()
        sol = failing.solve(*values, throw=False, executor=executor)
        assert [st.name for st in sol.status] == ["optimal", "infeasible", "optimal", "optimal"]
