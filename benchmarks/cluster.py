"""Scale-out row of the performance suite (issue #9): B = 4096 items solved
in-process (threads) against a Dask LocalCluster of 2 worker processes and a
ProcessPoolExecutor of 2 processes, side by side in one run.

Run:  python benchmarks/cluster.py [--batch 4096] [--problem sparsemax]
Writes benchmarks/results/cluster.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import pathlib
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from bench_problems import PROBLEMS  # noqa: E402

import conelayers  # noqa: E402


def measure(layer, values, weights, executor, repeats):
    fwd, bwd = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = layer.solve(*values, executor=executor)
        t1 = time.perf_counter()
        sol.adjoint(*weights)
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return statistics.median(fwd), statistics.median(bwd), sol


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--problem", default="sparsemax")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import distributed

    bp = PROBLEMS[args.problem]()
    rng = np.random.default_rng(0)
    values = bp.sample(rng, args.batch)
    layer = conelayers.CvxpyLayer(bp.problem, bp.parameters, bp.variables, chunk_size=256)
    weights = [rng.standard_normal(o.shape) for o in layer(*[v[:args.batch] for v in values])]
    rows = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client, \
            ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        runs = {"in-process (threads)": None, "Dask LocalCluster, 2 workers":
                client.get_executor(), "ProcessPoolExecutor(2)": pool}
        for executor in runs.values():  # warm-up: start workers, ship the layer
            layer.solve(*[v[:64] for v in values], executor=executor)
        ref = None
        for name, executor in runs.items():
            fwd, bwd, sol = measure(layer, values, weights, executor, args.repeats)
            if ref is None:
                ref = sol
            same = max(float(np.abs(a - b).max()) for a, b in zip(sol.values, ref.values,
                                                                 strict=True))
            rows.append({"engine": name, "B": args.batch, "forward_s": fwd, "backward_s": bwd,
                         "per_item_ms": 1e3 * (fwd + bwd) / args.batch, "max_diff": same})
            print(f"{name:30s} fwd {fwd:7.2f} s  bwd {bwd:6.2f} s  per item "
                  f"{rows[-1]['per_item_ms']:.3f} ms  max diff vs in-process {same:.1e}",
                  flush=True)
    base = rows[0]["per_item_ms"]
    print("\n| engine | B | forward s | backward s | per item ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['B']} | {r['forward_s']:.2f} | {r['backward_s']:.2f} | "
              f"{r['per_item_ms']:.3f} | {base / r['per_item_ms']:.2f}x |")
    out = ROOT / "results" / "cluster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"problem": args.problem, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
