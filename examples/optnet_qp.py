"""A differentiable QP layer in the style of OptNet (Amos & Kolter, 2017).

    minimize ½‖P_sqrt z‖² + qᵀz   subject to   G z ≤ h,   A z = b

with every matrix a batched parameter. The layer returns the primal solution
and the dual variables of both constraints; ``torch.autograd.gradcheck``
verifies the gradients of all three outputs with respect to all six inputs.

Run:  python examples/optnet_qp.py [--full]
"""

from __future__ import annotations

import argparse

import cvxpy as cp
import torch

from conelayers.torch import CvxpyLayer


def build(n: int, m: int, p: int) -> CvxpyLayer:
    z = cp.Variable(n)
    P_sqrt, q = cp.Parameter((n, n)), cp.Parameter(n)
    G, h = cp.Parameter((m, n)), cp.Parameter(m)
    A, b = cp.Parameter((p, n)), cp.Parameter(p)
    ineq, eq = G @ z <= h, A @ z == b
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(P_sqrt @ z) + q @ z), [ineq, eq])
    return CvxpyLayer(problem, [P_sqrt, q, G, h, A, b],
                      [z, ineq.dual_variables[0], eq.dual_variables[0]])


def sample(n: int, m: int, p: int, batch: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    kw = {"dtype": torch.float64, "generator": g}
    z0 = torch.randn(batch, n, **kw)
    G, A = torch.randn(batch, m, n, **kw), torch.randn(batch, p, n, **kw)
    h = torch.einsum("bij,bj->bi", G, z0) + torch.rand(batch, m, **kw)  # z0 is feasible
    b = torch.einsum("bij,bj->bi", A, z0)
    return (torch.randn(batch, n, n, **kw), torch.randn(batch, n, **kw), G, h, A, b)


def main(full: bool = False) -> bool:
    n, m, p, batch = (20, 10, 5, 8) if full else (4, 3, 1, 2)
    layer = build(n, m, p)
    inputs = tuple(t.requires_grad_() for t in sample(n, m, p, batch))
    z, lam, nu = layer(*inputs)
    print(f"solution z: {tuple(z.shape)}, inequality duals: {tuple(lam.shape)}, "
          f"equality duals: {tuple(nu.shape)}")
    print("active inequalities per item:", (lam > 1e-8).sum(dim=1).tolist())
    ok = torch.autograd.gradcheck(lambda *a: layer(*a), inputs, eps=1e-6, atol=1e-6, rtol=1e-5)
    print("torch.autograd.gradcheck through z, λ and ν:", "passed" if ok else "failed")
    return ok


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger sizes")
    main(parser.parse_args().full)
