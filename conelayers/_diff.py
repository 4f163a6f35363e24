"""Derivative and adjoint of a cone program's solution, one item or a group.

Notation as in :mod:`conelayers._linearization`: z = (u, v, w) = (x, y − s, 1),
Π(z) = (x, y, 1), D = DΠ_{K*}(v), the skew Q of the data and M = DN(z).
Differentiating N = 0 gives M dz = −dQ Π(z). The solution tangent follows from

    dx = du − x dw,   dy = D dv − y dw,   ds = D dv − dv − s dw.

Forward mode (derivative):  (dA, db, dc) → g = dQ Π(z) → solve M dz = g
                            → (dx, dy, ds) from −dz (as diffcp does).
Reverse mode (adjoint):     (dx, dy, ds) → h = [dx; Dᵀ(dy + ds) − ds; −(xᵀdx + yᵀdy + sᵀds)]
                            → solve Mᵀ r = h → dA_ij = Π_x,j r_y,i − Π_y,i r_x,j,
                              db = Π_y r_w − r_y,  dc = Π_x r_w − r_x.

Both right-hand sides are compatible with the singular M (Π(z)ᵀ g = 0
because dQ is skew; zᵀ h = 0 by construction), and both are solved through
the bordered K with the point's one LU (:meth:`Linearization.solve`). Where K
is singular or ill-conditioned, the minimum-norm least-squares solution is
used, and a DerivativeWarning is given unless the requested outputs are
provably unaffected (see ``_outputs_determined``).

diffcp's own solvers of the derivative equations (``lsqr``, ``lsmr``,
``dense``) stay selectable as ``mode``; they share everything but the solve.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ._batched import segment_sums, stack_rows
from ._cones import PSD, SOC, ConeLayout, Nonneg, svec_indices
from ._errors import ParameterError
from ._linearization import _WARN_RTOL, Linearization, Structure, _warn
from ._typing import CSC, FloatArray

__all__ = ["DerivativeMode", "ItemDerivative", "jvp_many", "vjp_many"]


class DerivativeMode(enum.Enum):
    """How the linear system of the derivative is solved."""

    exact = "exact"  # sparse LU of the bordered system (default)
    lsqr = "lsqr"  # diffcp: LSQR on M, capped at 2N iterations
    lsmr = "lsmr"  # diffcp: SciPy LSMR on M
    dense = "dense"  # diffcp: dense normal equations

    @classmethod
    def parse(cls, value: object, what: str = "`mode`") -> DerivativeMode:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            accepted = ", ".join(repr(m.value) for m in cls)
            raise ParameterError(
                f"{what} must be one of {accepted}; got {value!r}. 'exact' (the default) "
                "solves the derivative equations exactly; the others are diffcp's "
                "least-squares solvers."
            ) from None


@dataclass(eq=False)
class ItemDerivative:
    """The derivative of the solution map at one solved item.

    Build with :meth:`at` (optionally from the :class:`Linearization` that
    refinement left behind); then :func:`jvp_many` and :func:`vjp_many` (one
    item or a group) may use it any number of times: the factorization is
    computed once and kept (callers drop a ``heavy`` one after use, see
    ``_KEEP_BYTES``).
    """

    x: FloatArray
    y: FloatArray
    s: FloatArray
    pi: FloatArray
    D_vals: FloatArray  # values of DΠ_{K*} on structure.dproj's pattern
    solve: Callable[[FloatArray], FloatArray]  # dz with M dz = g
    solve_t: Callable[[FloatArray], FloatArray]  # r with Mᵀ r = h
    heavy: bool = False  # its factorization is above _KEEP_BYTES: not worth keeping

    @classmethod
    def at(
        cls, structure: Structure, A: CSC, b: FloatArray, c: FloatArray, x: FloatArray,
        y: FloatArray, s: FloatArray, mode: DerivativeMode = DerivativeMode.exact,
        index: int = 0, linearization: Linearization | None = None,
        outputs: Callable[[FloatArray], FloatArray] | None = None,
        parameters: Callable[[FloatArray, FloatArray, FloatArray], FloatArray] | None = None,
    ) -> ItemDerivative:
        """The derivative at (x, y, s).

        Where K is singular, ``outputs`` (solution tangents, rows of [dx, dy] →
        output tangents) and ``parameters`` ((dA, db, dc) → dθ, the adjoint of
        the parameter map, on rows: (k, nnz), (k, m), (k, n) → (k, p)) decide
        whether the requested outputs still have a derivative along every
        parameter direction; a warning is given if not.
        """
        lin = linearization or Linearization.at(structure, A, b, c, x, y - s, index)
        if mode is DerivativeMode.exact:
            lin.factor()
            if not lin.regular and not _outputs_determined(lin, outputs, parameters):
                _warn(
                    f"the derivative at batch item {index} does not exist for the requested "
                    f"outputs (condition number of the derivative system ≈ "
                    f"{lin.condition:.1e}): the solution is not unique or not strictly "
                    "complementary there (e.g. a constraint active with a zero multiplier), "
                    "or the problem is too ill-conditioned for its derivative in double "
                    "precision (badly scaled data; a quadratic objective whose matrix has a "
                    "condition number of 1e7 or more). A minimum-norm least-squares "
                    "derivative is used instead; treat this item's gradient with care."
                )
            else:  # (also where K is singular but the outputs have a derivative: a
                # redundant equality left a kink unreported, found by a probe)
                _warn_kinks(structure, lin, index)
            solve = lin.solve
            solve_t = lambda h: lin.solve(h, transpose=True)  # noqa: E731
        else:
            # diffcp's modes: no LU of K, so no test of whether the derivative
            # exists; the kinks' test needs none, and each solve is checked by
            # its residual (LSQR and LSMR stop at an iteration cap or at a
            # tolerance relative to ‖M‖‖z‖; both gave silently wrong gradients,
            # found by a probe).
            _warn_kinks(structure, lin, index)
            solve, solve_t = _diffcp_solvers(A, b, c, x, y, s, structure.layout, mode, index)
        return cls(lin.x, lin.y, lin.s, lin.pi, lin.D_vals, solve, solve_t,
                   heavy=mode is DerivativeMode.exact and lin.heavy)


def _warn_kinks(structure: Structure, lin: Linearization, index: int) -> None:
    """The warning for a solution that is not strictly complementary, if it is not."""
    rows = _not_strictly_complementary(structure, lin.y, lin.s, lin.relative_residual)
    if rows.size:
        _warn(
            f"the derivative at batch item {index} may not exist: the solution "
            f"is not strictly complementary ({_rows_text(rows)} of the cone "
            "program: a constraint active with a zero multiplier, e.g. min(c, h) "
            "at c = h, sparsemax at an entry on its support's boundary), where the "
            "solution map has a kink. One element of its generalized Jacobian "
            "is used; treat this item's gradient with care."
        )


def vjp_many(structure: Structure, derivs: list[ItemDerivative], dx: FloatArray,
             dy: FloatArray, ds: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The adjoint at one or several solved items of one program:
    ``(dx, dy, ds) → (dA on A's pattern, db, dc)``, one row per item (item k
    is ``derivs[k]``). The products with the projection's Jacobian and the
    formulas for (dA, db, dc) run once for all rows; the linear solve with Mᵀ
    item by item (each with its own checks and degenerate paths)."""
    rows, cols, n = structure.a_rows, structure.a_cols, derivs[0].x.size
    stack = lambda f: stack_rows(derivs, f)  # noqa: E731
    X, Y, S, P = stack("x"), stack("y"), stack("s"), stack("pi")
    dw = -((X * dx).sum(axis=1) + (Y * dy).sum(axis=1) + (S * ds).sum(axis=1))
    H = np.concatenate([dx, structure.dproj.rmatvec_many(stack("D_vals"), dy + ds) - ds,
                        dw[:, None]], axis=1)
    R = np.zeros_like(H)
    for k, d in enumerate(derivs):
        if np.any(H[k]):
            R[k] = d.solve_t(H[k])
    rx, ry, rw = R[:, :n], R[:, n:-1], R[:, -1:]
    px, py = P[:, :n], P[:, n:-1]
    take = lambda a, idx: np.take(a, idx, axis=1)  # noqa: E731  (a[:, idx] is 3x slower)
    dA = take(px, cols) * take(ry, rows) - take(py, rows) * take(rx, cols)
    return dA, py * rw - ry, px * rw - rx


