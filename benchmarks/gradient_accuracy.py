"""How exact are the gradients? Our bordered LU against diffcp's solvers.

On random LPs and QPs, the VJP of every derivative mode at the same solution
is compared with central finite differences of tightly solved, refined
re-solves (directional derivative along a random direction). Relative error
is |⟨g, d⟩ − fd| / |fd|; the table reports the median and the maximum over
instances, plus the median time of one VJP.

Run:  python benchmarks/gradient_accuracy.py [--instances 10]
Writes benchmarks/results/gradient_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
import warnings

import cvxpy as cp
import numpy as np

from conelayers import ConelayersWarning, CvxpyLayer

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIGHT = {"eps": 1e-12, "refine": 5}


def lp(n: int, m: int):
    """min cᵀx s.t. Gx ≤ h, −1 ≤ x ≤ 1 (random data: a unique vertex almost surely).

    The box is written as two linear constraints, which is also what the layer
    makes of ``cp.abs(x) <= 1`` (conelayers/_rewrite.py: CVXPY would add
    auxiliary variables t ≥ |x|, not unique where |x| < 1, which make the cone
    program's derivative singular).
    """
    x = cp.Variable(n)
    c, G, h = cp.Parameter(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(c @ x), [G @ x <= h, x >= -1, x <= 1])

    def sample(rng):
        return [rng.standard_normal(n), rng.standard_normal((m, n)), rng.uniform(0.5, 1.5, m)]

    return f"LP n={n} m={m}", prob, [c, G, h], [x], sample


def qp(n: int, m: int):
    """min ‖Fx − g‖² s.t. Gx ≤ h (the QP becomes a second-order cone)."""
    x = cp.Variable(n)
    F, g = cp.Parameter((n + 5, n)), cp.Parameter(n + 5)
    G, h = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(F @ x - g)), [G @ x <= h])

    def sample(rng):
        return [rng.standard_normal((n + 5, n)), rng.standard_normal(n + 5),
                rng.standard_normal((m, n)), rng.uniform(0.1, 1.0, m)]

    return f"QP n={n} m={m}", prob, [F, g, G, h], [x], sample


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConelayersWarning)
    rows = []
    for name, prob, params, variables, sample in (lp(50, 100), qp(30, 20), lp(10, 20)):
        layer = CvxpyLayer(prob, params, variables)
        rng = np.random.default_rng(0)
        errs: dict[str, list[float]] = {}
        times: dict[str, list[float]] = {}
        for _ in range(args.instances):
            values = sample(rng)
            w = rng.standard_normal(variables[0].shape)
            d = [rng.standard_normal(np.shape(v)) for v in values]
            eps = 1e-6

            def f(vals, w=w, layer=layer):
                return float(np.sum(w * layer(*vals, solver_args=TIGHT)[0]))

            fd = (f([v + eps * e for v, e in zip(values, d, strict=True)]) -
                  f([v - eps * e for v, e in zip(values, d, strict=True)])) / (2 * eps)
            for mode in ("exact", "dense", "lsqr", "lsmr"):
                sol = layer.solve(*values, solver_args={**TIGHT, "mode": mode})
                t0 = time.perf_counter()
                grads = sol.adjoint(w)
                times.setdefault(mode, []).append(time.perf_counter() - t0)
                g = sum(float(np.sum(gi * di)) for gi, di in zip(grads, d, strict=True))
                errs.setdefault(mode, []).append(abs(g - fd) / max(abs(fd), 1e-12))
        for mode in errs:
            row = {"problem": name, "mode": mode, "median_rel_err": statistics.median(errs[mode]),
                   "max_rel_err": max(errs[mode]),
                   "median_ms": 1e3 * statistics.median(times[mode])}
            rows.append(row)
            print(f"{name:16s} {mode:6s} median {row['median_rel_err']:.1e}  "
                  f"max {row['max_rel_err']:.1e}  {row['median_ms']:.2f} ms", flush=True)
    print("\n| problem | mode | median rel. error | max rel. error | ms per VJP |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['problem']} | {r['mode']} | {r['median_rel_err']:.1e} | "
              f"{r['max_rel_err']:.1e} | {r['median_ms']:.2f} |")
    out = ROOT / "benchmarks" / "results" / "gradient_accuracy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"instances": args.instances, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
