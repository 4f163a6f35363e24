"""Quickstart: a CVXPY problem as a differentiable, batched NumPy layer.

Builds a layer for a constrained least-squares problem, solves a batch of 4
instances, prints the solutions, and prints the gradient of a scalar loss
with respect to one parameter next to its central finite-difference check.

Run:  make demo   (or: python examples/quickstart.py)
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from conelayers import CvxpyLayer


def main() -> None:
    rng = np.random.default_rng(0)
    n, k, batch = 4, 6, 4

    # minimize ‖F x − g‖² + λ‖x‖²  subject to  x ≥ 0,  Σ x = 1
    x = cp.Variable(n)
    F = cp.Parameter((k, n))
    g = cp.Parameter(k)
    lam = cp.Parameter(nonneg=True)
    simplex = [x >= 0, cp.sum(x) == 1]
    problem = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g) + lam * cp.sum_squares(x)),
                         simplex)

    layer = CvxpyLayer(problem, parameters=[F, g, lam], variables=[x])  # canonicalized once
    print(layer, "\n")

    Fv = rng.standard_normal((batch, k, n))  # batched: one F per item
    gv = rng.standard_normal((batch, k))  # batched
    lamv = np.array(0.1)  # shared by the whole batch
    sol = layer.solve(Fv, gv, lamv)
    print("status per item:", [st.name for st in sol.status])
    print("solutions x (one row per item):")
    print(np.array2string(sol.values[0] + 0.0, precision=6, suppress_small=True), "\n")

    # Loss L = Σ_items w · x; its gradient with respect to g by the exact adjoint ...
    w = rng.standard_normal((batch, n))
    _, dg, dlam = sol.adjoint(w)

    # ... and by central finite differences of re-solves, entry by entry.
    def loss(gv_: np.ndarray, lam_: np.ndarray) -> float:
        return float(np.sum(w * layer(Fv, gv_, lam_)[0]))

    eps = 1e-5
    fd = np.zeros_like(gv)
    for idx in np.ndindex(gv.shape):
        e = np.zeros_like(gv)
        e[idx] = eps
        fd[idx] = (loss(gv + e, lamv) - loss(gv - e, lamv)) / (2 * eps)
    fd_lam = (loss(gv, lamv + eps) - loss(gv, lamv - eps)) / (2 * eps)

    print("dL/dg (exact adjoint), item 0:", np.array2string(dg[0], precision=8))
    print("dL/dg (finite diff.),  item 0:", np.array2string(fd[0], precision=8))
    err = np.abs(dg - fd).max() / np.abs(fd).max()
    print(f"max relative difference over the batch: {err:.1e}")
    print(f"dL/dλ (λ shared, summed over items): exact {float(dlam):.10f}, "
          f"finite diff. {fd_lam:.10f}")
    assert err < 1e-6, "the gradient does not match its finite-difference check"


if __name__ == "__main__":
    main()
