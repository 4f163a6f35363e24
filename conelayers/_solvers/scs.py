"""SCS adapter (first-order; our conventions are SCS's, so data passes as is)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from .._cones import PSD, SOC, ConeLayout, Exp, ExpDual, Nonneg, Zero
from .._errors import Status
from .._typing import CSC, FloatArray
from ._base import AbstractSolver, RawSolution, finite_or_failed

__all__ = ["SCSSolver"]

# SCS's integer status codes (scs/include/glbopts.h).
STATUS_MAP = {
    1: Status.optimal,
    2: Status.optimal_inaccurate,  # refined below: SCS 3 returns 2 only at a limit
    -1: Status.unbounded,
    -6: Status.unbounded_inaccurate,
    -2: Status.infeasible,
    -7: Status.infeasible_inaccurate,
    -3: Status.solver_error,  # indeterminate
    -4: Status.numerical_error,  # failed
    -5: Status.solver_error,  # interrupted
}

_SETTINGS = frozenset({
    "max_iters", "eps_abs", "eps_rel", "eps_infeas", "alpha", "rho_x", "scale",
    "adaptive_scale", "normalize", "time_limit_secs", "verbose", "acceleration_lookback",
    "acceleration_interval", "write_data_filename", "log_csv_filename",
    "linear_solver",
})


class SCSSolver(AbstractSolver):
    name = "SCS"
    required_modules = ("scs",)
    supported_cones = frozenset({Zero, Nonneg, SOC, PSD, Exp, ExpDual})
    native_options = _SETTINGS
    portable_options = MappingProxyType({
        "eps": ("eps_abs", "eps_rel"),
        "max_iters": ("max_iters",),
        "verbose": ("verbose",),
    })
    defaults = MappingProxyType({"verbose": False})
    tight_eps = 1e-9  # first-order: tighter costs iterations by the thousand

    @classmethod
    def refusal(cls, options: Mapping[str, Any]) -> str | None:
        import scipy.sparse as sp
        import scs

        if {"write_data_filename", "log_csv_filename"} & set(options):
            return None  # (a set-up would write the one-row program to the user's file)
        try:  # SCS checks its settings when it sets up, before any iteration
            scs.SCS({"A": sp.csc_matrix([[-1.0]]), "b": np.zeros(1), "c": np.ones(1)},
                    {"l": 1}, **options)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    def prepare(self, layout: ConeLayout, n: int, pattern: Any = None) -> dict[str, Any]:
        return layout.to_scs()

    def solve(
        self, prepared: Any, A: CSC, b: FloatArray, c: FloatArray, options: Mapping[str, Any]
    ) -> RawSolution:
        import scs

        solver = scs.SCS({"A": A, "b": b, "c": c}, dict(prepared), **options)
        result = solver.solve()
        info = result["info"]
        status = STATUS_MAP.get(int(info["status_val"]), Status.solver_error)
        if "reached" in str(info.get("status", "")):
            # SCS 3 says "solved (inaccurate - reached max_iters)", and likewise
            # "unbounded/infeasible (inaccurate - reached ...)" or a bare
            # "(inaccurate - reached ...)": it stopped at its iteration or time limit
            # with its tolerances unmet. Neither the iterate nor a half-made
            # certificate can be trusted; the honest verdict is the limit.
            status = Status.max_iterations
        return finite_or_failed(RawSolution(
            np.asarray(result["x"], dtype=np.float64),
            np.asarray(result["y"], dtype=np.float64),
            np.asarray(result["s"], dtype=np.float64),
            status, int(info.get("iter", 0)), float(info.get("solve_time", 0.0)) / 1e3,
        ))
