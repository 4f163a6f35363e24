"""Oracles shared by the tests: CVXPY's own solve, finite differences, dot products."""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from conelayers import CvxpyLayer

# Tight settings for oracle solves (refinement then takes them to rounding level).
TIGHT = {
    "Clarabel": {"eps": 1e-10},
    "ECOS": {"eps": 1e-10},
    "SCS": {"eps": 1e-9, "max_iters": 200_000},
}

# How far our forward pass may be from CVXPY's own Clarabel solve (absolute,
# scaled by the size of the values). CVXPY's interior-point answer is itself
# accurate only to about √gap ≈ 1e-5 in the variables of cone-reformulated
# terms (our refined point is accurate to ~1e-12: see the closed-form tests).
FORWARD_TOL = 2e-5


def cvxpy_solution(case, values):
    """CVXPY's own solve (Clarabel, tight) of the case at ``values``: the outputs."""
    for p, v in zip(case.parameters, values, strict=True):
        p.value = v
    for v in case.problem.variables():
        v.value = None
    kwargs = dict(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    if case.gp:
        case.problem.solve(gp=True, **kwargs)
    else:
        case.problem.solve(**kwargs)
    assert case.problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE), case.problem.status
    return [np.asarray(v.value, dtype=float) for v in case.variables]


def random_direction(case, values, rng):
    """A random tangent for every parameter (symmetric where the parameter is)."""
    dirs = []
    for i, v in enumerate(values):
        d = rng.standard_normal(np.shape(v))
        if i in case.symmetric:
            d = (d + np.swapaxes(d, -1, -2)) / 2
        if case.gp and case.parameters[i].attributes.get("pos"):
            d = d * v  # relative perturbation keeps values positive
        dirs.append(d)
    return dirs


def weighted_sum(outs, weights):
    return sum(float(np.sum(o * w)) for o, w in zip(outs, weights, strict=True))


def central_difference(layer: CvxpyLayer, values, direction, weights, eps, solver_args):
    """(f(θ + εd) − f(θ − εd)) / 2ε for f = Σ ⟨w_k, out_k⟩, by two re-solves."""
    plus = layer(*[v + eps * d for v, d in zip(values, direction, strict=True)],
                 solver_args=solver_args)
    minus = layer(*[v - eps * d for v, d in zip(values, direction, strict=True)],
                  solver_args=solver_args)
    return (weighted_sum(plus, weights) - weighted_sum(minus, weights)) / (2 * eps)


def inner(a, b):
    return sum(float(np.sum(np.asarray(x) * np.asarray(y))) for x, y in zip(a, b, strict=True))


def rel_err(a: float, b: float, floor: float = 1e-8) -> float:
    return abs(a - b) / max(abs(a), abs(b), floor)
