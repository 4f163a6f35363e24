"""Which solver should be the default? Accuracy first, then speed.

For every problem of the test zoo and every solver that supports it, solve a
batch of random instances and report, side by side in one run:

* raw accuracy: max error of the outputs against a tight reference (the
  closed form where the zoo has one, else Clarabel at eps=1e-12 refined to
  rounding level), before our Newton refinement (``refine=0``);
* the same after refinement (the default, ``refine=3``);
* median time per item for the forward pass, both ways;
* how many items each solver failed.

Run:  make bench-solvers   (or: python benchmarks/choose_solver.py [--batch 32])
Writes benchmarks/results/choose_solver.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the problem zoo is shared with the tests

from problems import CASES  # noqa: E402

from conelayers import ConelayersWarning, CvxpyLayer  # noqa: E402


def reference(case, layer, values):
    if case.closed_form is not None:
        closed = case.closed_form(values)
        if all(c is not None for c in closed):
            return closed
    sol = layer.solve(*values, solver_args={"solve_method": "Clarabel", "eps": 1e-12,
                                            "refine": 5})
    return list(sol.values)


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConelayersWarning)

    rows = []
    for name, make in CASES.items():
        case = make()
        rng = np.random.default_rng(0)
        items = [case.sample(rng) for _ in range(args.batch)]
        for solver in case.solvers:
            layer = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp,
                               solver=solver, throw=False)
            refs = [reference(case, layer, v) for v in items]
            row = {"problem": name, "solver": solver}
            for refine in (0, 3):
                errs, fails = [], 0
                def run_all(refine=refine, layer=layer, items=items):
                    return [layer.solve(*v, solver_args={"refine": refine}) for v in items]
                t, sols = timed(run_all, args.repeats)
                for sol, ref in zip(sols, refs, strict=True):
                    if not sol.ok.all():
                        fails += 1
                        continue
                    errs.append(max(float(np.abs(np.reshape(o, -1) - np.reshape(r, -1)).max())
                                    for o, r in zip(sol.values, ref, strict=True)))
                row[f"err_refine{refine}"] = max(errs) if errs else float("nan")
                row[f"ms_refine{refine}"] = 1e3 * t / len(items)
                row[f"failed_refine{refine}"] = fails
            rows.append(row)
            print(f"{name:18s} {solver:9s} err {row['err_refine0']:.1e} -> "
                  f"{row['err_refine3']:.1e}  ms/item {row['ms_refine0']:.2f} -> "
                  f"{row['ms_refine3']:.2f}  failed {row['failed_refine0']}", flush=True)

    print("\n| problem | solver | max error, raw | max error, refined | ms/item raw | "
          "ms/item refined | failed |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['problem']} | {r['solver']} | {r['err_refine0']:.1e} | "
              f"{r['err_refine3']:.1e} | {r['ms_refine0']:.2f} | {r['ms_refine3']:.2f} | "
              f"{r['failed_refine0']} |")
    out = ROOT / "benchmarks" / "results" / "choose_solver.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"batch": args.batch, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
