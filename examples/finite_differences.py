"""Finite differences against the exact adjoint, for a stochastic softmax trick.

The relaxed "top-k" selection of Paulus et al. (2020, stochastic softmax
tricks): with utilities θ perturbed by Gumbel noise, the layer returns

    x(θ) = argmax_x  (θ + G)ᵀx + τ·H(x)   s.t.  Σ x = k,  0 ≤ x ≤ 1,

an entropy-regularized linear program over the top-k polytope. For a random
direction g the script compares the directional derivative from the exact
adjoint, ⟨∇_θ wᵀx, g⟩, with the one-sided estimate (x(θ + εg) − x(θ))/ε and
the central one (x(θ + εg) − x(θ − εg))/(2ε), over ε from 1e-1 to 1e-9, and
prints (and optionally plots) the relative errors: the one-sided error falls
like ε, the central like ε², until the solver's accuracy takes over.

Run:  python examples/finite_differences.py [--full] [--plot FILE.png]
"""

from __future__ import annotations

import argparse

import cvxpy as cp
import numpy as np

from conelayers import CvxpyLayer


def main(full: bool = False, plot: str | None = None) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(0)
    n, k, tau = (20, 5, 0.5) if full else (6, 2, 0.5)
    theta = cp.Parameter(n)
    x = cp.Variable(n)
    problem = cp.Problem(cp.Maximize(theta @ x + tau * cp.sum(cp.entr(x))),
                         [cp.sum(x) == k, x >= 0, x <= 1])
    layer = CvxpyLayer(problem, [theta], [x])
    utilities = rng.standard_normal(n) + rng.gumbel(size=n)  # θ + Gumbel noise
    w, g = rng.standard_normal(n), rng.standard_normal(n)

    def f(t: np.ndarray) -> float:
        return float(w @ layer(t)[0])

    (grad,) = layer.solve(utilities).adjoint(w)
    exact = float(grad @ g)
    rows = []
    print(f"exact directional derivative: {exact:.12f}")
    print(f"{'eps':>8s}  {'one-sided rel. error':>22s}  {'central rel. error':>20s}")
    for eps in np.logspace(-1, -9, 9 if not full else 17):
        one = (f(utilities + eps * g) - f(utilities)) / eps
        central = (f(utilities + eps * g) - f(utilities - eps * g)) / (2 * eps)
        rows.append((float(eps), abs(one - exact) / abs(exact), abs(central - exact) / abs(exact)))
        print(f"{eps:8.0e}  {rows[-1][1]:22.2e}  {rows[-1][2]:20.2e}")
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        eps_, one_, cen_ = zip(*rows, strict=True)
        plt.loglog(eps_, one_, "o-", label="one-sided")
        plt.loglog(eps_, cen_, "s-", label="central")
        plt.xlabel("ε")
        plt.ylabel("relative error vs exact adjoint")
        plt.legend()
        plt.savefig(plot, dpi=100)
        print(f"saved {plot}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger problem, finer ε grid")
    parser.add_argument("--plot", default=None, help="save the error curves to this PNG")
    args = parser.parse_args()
    main(args.full, args.plot)
