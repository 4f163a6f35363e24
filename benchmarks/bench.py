"""Performance suite: conelayers against cvxpylayers, side by side (issue #7).

For each problem and batch size: construction time, forward with gradient
tracking, forward without, backward, per-item cost (forward + backward over
B), peak memory of one forward + backward measured two ways (the growth of
the peak resident set size in a fresh subprocess, which counts what the
solvers and SuperLU allocate in C, and the Python-heap peak by tracemalloc,
which does not), and accuracy: the max error of the solution against a tight reference (our
refined solution at Clarabel eps=1e-12, certified by its optimality residual
~1e-14 and equal to CVXPY's own solve to its ~1e-5) and the relative error of
the gradient against the exact derivative there. Beside them, the solver alone: the
per-item time of the raw solves of the same cone programs (no refinement, no
derivative, one thread), with Clarabel (our default) and with SCS at its defaults
(what cvxpylayers calls through diffcp). It is the floor of any layer built on these
solvers, and bounds the speed-up: theirs / (the faster solve / the cores, at most B), as if
everything but the solve cost nothing and the solves spread perfectly over every
core. Ours also runs with ``executor="processes"`` (its own pool, a worker per
core: Clarabel holds the GIL, so threads cannot spread its solves). Both libraries
run through their PyTorch layers in float64, interleaved in one process; medians over
``--repeats`` runs (fewer where one step takes longer than ``--row-seconds``
allows; the JSON records how many). Construction is the median of 7 interleaved
builds, each on a fresh CVXPY problem (CVXPY caches its canonicalization on the
problem object, so a second layer built on the same object would be timed
without it). The
ratio column is theirs / ours (> 1: we are faster).

Run:  make bench     (or: python benchmarks/bench.py [--problems a,b] [--quick])
Writes benchmarks/results/bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_problems import PROBLEMS  # noqa: E402

import conelayers  # noqa: E402
from conelayers._validate import check_values  # noqa: E402  (the batch's θ, as solve() builds it)
from conelayers.internal import get_solver  # noqa: E402
from conelayers.torch import CvxpyLayer as Ours  # noqa: E402

try:
    from cvxpylayers.torch import CvxpyLayer as Theirs
except ImportError:  # cvxpylayers is a comparison target, not a dependency
    Theirs = None

torch.set_default_dtype(torch.float64)
REFERENCE = {"solve_method": "Clarabel", "eps": 1e-12, "refine": 5}


def timed_step(layer, values, weights):
    """(forward with grad, backward, forward without grad) in seconds, and outputs."""
    params = [torch.tensor(v, requires_grad=True) for v in values]
    t0 = time.perf_counter()
    outs = layer(*params)
    t1 = time.perf_counter()
    loss = sum((o * torch.as_tensor(w)).sum() for o, w in zip(outs, weights, strict=True))
    loss.backward()
    t2 = time.perf_counter()
    with torch.no_grad():
        t3 = time.perf_counter()
        layer(*[p.detach() for p in params])
        t4 = time.perf_counter()
    grads = [p.grad.numpy() for p in params]
    return (t1 - t0, t2 - t1, t4 - t3), [o.detach().numpy() for o in outs], grads


def peak_memory(layer, values, weights) -> float:
    """Peak Python-heap allocation (MB) of one forward + backward."""
    gc.collect()
    tracemalloc.start()
    timed_step(layer, values, weights)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def reference(bp, values, weights, items=8):
    """The tight reference for the first items: solution values and exact VJP."""
    core = conelayers.CvxpyLayer(bp.problem, bp.parameters, bp.variables)
    sol = core.solve(*[v[:items] for v in values], solver_args=REFERENCE)
    # Exact VJP of the first items only: compare per item, parameters batched.
    return sol.values, sol.adjoint(*[w[:items] for w in weights])


FLOOR_SOLVERS = ("Clarabel", "SCS")
POOLED = "conelayers+processes"  # ours with executor="processes"
CONSTRUCT_REPEATS = 7


def solver_alone(bp, values, repeats) -> dict[str, float]:
    """Per-item ms of the raw solves alone, one thread, median over ``repeats``
    passes over the batch: {solver: ms} for ``FLOOR_SOLVERS`` at their defaults,
    each given the program as the layer gives it (Clarabel: squared terms as a
    QP, see conelayers._epigraph; SCS: the cone program, as cvxpylayers does)."""
    core = conelayers.CvxpyLayer(bp.problem, bp.parameters, bp.variables)
    program = core.program
    A_vals, b, c, _ = program.apply(check_values(program.parameters, values).theta)
    B, out = A_vals.shape[0], {}
    for name in FLOOR_SOLVERS:
        solver = get_solver(name)
        prepared = solver.prepare(program.layout, program.n,
                                  (program.A_indices, program.A_indptr))
        options = dict(solver.defaults)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(B):
                solver.solve(prepared, program.matrix(A_vals[i]), b[i], c[i], options)
            times.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(times) / B
    return out


def accuracy(ref, outs, grads, weights, items=8):
    """Max solution error, gradient error and whether that error is absolute.

    The gradient error is relative to the exact gradient's largest entry,
    except where that gradient is zero to rounding (at most 1e-12 of the loss
    weights' scale: a sparsemax item with one nonzero entry is locally
    constant, its exact gradient ~3e-15): there a relative error compares
    rounding with rounding, so the absolute error is reported (flagged).
    """
    values, exact = ref
    sol_err = max(float(np.abs(o[:items] - r).max()) for o, r in zip(outs, values,
                                                                    strict=True))
    num = max(float(np.abs(g[:items] - e).max()) for g, e in zip(grads, exact, strict=True))
    den = max(float(np.abs(e).max()) for e in exact)
    scale = max(float(np.abs(w[:items]).max()) for w in weights)
    if den <= 1e-12 * scale:
        return sol_err, num, True
    return sol_err, num / den, False


def _rss_child(spec: str) -> None:
    """In a fresh process: peak RSS growth (MB) of one forward + backward at B:
    the peak resident set during the step (VmHWM, reset just before) less the
    resident set before it.

    The layer is built and run once at B = 1 first (imports, solver set-up,
    lazily built structures), so the figure is what the batch itself adds.
    """
    name, lib, B = spec.split(",")
    warnings.simplefilter("ignore")
    bp = PROBLEMS[name]()
    cls = Ours if lib == "conelayers" else Theirs
    layer = cls(bp.problem, bp.parameters, bp.variables)
    rng = np.random.default_rng(int(B))
    timed_step(layer, bp.sample(rng, 1), [np.ones((1, *v.shape)) for v in bp.variables])
    values = bp.sample(rng, int(B))
    weights = [np.ones((int(B), *v.shape)) for v in bp.variables]
    gc.collect()
    before = _status_kb("VmRSS")
    try:  # reset the peak (VmHWM) to the current RSS (Linux >= 4.0)
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        peak = lambda: _status_kb("VmHWM")  # noqa: E731
    except OSError:  # lifetime peak only: the growth is a lower bound
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    timed_step(layer, values, weights)
    print(json.dumps({"rss_mb": max(0, peak() - before) / 1024}))


def _status_kb(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def peak_rss(name: str, lib: str, B: int) -> float:
    """Peak resident-set growth (MB) of one forward + backward, in a subprocess."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", f"{name},{lib},{B}"],
                         capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        return float(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"])
    except (ValueError, IndexError, KeyError):
        print(f"{name} B={B}: {lib} RSS measurement failed: {out.stderr[-500:]}",
              file=sys.stderr)
        return float("nan")


def run(args) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    names = args.problems.split(",") if args.problems else list(PROBLEMS)
    for name in names:
        bp = PROBLEMS[name]()
        libs = {"conelayers": Ours}
        if not args.no_processes:  # ours on the layer's own process pool
            libs[POOLED] = lambda *a: Ours(*a, executor="processes")
        if Theirs is not None and not args.no_theirs:
            libs["cvxpylayers"] = Theirs
        layers, construct = {}, {}
        builds: dict[str, list[float] | None] = {lib: [] for lib in libs}  # None: failed
        # Construction: the median of CONSTRUCT_REPEATS interleaved builds, each on a
        # fresh problem (a single build was up to 2 ms off either way, on 5–15 ms).
        for _ in range(1 if args.quick else CONSTRUCT_REPEATS):
            for lib, cls in libs.items():
                if builds[lib] is None:
                    continue
                fresh = PROBLEMS[name]()  # CVXPY caches canonicalization on the problem
                t0 = time.perf_counter()
                try:
                    layers[lib] = cls(fresh.problem, fresh.parameters, fresh.variables)
                except Exception as exc:
                    print(f"{name}: {lib} cannot build this layer: {exc}", file=sys.stderr)
                    builds[lib] = None
                    continue
                builds[lib].append(time.perf_counter() - t0)
        construct = {lib: statistics.median(t) for lib, t in builds.items() if t}
        batches = (1, 4) if args.quick else bp.batches
        if args.batches:  # a subset of the problem's own batch sizes
            batches = tuple(B for B in batches if B in args.batches)
        for B in batches:
            values = bp.sample(rng, B)
            outs_shape = [layers["conelayers"](*values)[k].shape for k in range(len(bp.variables))]
            weights = [rng.standard_normal(s) for s in outs_shape]
            samples: dict[str, list] = {lib: [] for lib in layers}
            results: dict[str, tuple] = {}
            warm = 0.0
            for layer in layers.values():  # warm-up
                t0 = time.perf_counter()
                timed_step(layer, values, weights)
                warm += time.perf_counter() - t0
            # Medians over --repeats interleaved runs, fewer where one round of
            # steps would not fit --row-seconds (large B on large problems).
            repeats = 1 if args.quick else max(1, min(args.repeats,
                                                      int(args.row_seconds / max(warm, 1e-9))))
            ref = reference(bp, values, weights)
            alone = solver_alone(bp, values, repeats)
            for _ in range(repeats):  # interleaved
                for lib, layer in layers.items():
                    try:
                        times, outs, grads = timed_step(layer, values, weights)
                    except Exception as exc:
                        print(f"{name} B={B}: {lib} failed: {exc}", file=sys.stderr)
                        samples[lib] = None
                        continue
                    if samples[lib] is not None:
                        samples[lib].append(times)
                        results[lib] = (outs, grads)
            for lib, layer in layers.items():
                if not samples.get(lib):
                    continue
                fwd, bwd, nograd = (statistics.median(t[k] for t in samples[lib])
                                    for k in range(3))
                outs, grads = results[lib]
                sol_err, grad_err, zero_gradient = accuracy(ref, outs, grads, weights)
                row = {"problem": name, "B": B, "library": lib,
                       "construct_ms": 1e3 * construct[lib], "forward_ms": 1e3 * fwd,
                       "forward_nograd_ms": 1e3 * nograd, "backward_ms": 1e3 * bwd,
                       "per_item_ms": 1e3 * (fwd + bwd) / B,
                       "peak_mb": peak_memory(layer, values, weights),
                       # (the pooled variant's memory is in its workers: not measured)
                       "rss_mb": float("nan") if args.no_rss or lib == POOLED
                       else peak_rss(name, lib, B),
                       "repeats": repeats, "solution_err": sol_err,
                       "solver_alone_ms": alone, "cpus": os.cpu_count(),
                       "gradient_rel_err": grad_err,  # absolute where zero_gradient
                       "zero_gradient": zero_gradient}
                rows.append(row)
                print(f"{name:10s} B={B:5d} {lib:12s} fwd {row['forward_ms']:9.1f} ms  "
                      f"bwd {row['backward_ms']:8.1f} ms  per item {row['per_item_ms']:6.2f} ms"
                      f"  RSS {row['rss_mb']:7.1f} MB  sol err {sol_err:.0e}"
                      f"  grad err {grad_err:.0e}"
                      f"  (x{repeats})", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    by_key = {(r["problem"], r["B"], r["library"]): r for r in rows}
    lines = ["| problem | B | construct ms (ours / theirs) | fwd+bwd per item ms (ours / "
             "theirs) | speed-up | fwd no-grad ms | backward / forward (ours) | "
             "peak RSS MB (ours / theirs) | tracemalloc MB (ours / theirs) | "
             "solution error (ours / theirs) | gradient rel. error (ours / theirs) | "
             "solver alone ms (Clarabel / SCS) | speed-up bound | "
             "per item ms, executor=\"processes\" (speed-up) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (problem, B, lib), ours in by_key.items():
        if lib != "conelayers":
            continue
        th = by_key.get((problem, B, "cvxpylayers"))

        def pair(key, fmt, ours=ours, th=th):
            return f"{ours[key]:{fmt}} / " + (f"{th[key]:{fmt}}" if th else "–")

        # (where the exact gradient is zero, the errors are absolute: marked)
        grad_cell = ("abs. " if ours.get("zero_gradient") else "") + pair("gradient_rel_err",
                                                                          ".0e")

        ratio = f"{th['per_item_ms'] / ours['per_item_ms']:.1f}x" if th else "–"
        alone = ours.get("solver_alone_ms") or {}
        floor = " / ".join(f"{alone[k]:.2f}" for k in FLOOR_SOLVERS if k in alone) or "–"
        pooled = by_key.get((problem, B, POOLED))
        pool_cell = "–" if pooled is None else f"{pooled['per_item_ms']:.2f}" + (
            f" ({th['per_item_ms'] / pooled['per_item_ms']:.1f}x)" if th else "")
        cores = min(ours["cpus"] or 1, B)  # one item runs on one core
        bound = (f"{th['per_item_ms'] * cores / min(alone.values()):.1f}x"
                 if th and alone else "–")
        lines.append(
            f"| {problem} | {B} | {pair('construct_ms', '.0f')} | {pair('per_item_ms', '.2f')} "
            f"| {ratio} | {pair('forward_nograd_ms', '.1f')} | "
            f"{ours['backward_ms'] / ours['forward_ms']:.2f} | {pair('rss_mb', '.1f')} | "
            f"{pair('peak_mb', '.1f')} | "
            f"{pair('solution_err', '.0e')} | {grad_cell} | "
            f"{floor} | {bound} | {pool_cell} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="", help="comma-separated subset")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (used by the tests)")
    parser.add_argument("--batches", type=lambda t: {int(b) for b in t.split(",")}, default=None,
                        help="comma-separated subset of the batch sizes, e.g. 1,128")
    parser.add_argument("--no-theirs", action="store_true", help="skip cvxpylayers")
    parser.add_argument("--no-processes", action="store_true",
                        help='skip ours with executor="processes"')
    parser.add_argument("--row-seconds", type=float, default=120.0,
                        help="time budget per (problem, B) for the repeated runs")
    parser.add_argument("--no-rss", action="store_true",
                        help="skip the peak-RSS subprocesses (tracemalloc only)")
    parser.add_argument("--rss-child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rss-fill", default="",
                        help="re-measure peak RSS for the rows of a written JSON and reprint")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench.json"))
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    if args.rss_child:
        _rss_child(args.rss_child)
        return []
    if args.rss_fill:
        path = pathlib.Path(args.rss_fill)
        data = json.loads(path.read_text())
        for r in data["rows"]:
            if not args.problems or r["problem"] in args.problems.split(","):
                r["rss_mb"] = peak_rss(r["problem"], r["library"], r["B"])
        path.write_text(json.dumps(data, indent=1))
        print(table(data["rows"]))
        return data["rows"]
    rows = run(args)
    print()
    print(table(rows))
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "command": " ".join(["python benchmarks/bench.py", *(argv or sys.argv[1:])])}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
