"""The performance suite's problems (issue #7): each builds a CVXPY problem,
its parameters and outputs, and a sampler of feasible parameter batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp


@dataclass
class BenchProblem:
    name: str
    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    sample: Callable[[np.random.Generator, int], list[np.ndarray]]
    batches: tuple[int, ...]


def nnls_l1(batches=(1, 16, 128, 1024)) -> BenchProblem:
    """min ‖Ax − b‖² + 0.1‖x‖₁ s.t. x ≥ 0 (A 50×20 and b parameters)."""
    m, n = 50, 20
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.norm(x, 1)), [x >= 0])
    return BenchProblem("nnls_l1", prob, [A, b], [x],
                        lambda rng, B: [rng.standard_normal((B, m, n)),
                                        rng.standard_normal((B, m))], batches)


def qp(batches=(1, 16, 128, 1024)) -> BenchProblem:
    """min ‖P x‖² + qᵀx s.t. Gx ≤ h, Ax = b; n = 20, 10 inequalities, 5 equalities."""
    n, mi, me = 20, 10, 5
    x = cp.Variable(n)
    P, q = cp.Parameter((n, n)), cp.Parameter(n)
    G, h = cp.Parameter((mi, n)), cp.Parameter(mi)
    A, b = cp.Parameter((me, n)), cp.Parameter(me)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(P @ x) + q @ x), [G @ x <= h, A @ x == b])

    def sample(rng, B):
        x0 = rng.standard_normal((B, n))
        Gv, Av = rng.standard_normal((B, mi, n)), rng.standard_normal((B, me, n))
        return [rng.standard_normal((B, n, n)), rng.standard_normal((B, n)), Gv,
                np.einsum("bij,bj->bi", Gv, x0) + rng.uniform(0.1, 1, (B, mi)), Av,
                np.einsum("bij,bj->bi", Av, x0)]

    return BenchProblem("qp", prob, [P, q, G, h, A, b], [x], sample, batches)


def sparsemax(batches=(1, 16, 128, 1024)) -> BenchProblem:
    """Euclidean projection onto the simplex, n = 50."""
    n = 50
    x = cp.Variable(n)
    z = cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])
    return BenchProblem("sparsemax", prob, [z], [x],
                        lambda rng, B: [rng.standard_normal((B, n))], batches)


def dense_qp(batches=(1, 16, 128)) -> BenchProblem:
    """The cvxpylayers paper's dense QP: 128 variables, 128 inequalities."""
    n = m = 128
    x = cp.Variable(n)
    L, q = cp.Parameter((n, n)), cp.Parameter(n)
    G, h = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L @ x) + q @ x), [G @ x <= h])

    def sample(rng, B):
        return [rng.standard_normal((B, n, n)) / np.sqrt(n), rng.standard_normal((B, n)),
                rng.standard_normal((B, m, n)), rng.uniform(0.5, 1.5, (B, m))]

    return BenchProblem("dense_qp", prob, [L, q, G, h], [x], sample, batches)


def sparse_qp(batches=(1, 32)) -> BenchProblem:
    """The paper's sparse QP: 1,024 variables, 1,024 equalities and 1,024
    inequalities with density 0.01 (fixed), q, b and h parameters."""
    n = 1024
    rng = np.random.default_rng(1234)
    # Density 0.01 plus a unit diagonal: without it a random row can be empty
    # (probability 3 % per matrix), i.e. a redundant "0 = 0" equality whose
    # multiplier is not unique, and the derivative does not exist.
    A = sp.csr_array(sp.random_array((n, n), density=0.01, rng=rng) + sp.eye_array(n))
    G = sp.csr_array(sp.random_array((n, n), density=0.01, rng=rng) + sp.eye_array(n))
    x0 = rng.standard_normal(n)
    x = cp.Variable(n)
    q, b, h = cp.Parameter(n), cp.Parameter(n), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [A @ x == b, G @ x <= h])

    def sample(rng_, B):
        xs = x0 + 0.1 * rng_.standard_normal((B, n))
        return [rng_.standard_normal((B, n)), (A @ xs.T).T,
                (G @ xs.T).T + rng_.uniform(0.1, 1, (B, n))]

    return BenchProblem("sparse_qp", prob, [q, b, h], [x], sample, batches)


def sdp(batches=(1, 16, 128)) -> BenchProblem:
    """A small SDP: min tr(CX) + ‖X‖²_F s.t. tr(X) = 1, X ⪰ 0, X 6×6."""
    k = 6
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k), symmetric=True)
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)),
                      [X >> 0, cp.trace(X) == 1])

    def sample(rng, B):
        M = rng.standard_normal((B, k, k))
        return [(M + M.transpose(0, 2, 1)) / 2]

    return BenchProblem("sdp", prob, [C], [X], sample, batches)


def logistic(batches=(1, 16, 128)) -> BenchProblem:
    """Regularized logistic regression (exponential cones): 30 samples, 5 features."""
    N, n = 30, 5
    w = cp.Variable(n)
    Z = cp.Parameter((N, n))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-Z @ w)) / N + 0.1 * cp.sum_squares(w)))
    return BenchProblem("logistic", prob, [Z], [w],
                        lambda rng, B: [rng.standard_normal((B, N, n))], batches)


PROBLEMS = {f.__name__: f for f in (nnls_l1, qp, sparsemax, dense_qp, sparse_qp, sdp, logistic)}