def jvp_many(structure: Structure, derivs: list[ItemDerivative], dA: FloatArray,
             db: FloatArray, dc: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The derivative at one or several solved items of one program:
    ``(dA on A's pattern, db, dc) → (dx, dy, ds)``, one row per item, batched
    as :func:`vjp_many` is."""
    rows, cols = structure.a_rows, structure.a_cols
    n, m = derivs[0].x.size, derivs[0].y.size
    stack = lambda f: stack_rows(derivs, f)  # noqa: E731
    X, Y, S, P = stack("x"), stack("y"), stack("s"), stack("pi")
    px, py = P[:, :n], P[:, n:-1]
    G = np.concatenate([segment_sums(dA * np.take(py, rows, axis=1), cols, n) + dc,
                        db - segment_sums(dA * np.take(px, cols, axis=1), rows, m),
                        (-(dc * px).sum(axis=1) - (db * py).sum(axis=1))[:, None]], axis=1)
    Z = np.zeros_like(G)
    for k, d in enumerate(derivs):
        if np.any(G[k]):
            Z[k] = d.solve(G[k])
    du, dv, dw = Z[:, :n], Z[:, n:-1], Z[:, -1:]
    Ddv = structure.dproj.matvec_many(stack("D_vals"), dv)
    return -(du - X * dw), -(Ddv - Y * dw), -(Ddv - dv - S * dw)


# Strict complementarity fails where y + s is on the boundary of the cone: a
# nonnegative row with both y and s zero, a second-order cone block whose y + s
# is on its boundary. Judged relative to the item's largest |y + s|, to a
# margin that follows the point's accuracy: 100 times its relative residual,
# between these bounds. An interior-point answer (residual ~1e-9) keeps y + s
# in the interior by ~√μ; at a refined point (~1e-15) the kinks of the suite
# sit at 1e-22 to 3e-14 of scale, while a multiplier 1e-11 of the largest
# (min cᵀx s.t. x ≥ l, c = (1e-3, 1e8), strictly complementary) was flagged
# by the fixed margin of 1e-10 (found by a probe).
_COMPLEMENTARITY_MARGIN = (1e-12, 1e-10)


def _not_strictly_complementary(structure: Structure, y: FloatArray, s: FloatArray,
                                relative_residual: float) -> np.ndarray:
    """First rows of the Nonneg entries, SOC and PSD blocks where y + s is on
    the cone's boundary (both zero, for a Nonneg row): there the projection is
    not differentiable, and K's regularity says nothing about the solution map's."""
    total = y + s
    low, high = _COMPLEMENTARITY_MARGIN
    scaled = 100.0 * relative_residual
    margin = min(high, max(low, scaled)) if np.isfinite(scaled) else high
    tol = margin * (1.0 + float(np.abs(total).max(initial=0.0)))
    nonneg, heads, tails, owner, psd = _complementarity_rows(structure.layout)
    bad = [nonneg[total[nonneg] <= tol]]
    if heads.size:  # (~5 µs per item on sparsemax's layout, one SOC and 51 rows)
        tail_norms = np.sqrt(np.bincount(owner, total[tails] ** 2, minlength=heads.size))
        bad.append(heads[total[heads] - tail_norms <= tol])
    # A PSD block: Y + S singular (rank Y + rank S below the order; a probe
    # found the projection onto the PSD cone of a matrix with a zero
    # eigenvalue unreported).
    for offset, order, rows, cols, scale in psd:
        # λ_min(Y + S) ≤ tol exactly where Y + S − tol·I has no Cholesky factor
        # (which reads the lower triangle only: svec's entries; ~4 µs at order 6,
        # where unsvec and eigvalsh took ~22).
        lower = np.zeros((order, order))
        lower[rows, cols] = total[offset:offset + rows.size] * scale
        lower[np.diag_indices(order)] -= tol
        try:
            np.linalg.cholesky(lower)
        except np.linalg.LinAlgError:
            bad.append(np.array([offset]))
    rows = np.concatenate(bad)
    return np.sort(rows) if len(bad) > 1 else rows


@functools.lru_cache(maxsize=64)
def _complementarity_rows(layout: ConeLayout) -> tuple[Any, ...]:
    """The layout's Nonneg rows, SOC heads, SOC tail rows and each tail row's
    cone (an index into the heads): one set of NumPy calls per item, however
    many cones (a Python loop over them cost ~3 µs a cone); and its PSD blocks
    (offset, order, and the rows, columns and scales of its svec entries)."""
    nonneg = [np.arange(o, o + c.dim) for o, c in layout.of_type(Nonneg)]
    socs = layout.of_type(SOC)
    heads = np.array([o for o, _ in socs], dtype=np.intp)
    tails = [np.arange(o + 1, o + c.dim) for o, c in socs]
    owner = [np.full(c.dim - 1, k) for k, (_, c) in enumerate(socs)]
    cat = lambda parts: np.concatenate(parts).astype(np.intp) if parts else (  # noqa: E731
        np.zeros(0, dtype=np.intp))
    psd = []
    for o, c in layout.of_type(PSD):
        rows, cols = svec_indices(c.order)  # type: ignore[attr-defined]
        psd.append((o, c.order, rows, cols, np.where(rows == cols, 1.0, np.sqrt(0.5))))  # type: ignore[attr-defined]
    return cat(nonneg), heads, cat(tails), cat(owner), tuple(psd)


def _rows_text(rows: np.ndarray, most: int = 6) -> str:
    shown = ", ".join(str(r) for r in rows[:most])
    more = f" and {rows.size - most} more" if rows.size > most else ""
    return f"row{'s' if rows.size > 1 else ''} {shown}{more}"


def _outputs_determined(
    lin: Linearization,
    outputs: Callable[[FloatArray], FloatArray] | None,
    parameters: Callable[[FloatArray, FloatArray, FloatArray], FloatArray] | None,
) -> bool:
    """Whether the requested outputs have a derivative although K is singular.

    Two things can go wrong at a singular K. (1) The solution tangent is not
    unique: K has null directions; harmless if none of them moves an output.
    (2) The equations have no solution for some perturbations: a left null
    vector r of K with rᵀ(dQ Π(z)) ≠ 0 for some parameter direction; harmless
    if rᵀ(dQ Π(z)) vanishes for every dθ, i.e. if the parameter-space image
    of r (the adjoint formulas applied to r, then Cᵀ) is zero.

    Both are harmless, for instance, for the epigraph variable t of an
    inactive ``norm(x) <= r``, free in [‖x‖, r]: it moves no output and no
    parameter reaches its equation. Then the minimum-norm derivative is the
    outputs' derivative and no warning is due. Two identical active bounds
    x ≤ h₁, x ≤ h₂ fail (2): x = min(h₁, h₂) has a kink there.
    """
    if outputs is None or parameters is None:
        return False
    null = lin.null_directions()
    left = lin.left_null()
    if null is None or left is None:
        return False
    # Nothing finer than the point's own accuracy can be resolved (an unrefined
    # interior-point answer is ~1e-6 off; a refined one ~1e-15).
    tol = max(1e-8, 100.0 * lin.accuracy)
    if null.shape[0]:
        moved = outputs(null)
        if np.abs(moved).max(initial=0.0) > tol * (1.0 + float(np.abs(null).max())):
            return False
    n = lin.x.size
    rows, cols = lin.structure.a_rows, lin.structure.a_cols
    px, py = lin.pi[:n], lin.pi[n:-1]
    if not left.shape[0]:
        return True
    # All left null vectors at once (rows), one call of the parameter adjoint:
    # one call per vector was 0.35 ms each on nnls_l1 (12 vectors per item).
    rx, ry, rw = left[:, :n], left[:, n:-1], left[:, -1:]
    dA = px[cols] * np.take(ry, rows, axis=1) - py[rows] * np.take(rx, cols, axis=1)
    dtheta = np.asarray(parameters(dA, py * rw - ry, px * rw - rx))
    limit = tol * (1.0 + np.abs(left).max(axis=1))
    return bool(np.all(np.abs(dtheta).max(axis=1, initial=0.0) <= limit))


def _diffcp_solvers(A, b, c, x, y, s, layout, mode, index=0):
    """diffcp's solvers of M dz = g and Mᵀ r = h (its operators, its settings),
    each checked by its residual (:func:`_checked`)."""
    import diffcp._diffcp as _diffcp
    import diffcp.cones as cone_lib

    cones = cone_lib.parse_cone_dict_cpp(cone_lib.parse_cone_dict(layout.to_scs()))
    m, n = A.shape
    Q = sp.bmat(
        [[None, A.T, c[:, None]], [-A, None, b[:, None]], [-c[None, :], -b[None, :], None]],
        format="csc",
    )
    u, v, w = x, y - s, 1.0
    if mode is DerivativeMode.dense:
        Mdense = _diffcp.M_dense(Q.toarray(), cones, u, v, w)
        MT = Mdense.T
        return (_checked(lambda g: _diffcp._solve_derivative_dense(Mdense, MT, g),
                         Mdense.__matmul__, mode, index),
                _checked(lambda h: _diffcp._solve_adjoint_derivative_dense(Mdense, MT, h),
                         MT.__matmul__, mode, index))
    M = _diffcp.M_operator(sp.csc_matrix(Q), cones, u, v, w)
    MT = M.transpose()
    if mode is DerivativeMode.lsqr:
        return (_checked(lambda g: _diffcp.lsqr(M, g).solution, M.matvec, mode, index),
                _checked(lambda h: _diffcp.lsqr(MT, h).solution, MT.matvec, mode, index))
    shape = (n + m + 1, n + m + 1)
    Mop = spla.LinearOperator(shape, matvec=M.matvec, rmatvec=M.rmatvec, dtype=np.float64)
    MTop = spla.LinearOperator(shape, matvec=MT.matvec, rmatvec=MT.rmatvec, dtype=np.float64)
    return (
        _checked(lambda g: spla.lsmr(Mop, g, maxiter=10 * shape[0], atol=1e-12, btol=1e-12)[0],
                 M.matvec, mode, index),
        _checked(lambda h: spla.lsmr(MTop, h, maxiter=10 * shape[0], atol=1e-10, btol=1e-10)[0],
                 MT.matvec, mode, index),
    )


def _checked(solve: Callable[[FloatArray], FloatArray], matvec: Callable,
             mode: DerivativeMode, index: int) -> Callable[[FloatArray], FloatArray]:
    """``solve`` (of M d = g, by least squares), warning where ‖M d − g‖ is above
    ``_WARN_RTOL`` of ‖g‖, as for the exact mode's solves. (The systems are
    consistent wherever the derivative exists: diffcp's dense solve leaves
    1e-16; LSQR 1e-8 to 1e-5 on regular LPs, and 0.4 to 1 where its answers
    were 60 % to 100 % off; found by a probe.)"""
    def run(g: FloatArray) -> FloatArray:
        d = solve(g)
        rel = float(np.linalg.norm(matvec(d) - g)) / max(float(np.linalg.norm(g)),
                                                          np.finfo(float).tiny)
        if not rel <= _WARN_RTOL:
            _warn(
                f"the derivative solve (mode={mode.value!r}) at batch item {index} has "
                f"relative residual {rel:.1e}; this item's derivative (JVP or VJP) is "
                "inaccurate. mode='exact' (the default) solves it exactly."
            )
        return d
    return run
