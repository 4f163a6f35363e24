"""Bound constraints with and without CVXPY's epigraph variables.

``cp.abs(e) <= r``, ``cp.norm(e, "inf") <= r`` and ``cp.norm(e, 2) <= r`` are
canonicalized by conelayers without the variable t CVXPY adds (t ≥ |e|, t ≤ r),
which is free wherever the bound is inactive and makes the cone program's
derivative singular (conelayers/_rewrite.py). This measures the layer both
ways, side by side in one process (the layer without the rewrite is built with
it switched off), on

* ``mpc``: the controller of examples/mpc.py (horizon 10, |u_t| ≤ 1, about
  45 % of the forces at the bound);
* ``ball``: the projection onto {x : ‖x‖₂ ≤ r} of 50 points in R^20, a third
  of them inside the ball (the bound inactive);
* ``box``: the projection onto {x : ‖x‖∞ ≤ r} of the same points.

It prints a Markdown table of medians (forward and backward per item, NumPy
layer, B = 16) and the largest difference between the two layers' outputs
and gradients.

Run:  python benchmarks/bounds.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cvxpy as cp
import numpy as np

import conelayers._canonicalize as canonicalization
from conelayers import CvxpyLayer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))


def mpc():
    from mpc import controller

    dt = 0.2
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.5 * dt**2], [dt]])
    x0 = np.random.default_rng(0).standard_normal((16, 2))
    return (*controller(10), [x0, A, B])


def projection(norm):
    n = 20
    x, z, r = cp.Variable(n), cp.Parameter(n), cp.Parameter(nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.norm(x, norm) <= r])
    rng = np.random.default_rng(1)
    points = rng.standard_normal((16, n)) * rng.choice([0.1, 1.0, 3.0], (16, 1))
    return problem, [z, r], [x], [points, np.array(2.0 if norm == 2 else 0.8)]


PROBLEMS = {"mpc": mpc, "ball": lambda: projection(2), "box": lambda: projection("inf")}


def layers(name):
    problem, params, variables, values = PROBLEMS[name]()
    rewritten = CvxpyLayer(problem, params, variables)
    kept = canonicalization.without_free_epigraphs
    canonicalization.without_free_epigraphs = lambda p: (p, {})
    try:
        plain = CvxpyLayer(problem, params, variables)
    finally:
        canonicalization.without_free_epigraphs = kept
    return {"without t": rewritten, "CVXPY's (with t)": plain}, values


def step(layer, values):
    start = time.perf_counter()
    solution = layer.solve(*values)
    middle = time.perf_counter()
    grads = solution.adjoint(*[np.ones_like(v) for v in solution.values])
    return middle - start, time.perf_counter() - middle, solution.values, grads


def main(repeats: int = 9) -> list[dict]:
    rows = []
    print("| problem | canonicalization | variables | forward ms/item | backward ms/item |")
    print("|---|---|---|---|---|")
    for name in PROBLEMS:
        both, values = layers(name)
        batch = values[0].shape[0]
        times = {k: [] for k in both}
        results = {}
        for k, layer in both.items():  # warm-up
            results[k] = step(layer, values)[2:]
        for _ in range(repeats):
            for k, layer in both.items():
                forward, backward, _, _ = step(layer, values)
                times[k].append((forward / batch, backward / batch))
        (a_vals, a_grads), (b_vals, b_grads) = results.values()
        diff = max(max(np.abs(u - v).max() for u, v in zip(a_vals, b_vals, strict=True)),
                   max(np.abs(u - v).max() for u, v in zip(a_grads, b_grads, strict=True)))
        for k, layer in both.items():
            forward = statistics.median(t[0] for t in times[k]) * 1e3
            backward = statistics.median(t[1] for t in times[k]) * 1e3
            print(f"| {name} | {k} | {layer.program.n} | {forward:.2f} | {backward:.2f} |")
            rows.append({"problem": name, "canonicalization": k, "n": layer.program.n,
                         "forward_ms": forward, "backward_ms": backward, "max_diff": diff})
        print(f"| {name} | largest difference, outputs and gradients | {diff:.1e} | | |")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    main(parser.parse_args().repeats)
