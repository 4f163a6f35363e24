"""The problem zoo: small, well-conditioned DPP problems with known answers.

Each case builds a fresh CVXPY problem and samples parameter values from a
seeded generator. Where a closed form exists, ``closed_form(values)`` returns
the exact outputs; otherwise CVXPY's own solve is the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np

ALL_SOLVERS = ("Clarabel", "SCS", "ECOS")
NO_PSD = ALL_SOLVERS
WITH_PSD = ("Clarabel", "SCS")


@dataclass
class Case:
    name: str
    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    sample: Callable[[np.random.Generator], list[np.ndarray]]
    solvers: tuple[str, ...] = ALL_SOLVERS
    gp: bool = False
    closed_form: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None
    # Which parameters are symmetric matrices (FD directions must be symmetric).
    symmetric: tuple[int, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)

    def sample_batch(self, rng: np.random.Generator, batch: int) -> list[np.ndarray]:
        draws = [self.sample(rng) for _ in range(batch)]
        return [np.stack([d[i] for d in draws]) for i in range(len(self.parameters))]


def _sym(rng, k):
    M = rng.standard_normal((k, k))
    return (M + M.T) / 2


def lp() -> Case:
    """min cᵀx s.t. Gx ≤ h, −1 ≤ x ≤ 1: a generic vertex, unique and nondegenerate."""
    n, m = 5, 8
    x = cp.Variable(n)
    c, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    cons = [G @ x <= h, x >= -1, x <= 1]
    prob = cp.Problem(cp.Minimize(c @ x), cons)

    def sample(rng):
        return [rng.standard_normal(n), rng.standard_normal((m, n)), rng.uniform(0.5, 1.5, m)]

    return Case("lp", prob, [c, G, h], [x, cons[0].dual_variables[0]], sample)


def qp() -> Case:
    """A QP written with sum_squares, with equality and inequality constraints."""
    n, k, p = 6, 9, 2
    x = cp.Variable(n)
    F, g = cp.Parameter((k, n)), cp.Parameter(k)
    A, b = cp.Parameter((p, n)), cp.Parameter(p)
    cons = [A @ x == b, x >= -0.2]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + 0.5 * cp.sum_squares(x)), cons)

    def sample(rng):
        Av = rng.standard_normal((p, n))
        feasible = rng.uniform(0.0, 1.0, n)  # strictly inside x ≥ −0.2
        return [rng.standard_normal((k, n)), rng.standard_normal(k), Av, Av @ feasible]

    return Case("qp", prob, [F, g, A, b],
                [x, cons[0].dual_variables[0], cons[1].dual_variables[0]], sample)


def socp() -> Case:
    """min ‖Fx − g‖₂ + cᵀx s.t. ‖x‖₂ ≤ r: second-order cones, a norm constraint."""
    n, k = 4, 6
    x = cp.Variable(n)
    F, g, c = cp.Parameter((k, n)), cp.Parameter(k), cp.Parameter(n)
    r = cp.Parameter(nonneg=True)
    cons = [cp.norm(x, 2) <= r]
    prob = cp.Problem(cp.Minimize(cp.norm(F @ x - g, 2) + c @ x), cons)

    def sample(rng):
        return [rng.standard_normal((k, n)), rng.standard_normal(k),
                rng.standard_normal(n), np.array(rng.uniform(0.3, 0.8))]

    return Case("socp", prob, [F, g, c, r], [x, cons[0].dual_variables[0]], sample)


def ball_projection() -> Case:
    """Projection onto the unit ball, with an explicit SOC constraint (two duals)."""
    n = 4
    x = cp.Variable(n)
    p = cp.Parameter(n)
    con = cp.SOC(cp.Constant(1.0), x)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [con])

    def sample(rng):
        v = rng.standard_normal(n)
        return [v * rng.uniform(1.3, 2.0) / np.linalg.norm(v)]  # outside: constraint active

    def closed(values):
        (pv,) = values
        nrm = np.linalg.norm(pv)
        xs = pv / max(1.0, nrm)
        lam = 2 * (nrm - 1) if nrm > 1 else 0.0  # multiplier of ‖x‖ ≤ 1 with f = ‖x−p‖²
        return [xs, np.array(lam), -lam * xs]  # CVXPY: dual of (t, x) is (λ, −λx)

    return Case("ball_projection", prob, [p],
                [x, con.dual_variables[0], con.dual_variables[1]], sample, closed_form=closed)


def psd_projection() -> Case:
    """min ‖X − P‖²_F s.t. X ⪰ 0: X = Π_PSD(P), dual 2·Π_PSD(−P). Symmetric P and X."""
    k = 3
    X = cp.Variable((k, k), symmetric=True)
    P = cp.Parameter((k, k), symmetric=True)
    con = X >> 0
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - P)), [con])

    def sample(rng):
        M = _sym(rng, k)
        lam, Q = np.linalg.eigh(M)
        lam = np.array([-1.3, 0.7, 1.6])  # well separated, one negative
        return [(Q * lam) @ Q.T]

    def closed(values):
        (Pv,) = values
        lam, Q = np.linalg.eigh(Pv)
        pos = (Q * np.maximum(lam, 0)) @ Q.T
        neg = (Q * np.maximum(-lam, 0)) @ Q.T
        return [pos, 2 * neg]

    return Case("psd_projection", prob, [P], [X, con.dual_variables[0]], sample,
                solvers=WITH_PSD, closed_form=closed, symmetric=(0,))


def sdp() -> Case:
    """min tr(CX) + ‖X‖²_F s.t. tr(X) = 1, X ⪰ 0: a regularized SDP."""
    k = 3
    X = cp.Variable((k, k), PSD=True)
    C = cp.Parameter((k, k), symmetric=True)
    con = cp.trace(X) == 1
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)), [con])

    def sample(rng):
        return [_sym(rng, k)]

    return Case("sdp", prob, [C], [X, con.dual_variables[0]], sample, solvers=WITH_PSD,
                symmetric=(0,))


def logistic() -> Case:
    """Regularized logistic regression (exponential cones).

    The labels are folded into the data (Z = diag(y) X), as DPP requires: a
    product of two parameters y and X would not be DPP.
    """
    N, n = 8, 3
    w = cp.Variable(n)
    Z = cp.Parameter((N, n))
    lam = cp.Parameter(nonneg=True)
    loss = cp.sum(cp.logistic(-Z @ w)) / N
    prob = cp.Problem(cp.Minimize(loss + lam * cp.sum_squares(w)))

    def sample(rng):
        Xv = rng.standard_normal((N, n))
        yv = np.sign(Xv @ rng.standard_normal(n) + 0.5 * rng.standard_normal(N))
        return [yv[:, None] * Xv, np.array(rng.uniform(0.05, 0.2))]

    return Case("logistic", prob, [Z, lam], [w], sample)


def softmax() -> Case:
    """max zᵀx + Σ entr(x) s.t. Σx = 1: x = softmax(z) (entropy maximization)."""
    n = 5
    x = cp.Variable(n)
    z = cp.Parameter(n)
    con = cp.sum(x) == 1
    prob = cp.Problem(cp.Maximize(z @ x + cp.sum(cp.entr(x))), [con])

    def sample(rng):
        return [rng.standard_normal(n)]

    def closed(values):
        (zv,) = values
        e = np.exp(zv - zv.max())
        return [e / e.sum(), None]

    return Case("softmax", prob, [z], [x, con.dual_variables[0]], sample, closed_form=closed)


def sparsemax() -> Case:
    """Euclidean projection onto the simplex (sparsemax)."""
    n = 6
    x = cp.Variable(n)
    z = cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])

    def sample(rng):
        return [rng.standard_normal(n)]

    def closed(values):
        (zv,) = values
        u = np.sort(zv)[::-1]
        css = np.cumsum(u)
        k = np.arange(1, zv.size + 1)
        rho = k[u - (css - 1) / k > 0][-1]
        tau = (css[rho - 1] - 1) / rho
        return [np.maximum(zv - tau, 0)]

    return Case("sparsemax", prob, [z], [x], sample, closed_form=closed)


def affine_projection() -> Case:
    """min ‖x − p‖² s.t. Ax = b: x = p − Aᵀ(AAᵀ)⁻¹(Ap − b) (equality constraints)."""
    n, m = 5, 2
    x = cp.Variable(n)
    p, A, b = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    con = A @ x == b
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [con])

    def sample(rng):
        return [rng.standard_normal(n), rng.standard_normal((m, n)), rng.standard_normal(m)]

    def closed(values):
        pv, Av, bv = values
        nu = np.linalg.solve(Av @ Av.T, Av @ pv - bv)
        return [pv - Av.T @ nu, None]

    return Case("affine_projection", prob, [p, A, b], [x, con.dual_variables[0]], sample,
                closed_form=closed)


def matrix_nonneg() -> Case:
    """min ‖X − P‖²_F s.t. X ≥ 0 for a 3×2 matrix variable: X = max(P, 0)."""
    X = cp.Variable((3, 2))
    P = cp.Parameter((3, 2))
    con = X >= 0
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X - P)), [con])

    def sample(rng):
        v = rng.standard_normal((3, 2))
        return [np.where(np.abs(v) < 0.2, 0.5, v)]  # keep away from the kink

    def closed(values):
        (Pv,) = values
        return [np.maximum(Pv, 0), 2 * np.maximum(-Pv, 0)]

    return Case("matrix_nonneg", prob, [P], [X, con.dual_variables[0]], sample,
                closed_form=closed)


def geometric() -> Case:
    """A geometric program (gp=True): the box-volume example of cvxpylayers."""
    x, y, z = (cp.Variable(pos=True) for _ in range(3))
    a, b, c = cp.Parameter(pos=True), cp.Parameter(pos=True), cp.Parameter()
    prob = cp.Problem(cp.Minimize(1 / (x * y * z)),
                      [a * (x * y + x * z + y * z) <= b, x >= y ** c])

    def sample(rng):
        return [np.array(rng.uniform(1.5, 2.5)), np.array(rng.uniform(1.5, 2.5)),
                np.array(rng.uniform(0.4, 0.8))]

    return Case("geometric", prob, [a, b, c], [x, y, z], sample, gp=True)


CASES: dict[str, Callable[[], Case]] = {
    f.__name__: f
    for f in (lp, qp, socp, ball_projection, psd_projection, sdp, logistic, softmax,
              sparsemax, affine_projection, matrix_nonneg, geometric)
}


def case_solver_pairs() -> list[tuple[str, str]]:
    return [(name, solver) for name, f in CASES.items() for solver in f().solvers]
