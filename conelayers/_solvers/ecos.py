"""ECOS adapter (interior point; no PSD cones; its own exponential-cone order)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._cones import SOC, ConeLayout, Exp, Nonneg, Zero
from .._errors import Status
from .._typing import CSC, FloatArray
from ._base import AbstractSolver, RawSolution, finite_or_failed

__all__ = ["ECOSSolver"]

STATUS_MAP = {
    0: Status.optimal,
    1: Status.infeasible,
    2: Status.unbounded,
    10: Status.optimal_inaccurate,
    11: Status.infeasible_inaccurate,
    12: Status.unbounded_inaccurate,
    -1: Status.max_iterations,
    -2: Status.numerical_error,  # search direction unreliable
    -3: Status.numerical_error,  # numerical problems (outside cone)
    -4: Status.solver_error,  # interrupted
    -7: Status.solver_error,
}

_SETTINGS = frozenset({
    "feastol", "abstol", "reltol", "feastol_inacc", "abstol_inacc", "reltol_inacc",
    "max_iters", "nitref", "verbose",
})


class ECOSSolver(AbstractSolver):
    name = "ECOS"
    required_modules = ("ecos",)
    supported_cones = frozenset({Zero, Nonneg, SOC, Exp})
    native_options = _SETTINGS
    portable_options = MappingProxyType({
        "eps": ("feastol", "abstol", "reltol"),
        "max_iters": ("max_iters",),
        "verbose": ("verbose",),
    })
    defaults = MappingProxyType({"verbose": False})

    @classmethod
    def refusal(cls, options: Mapping[str, Any]) -> str | None:
        import ecos

        try:  # ECOS has no set-up of its own: a one-row solve (~60 µs)
            ecos.solve(np.ones(1), sp.csc_matrix([[-1.0]]), np.zeros(1),
                       {"l": 1, "q": [], "e": 0}, **options)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    def prepare(self, layout: ConeLayout, n: int, pattern: Any = None) -> dict[str, Any]:
        zero = layout.count(Zero)
        # ECOS orders each exponential cone (x, z, y) where we (and SCS) use
        # (x, y, z): swap the last two rows of every cone. The swap is its own inverse.
        perm = np.arange(layout.dim)
        for offset, cone in layout.of_type(Exp):
            starts = offset + 3 * np.arange(cone.count)
            perm[starts + 1], perm[starts + 2] = starts + 2, starts + 1
        dims = {
            "l": layout.count(Nonneg),
            "q": [c.dim for _, c in layout.of_type(SOC)],
            "e": layout.count(Exp) // 3,
        }
        return {"zero": zero, "perm": perm, "dims": dims}

    def solve(
        self, prepared: Any, A: CSC, b: FloatArray, c: FloatArray, options: Mapping[str, Any]
    ) -> RawSolution:
        import ecos

        zero, perm, dims = prepared["zero"], prepared["perm"], prepared["dims"]
        rows = perm[zero:]
        G = sp.csc_matrix(A[rows]) if rows.size else None
        h = b[rows] if rows.size else None
        Aeq = sp.csc_matrix(A[:zero]) if zero else None
        beq = b[:zero] if zero else None
        sol = ecos.solve(c, G, h, dims, Aeq, beq, **options)
        info = sol["info"]
        y = np.empty(A.shape[0])
        y[:zero] = sol["y"]
        y[rows] = sol["z"]
        x = np.asarray(sol["x"], dtype=np.float64)
        s = b - A @ x
        status = STATUS_MAP.get(int(info["exitFlag"]), Status.solver_error)
        return finite_or_failed(RawSolution(x, y, s, status, int(info["iter"]),
                                            float(info["timing"]["tsolve"])))
