"""Activations as optimization layers: sigmoid, softmax and sparsemax.

Each activation is the solution of a small convex problem:

* sigmoid(x)   = argmin_z  −xᵀz − Σ H(z) − Σ H(1 − z)          (0 ≤ z ≤ 1 implied)
* softmax(x)   = argmin_z  −xᵀz − Σ H(z)     s.t.  Σ z = 1
* sparsemax(x) = argmin_z  ‖z − x‖²          s.t.  Σ z = 1, z ≥ 0

with H(u) = −u log u (``cp.entr``). The script builds each as a PyTorch layer,
then prints the mean absolute error of the forward pass and of the gradient
against the analytic forms (``torch.sigmoid``, ``torch.softmax`` and a
closed-form sparsemax). With exact derivatives both errors sit at the
solver's accuracy (1e-10 or better), not at 1e-4.

Run:  python examples/activations.py [--full]
"""

from __future__ import annotations

import argparse

import cvxpy as cp
import torch

from conelayers.torch import CvxpyLayer


def sparsemax_closed_form(x: torch.Tensor) -> torch.Tensor:
    """Martins & Astudillo (2016), differentiable by autograd."""
    z, _ = torch.sort(x, dim=-1, descending=True)
    k = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    support = 1 + k * z > torch.cumsum(z, dim=-1)
    k_max = support.sum(dim=-1, keepdim=True)
    tau = (torch.gather(torch.cumsum(z, -1), -1, k_max - 1) - 1) / k_max
    return torch.clamp(x - tau, min=0)


def layers(n: int) -> dict[str, tuple[CvxpyLayer, object]]:
    x = cp.Parameter(n)
    z = cp.Variable(n)
    sigmoid = cp.Problem(cp.Minimize(-x @ z - cp.sum(cp.entr(z)) - cp.sum(cp.entr(1 - z))))
    softmax = cp.Problem(cp.Minimize(-x @ z - cp.sum(cp.entr(z))), [cp.sum(z) == 1])
    sparsemax = cp.Problem(cp.Minimize(cp.sum_squares(z - x)), [cp.sum(z) == 1, z >= 0])
    return {
        "sigmoid": (CvxpyLayer(sigmoid, [x], [z]), torch.sigmoid),
        "softmax": (CvxpyLayer(softmax, [x], [z]), lambda t: torch.softmax(t, dim=-1)),
        "sparsemax": (CvxpyLayer(sparsemax, [x], [z]), sparsemax_closed_form),
    }


def main(full: bool = False) -> dict[str, tuple[float, float]]:
    torch.manual_seed(0)
    n, batch = (10, 64) if full else (5, 8)
    errors = {}
    print(f"{'activation':10s}  {'forward MAE':>12s}  {'gradient MAE':>12s}")
    for name, (layer, analytic) in layers(n).items():
        x = torch.randn(batch, n, dtype=torch.float64, requires_grad=True)
        w = torch.randn(batch, n, dtype=torch.float64)
        (ours,) = layer(x)
        (g_ours,) = torch.autograd.grad((ours * w).sum(), x)
        ref = analytic(x)
        (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
        errors[name] = (float((ours - ref).abs().mean().detach()),
                        float((g_ours - g_ref).abs().mean()))
        print(f"{name:10s}  {errors[name][0]:12.1e}  {errors[name][1]:12.1e}")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger sizes")
    main(parser.parse_args().full)
