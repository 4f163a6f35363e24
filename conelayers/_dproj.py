"""Projection onto the dual cone K* and its Jacobian, as sparse matrices.

The HSDE derivative needs Π_{K*}(v) and DΠ_{K*}(v) at v = y − s. diffcp offers
both as opaque operators; the exact derivative engine needs the Jacobian as an
explicit sparse matrix to factor it. It is block-diagonal, one block per cone:

* free (dual of Zero): I
* Nonneg: diag(1{v > 0}), with ½ at v = 0 (diffcp's choice)
* SOC, v = (t, z): I if ‖z‖ ≤ t; 0 if ‖z‖ ≤ −t; otherwise, with u = z/‖z‖,
  ½·[[1, uᵀ], [u, (1 + t/‖z‖)·I − (t/‖z‖)·u uᵀ]]
* PSD, V = unsvec(v) = Q diag(λ) Qᵀ: DΠ[H] = Q (B ∘ (Qᵀ H Q)) Qᵀ with
  B_ij = (λᵢ⁺ − λⱼ⁺)/(λᵢ − λⱼ) (B_ij = 1{λᵢ > 0} when λᵢ = λⱼ), in svec coordinates
* Exp / ExpDual: 3×3 blocks from :mod:`conelayers._expcone` (an exact
  projection; diffcp's iterative one is accurate only to ~1e-7, which capped
  refinement and gradients on exponential-cone problems at that level).

The closed forms are vectorized over cones of equal size; tests check every
block against ``diffcp._diffcp.dprojection_dense``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from ._cones import PSD, SOC, ConeLayout, Exp, ExpDual, Nonneg, Zero, svec_indices
from ._expcone import dproject_exp
from ._typing import CSR, FloatArray

__all__ = ["DualProjection", "dproject_dual"]


def _soc_blocks(v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Projection and Jacobian blocks for p SOCs of size d; ``v`` is (p, d)."""
    p, d = v.shape
    t = v[:, 0]
    z = v[:, 1:]
    nz = np.linalg.norm(z, axis=1)
    # Exact case split; on the boundary itself the "between" formula is
    # continuous with both neighbours, so no tolerance is needed.
    inside = nz <= t
    polar = (nz <= -t) & ~inside
    between = ~(inside | polar)

    proj = np.zeros_like(v)
    proj[inside] = v[inside]
    jac = np.zeros((p, d, d))
    jac[inside] = np.eye(d)

    if between.any():
        tb, zb, nb = t[between], z[between], nz[between]
        u = zb / nb[:, None]
        alpha = 0.5 * (1.0 + tb / nb)
        proj[between, 0] = alpha * nb
        proj[between, 1:] = alpha[:, None] * zb
        blk = np.zeros((len(tb), d, d))
        blk[:, 0, 0] = 0.5
        blk[:, 0, 1:] = 0.5 * u
        blk[:, 1:, 0] = 0.5 * u
        ratio = (tb / nb)[:, None, None]
        eye = np.eye(d - 1)[None]
        blk[:, 1:, 1:] = alpha[:, None, None] * eye - 0.5 * ratio * (u[:, :, None] * u[:, None, :])
        jac[between] = blk
    return proj, jac


def _psd_block(v: FloatArray, order: int) -> tuple[FloatArray, FloatArray]:
    """Projection and Jacobian (in svec coordinates) for one PSD cone."""
    rows, cols = svec_indices(order)
    diag = rows == cols
    X = np.zeros((order, order))
    X[rows, cols] = np.where(diag, v, v / math.sqrt(2.0))
    X[cols, rows] = X[rows, cols]
    lam, Q = np.linalg.eigh(X)
    lam_pos = np.maximum(lam, 0.0)

    P = (Q * lam_pos) @ Q.T
    proj = P[rows, cols] * np.where(diag, 1.0, math.sqrt(2.0))

    # B_ij = (λᵢ⁺ − λⱼ⁺)/(λᵢ − λⱼ), with the limit 1{λ > 0} on (near-)ties.
    dl = lam[:, None] - lam[None, :]
    dp = lam_pos[:, None] - lam_pos[None, :]
    tie = np.abs(dl) <= 1e-14 * max(1.0, float(np.abs(lam).max()))
    safe = np.where(tie, 1.0, dl)
    B = np.where(tie, (lam[:, None] > 0) * 1.0, dp / safe)
    # Where both eigenvalues are positive B = 1 and both negative B = 0 exactly.
    # G[r] is svec of (eᵣ-basis) in the eigenbasis: G[r, p, q] = ⟨Eᵣ, q_p q_qᵀ⟩.
    Qr, Qc = Q[rows], Q[cols]  # (d, k)
    G = Qr[:, :, None] * Qc[:, None, :]
    G = np.where(diag[:, None, None], G, (G + G.transpose(0, 2, 1)) / math.sqrt(2.0))
    Gf = G.reshape(len(rows), -1)
    jac = (Gf * B.reshape(1, -1)) @ Gf.T
    return proj, jac


