"""Differentiable model-predictive control: fit a controller's model to an
expert's constrained plans (in the spirit of Amos et al., "Differentiable
MPC for end-to-end planning and control", 2018).

The controller plans T steps ahead for a double integrator with bounded
force, from the measured state x₀:

    minimize   Σₜ ‖x_{t+1}‖² + ρ‖u_t‖²
    subject to x_{t+1} = A x_t + B u_t,   |u_t| ≤ 1,   x_0 = x₀

x₀ is batched; the model (A, B) is shared by the batch. An expert plans with
the true model; the learner starts from a wrong one and sees only the
expert's force plans, never the states or the model. Backpropagating the
plan error through the layer into (A, B) with Adam makes the learner's plans
match the expert's on held-out states, bounds active included. (Plans alone
do not pin the model down: the fitted one need not be the true one.)
Before training, the gradient is checked against a central difference of
re-solves.

Run:  python examples/mpc.py [--full]
"""

from __future__ import annotations

import argparse

import cvxpy as cp
import torch

from conelayers.torch import CvxpyLayer


def controller(T: int, rho: float = 0.1) -> tuple[cp.Problem, list, list]:
    """The planning problem, its parameters (x₀, A, B) and its output (u)."""
    x0 = cp.Parameter(2)
    A, B = cp.Parameter((2, 2)), cp.Parameter((2, 1))
    x, u = cp.Variable((2, T + 1)), cp.Variable((1, T))
    constraints = [x[:, 0] == x0, x[:, 1:] == A @ x[:, :-1] + B @ u, cp.abs(u) <= 1]
    cost = cp.sum_squares(x[:, 1:]) + rho * cp.sum_squares(u)
    return cp.Problem(cp.Minimize(cost), constraints), [x0, A, B], [u]


def build(T: int, rho: float = 0.1) -> CvxpyLayer:
    return CvxpyLayer(*controller(T, rho))


def main(full: bool = False) -> dict[str, float]:
    T, batch, steps = (20, 64, 200) if full else (10, 16, 60)
    dt = 0.2
    layer = build(T)
    kw = {"dtype": torch.float64, "generator": torch.Generator().manual_seed(0)}
    A_true = torch.tensor([[1.0, dt], [0.0, 1.0]], dtype=torch.float64)
    B_true = torch.tensor([[0.5 * dt**2], [dt]], dtype=torch.float64)
    x0, held_out = torch.randn(batch, 2, **kw), torch.randn(batch, 2, **kw)
    with torch.no_grad():
        (expert,) = layer(x0, A_true, B_true)
        (expert_held_out,) = layer(held_out, A_true, B_true)
    saturated = float((expert.abs() > 1 - 1e-6).double().mean())
    print(f"expert plans: {batch} states, horizon {T}; {saturated:.0%} of the forces "
          "at their bound")

    A = torch.nn.Parameter(A_true + 0.1 * torch.randn(2, 2, **kw))
    B = torch.nn.Parameter(B_true + 0.05 * torch.randn(2, 1, **kw))

    def plan_error(states: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        (plan,) = layer(states, A, B)
        return ((plan - target) ** 2).mean()

    def model_error() -> float:
        return float(torch.linalg.norm(torch.cat([A - A_true, B - B_true], dim=1)).detach())

    # The gradient in A[0, 1] against a central difference of re-solves.
    plan_error(x0, expert).backward()
    analytic = float(A.grad[0, 1])
    eps = 1e-6
    with torch.no_grad():
        errors = []
        for sign in (1, -1):
            A[0, 1] += sign * eps
            errors.append(float(plan_error(x0, expert)))
            A[0, 1] -= sign * eps
    central = (errors[0] - errors[1]) / (2 * eps)
    gradient_error = abs(analytic - central) / max(abs(central), 1e-12)
    print(f"d error / d A[0, 1]: layer {analytic:.10f}, central difference {central:.10f} "
          f"(relative difference {gradient_error:.1e})")

    first_model_error = model_error()
    optimizer = torch.optim.Adam([A, B], lr=0.01)
    losses = []
    for step in range(steps):
        optimizer.zero_grad()
        loss = plan_error(x0, expert)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % max(1, steps // 6) == 0 or step == steps - 1:
            print(f"step {step:4d}  plan error {losses[-1]:.3e}")
    with torch.no_grad():
        held_out_error = float(plan_error(held_out, expert_held_out))
    print(f"held-out states: plan error {held_out_error:.3e} (the training states' at the "
          f"start: {losses[0]:.3e}); model error ‖[A B] − [A_true B_true]‖ "
          f"{first_model_error:.2e} → {model_error():.2e}")
    return {"first": losses[0], "last": losses[-1], "held_out": held_out_error,
            "gradient_error": gradient_error, "saturated": saturated}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger sizes")
    main(parser.parse_args().full)
