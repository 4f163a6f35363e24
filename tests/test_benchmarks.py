"""The benchmark scripts run (on tiny sizes); their figures live in their output
and the README, never in assertions about time."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_performance_suite_runs_and_writes_json(tmp_path):
    pytest.importorskip("torch")
    import bench

    out = tmp_path / "bench.json"
    rows = bench.main(["--quick", "--no-theirs", "--problems", "sparsemax,qp", "--out", str(out)])
    data = json.loads(out.read_text())
    assert {r["problem"] for r in data["rows"]} == {"sparsemax", "qp"}
    assert {r["library"] for r in rows} == {"conelayers", bench.POOLED}
    assert all(r["solution_err"] < 1e-8 and r["gradient_rel_err"] < 1e-8 for r in rows)
    assert "| sparsemax | 4 |" in bench.table(rows)
    # The solver-alone floor is measured for both solvers on every row.
    assert all(set(r["solver_alone_ms"]) == set(bench.FLOOR_SOLVERS)
               and all(t > 0 for t in r["solver_alone_ms"].values()) for r in rows)


def test_cluster_row_runs(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import cluster

    monkeypatch.setattr(cluster, "ROOT", tmp_path)
    cluster.main(["--batch", "32", "--repeats", "1"])
    rows = json.loads((tmp_path / "results" / "cluster.json").read_text())["rows"]
    assert len(rows) == 3 and all(r["max_diff"] < 1e-10 for r in rows)


def test_bounds_benchmark_runs_and_both_canonicalizations_agree():
    import bounds

    rows = bounds.main(repeats=1)
    assert len(rows) == 2 * len(bounds.PROBLEMS)
    for ours, theirs in zip(rows[::2], rows[1::2], strict=True):
        assert ours["problem"] == theirs["problem"] and ours["n"] < theirs["n"]
        assert ours["max_diff"] < 1e-10


def test_gradient_error_is_absolute_where_the_exact_gradient_is_zero():
    pytest.importorskip("torch")
    import bench
    import numpy as np

    w = [np.ones((2, 3))]
    values = [np.zeros((1, 3))]
    # A locally constant solution: exact gradient at rounding level.
    zero = (values, [np.full((1, 3), 3e-15)])
    assert bench.accuracy(zero, [np.zeros((2, 3))], [np.full((2, 3), 5e-15)], w, items=1) \
        == (0.0, pytest.approx(2e-15), True)
    regular = (values, [np.full((1, 3), 2.0)])
    assert bench.accuracy(regular, [np.zeros((2, 3))], [np.full((2, 3), 2.5)], w, items=1) \
        == (0.0, pytest.approx(0.25), False)