def _exp_blocks(v: FloatArray, dual: bool) -> tuple[FloatArray, FloatArray]:
    """Projection and 3×3 Jacobians for exponential cones; ``v`` is (p, 3).

    ``dual`` selects the dual exponential cone, through Moreau:
    Π_{K*}(v) = v + Π_K(−v), so DΠ_{K*}(v) = I − DΠ_K(−v).
    """
    if not dual:
        return dproject_exp(v)
    p, jac = dproject_exp(-v)
    return v + p, np.eye(3)[None] - jac


class DualProjection:
    """Π_{K*} and the values of DΠ_{K*} for one cone layout.

    The sparsity pattern of the Jacobian depends only on the layout: a full
    diagonal for the free and nonnegative parts, full blocks for every SOC, PSD
    and exponential cone (whatever their values at a given point). It is fixed
    here, once, as COO ``rows``/``cols``; each call returns the values in that
    order, so that callers can assemble larger matrices with precomputed
    index maps instead of SciPy constructors.
    """

    def __init__(self, layout: ConeLayout) -> None:
        self.layout = layout
        self.m = layout.dim
        self.free = np.concatenate([off + np.arange(c.dim) for off, c in layout.of_type(Zero)]
                                   or [np.zeros(0, dtype=np.intp)])
        self.nonneg = np.concatenate([off + np.arange(c.dim) for off, c in
                                      layout.of_type(Nonneg)] or [np.zeros(0, dtype=np.intp)])
        by_size: dict[int, list[int]] = {}
        for off, c in layout.of_type(SOC):
            by_size.setdefault(c.dim, []).append(off)
        self.soc = [np.array(offs)[:, None] + np.arange(d)[None] for d, offs in by_size.items()]
        self.psd = [(off, c.order, c.dim) for off, c in layout.of_type(PSD)]  # type: ignore
        self.exp = [(np.asarray(off + 3 * np.arange(c.count))[:, None] + np.arange(3)[None],
                     isinstance(c, Exp)) for off, c in layout if isinstance(c, (Exp, ExpDual))]

        rows: list[np.ndarray] = [self.free, self.nonneg]
        cols: list[np.ndarray] = [self.free, self.nonneg]
        for idx in self.soc:
            rows.append(np.repeat(idx, idx.shape[1], axis=1).ravel())
            cols.append(np.tile(idx, (1, idx.shape[1])).ravel())
        for off, _, d in self.psd:
            block = off + np.arange(d)
            rows.append(np.repeat(block, d))
            cols.append(np.tile(block, d))
        for idx, _ in self.exp:
            rows.append(np.repeat(idx, 3, axis=1).ravel())
            cols.append(np.tile(idx, (1, 3)).ravel())
        self.rows = np.concatenate(rows).astype(np.intp)
        self.cols = np.concatenate(cols).astype(np.intp)

    @property
    def nnz(self) -> int:
        return int(self.rows.size)

    def __call__(self, v: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(Π_{K*}(v) (m,), values of DΠ_{K*}(v) (nnz,) in rows/cols order)``."""
        proj = np.empty(self.m)
        vals: list[np.ndarray] = []
        proj[self.free] = v[self.free]
        vals.append(np.ones(self.free.size))
        vn = v[self.nonneg]
        proj[self.nonneg] = np.maximum(vn, 0.0)
        vals.append(np.where(vn > 0, 1.0, np.where(vn < 0, 0.0, 0.5)))
        for idx in self.soc:
            p, jac = _soc_blocks(v[idx])
            proj[idx] = p
            vals.append(jac.ravel())
        for off, order, d in self.psd:
            p, jac = _psd_block(v[off : off + d], order)
            proj[off : off + d] = p
            vals.append(jac.ravel())
        for idx, primal in self.exp:
            # K = Exp: project onto Exp*; K = ExpDual: onto (Exp*)* = Exp.
            p, jac = _exp_blocks(v[idx], dual=primal)
            proj[idx] = p
            vals.append(jac.ravel())
        return proj, np.concatenate(vals)

    def matvec(self, values: FloatArray, x: FloatArray) -> FloatArray:
        """DΠ_{K*} @ x from the values (no matrix is formed)."""
        return np.bincount(self.rows, weights=values * x[self.cols], minlength=self.m).astype(
            np.float64, copy=False)

    def rmatvec(self, values: FloatArray, x: FloatArray) -> FloatArray:
        """DΠ_{K*}ᵀ @ x from the values."""
        return np.bincount(self.cols, weights=values * x[self.rows], minlength=self.m).astype(
            np.float64, copy=False)

    def matrix(self, values: FloatArray) -> CSR:
        """DΠ_{K*} as a CSR array from its values."""
        return sp.coo_array((values, (self.rows, self.cols)), shape=(self.m, self.m)).tocsr()


def dproject_dual(v: FloatArray, layout: ConeLayout) -> tuple[FloatArray, CSR]:
    """Π_{K*}(v) and the sparse Jacobian DΠ_{K*}(v), K given by ``layout``.

    ``v`` has length ``layout.dim``; the Jacobian is ``(m, m)`` CSR, block
    diagonal in the canonical cone order. (Builds a :class:`DualProjection`;
    reuse one of those when projecting many points for the same layout.)
    """
    dp = DualProjection(layout)
    proj, vals = dp(v)
    return proj, dp.matrix(vals)
