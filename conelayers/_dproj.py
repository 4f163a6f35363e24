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

from ._batched import segment_sums
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


def _soc_lowrank(v: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The SOC Jacobian as diagonal + rank 2: DΠ = diag(δ) + W S Wᵀ, W = [e₀, (0, u)].

    For p SOCs of size d (``v`` is (p, d)) returns the projections (p, d), δ
    (p, d), u (p, d − 1) and S (p, 2, 2). Inside: δ = 1, S = 0; polar: δ = 0,
    S = 0; otherwise, with ρ = t/‖z‖ and α = (1 + ρ)/2,
    δ = (½, α, …, α) and S = ½[[0, 1], [1, −ρ]], which reproduces
    ½[[1, uᵀ], [u, (1 + ρ)I − ρ uuᵀ]] (see ``_soc_blocks``) without its dense d×d block.
    """
    p, d = v.shape
    t, z = v[:, 0], v[:, 1:]
    nz = np.linalg.norm(z, axis=1)
    inside = nz <= t
    polar = (nz <= -t) & ~inside
    between = ~(inside | polar)
    S = np.zeros((p, 2, 2))
    if between.all():  # the same formulas without the masks (an active SOC at a solution)
        rho = t / nz
        alpha = 0.5 * (1.0 + rho)
        proj, delta = np.empty_like(v), np.empty((p, d))
        proj[:, 0] = alpha * nz
        proj[:, 1:] = alpha[:, None] * z
        delta[:, 0] = 0.5
        delta[:, 1:] = alpha[:, None]
        S[:, 0, 1] = S[:, 1, 0] = 0.5
        S[:, 1, 1] = -0.5 * rho
        return proj, delta, z / nz[:, None], S
    proj = np.zeros_like(v)
    proj[inside] = v[inside]
    delta = np.zeros((p, d))
    delta[inside] = 1.0
    u = np.zeros((p, d - 1))
    if between.any():
        tb, zb, nb = t[between], z[between], nz[between]
        rho = tb / nb
        alpha = 0.5 * (1.0 + rho)
        proj[between, 0] = alpha * nb
        proj[between, 1:] = alpha[:, None] * zb
        delta[between, 0] = 0.5
        delta[between, 1:] = alpha[:, None]
        u[between] = zb / nb[:, None]
        S[between, 0, 1] = S[between, 1, 0] = 0.5
        S[between, 1, 1] = -0.5 * rho
    return proj, delta, u, S


def _psd_blocks(V: FloatArray, order: int) -> tuple[FloatArray, FloatArray]:
    """Projections (B, d) and Jacobians (B, d, d), in svec coordinates, for one
    PSD cone at B points (rows of ``V``)."""
    rows, cols = svec_indices(order)
    diag = rows == cols
    B = V.shape[0]
    X = np.zeros((B, order, order))
    X[:, rows, cols] = np.where(diag, V, V / math.sqrt(2.0))
    X[:, cols, rows] = X[:, rows, cols]
    lam, Q = np.linalg.eigh(X)
    lam_pos = np.maximum(lam, 0.0)

    P = (Q * lam_pos[:, None, :]) @ Q.transpose(0, 2, 1)
    proj = P[:, rows, cols] * np.where(diag, 1.0, math.sqrt(2.0))

    # B_ij = (λᵢ⁺ − λⱼ⁺)/(λᵢ − λⱼ), with the limit 1{λ > 0} on (near-)ties.
    dl = lam[:, :, None] - lam[:, None, :]
    dp = lam_pos[:, :, None] - lam_pos[:, None, :]
    scale = np.maximum(1.0, np.abs(lam).max(axis=1, initial=0.0))[:, None, None]
    tie = np.abs(dl) <= 1e-14 * scale
    safe = np.where(tie, 1.0, dl)
    Bm = np.where(tie, (lam[:, :, None] > 0) * 1.0, dp / safe)
    # Where both eigenvalues are positive B = 1 and both negative B = 0 exactly.
    # G[r] is svec of (eᵣ-basis) in the eigenbasis: G[r, p, q] = ⟨Eᵣ, q_p q_qᵀ⟩.
    Qr, Qc = Q[:, rows], Q[:, cols]  # (B, d, k)
    G = Qr[:, :, :, None] * Qc[:, :, None, :]
    G = np.where(diag[None, :, None, None], G, (G + G.transpose(0, 1, 3, 2)) / math.sqrt(2.0))
    Gf = G.reshape(B, len(rows), -1)
    jac = (Gf * Bm.reshape(B, 1, -1)) @ Gf.transpose(0, 2, 1)
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
    diagonal for the free and nonnegative parts, full blocks for every PSD and
    exponential cone, and for every SOC either a full block or, with
    ``lowrank=True``, a diagonal plus the rank-2 term W S Wᵀ of
    :func:`_soc_lowrank` (a d×d dense block would make an SOC of dimension
    1,000 cost a million entries; the low-rank form costs 3d + 4). It is fixed
    here, once: ``rows``/``cols`` index the (block) entries, and each call
    returns the values in that order, followed in low-rank mode by the u's and
    S's of the SOCs, so that callers can assemble larger matrices with
    precomputed index maps instead of SciPy constructors.
    """

    def __init__(self, layout: ConeLayout, lowrank: bool = False) -> None:
        self.layout = layout
        self.lowrank = lowrank
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
            if lowrank:
                rows.append(idx.ravel())
                cols.append(idx.ravel())
            else:
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
        self.nblock = int(self.rows.size)
        # Low-rank bookkeeping: SOC cones numbered in the order of self.soc.
        heads = [idx[:, 0] for idx in self.soc]
        tails = [idx[:, 1:] for idx in self.soc]
        self.heads = np.concatenate(heads or [np.zeros(0, dtype=np.intp)]).astype(np.intp)
        self.tail_rows = np.concatenate([t.ravel() for t in tails]
                                        or [np.zeros(0, dtype=np.intp)]).astype(np.intp)
        starts = np.cumsum([0] + [idx.shape[0] for idx in self.soc])
        self.tail_cone = np.concatenate(
            [np.repeat(starts[g] + np.arange(t.shape[0]), t.shape[1]) for g, t in enumerate(tails)]
            or [np.zeros(0, dtype=np.intp)]).astype(np.intp)
        self.q = int(self.heads.size) if lowrank else 0

    @property
    def nnz(self) -> int:
        """Length of the values vector."""
        return self.nblock + (self.tail_rows.size + 4 * self.q if self.lowrank else 0)

    def split(self, values: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(block values, u of every SOC tail row, S (q, 2, 2)) from the values."""
        nb, nt = self.nblock, self.tail_rows.size
        if not self.lowrank:
            return values, np.zeros(0), np.zeros((0, 2, 2))
        return values[:nb], values[nb:nb + nt], values[nb + nt:].reshape(-1, 2, 2)

    def __call__(self, v: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``(Π_{K*}(v) (m,), values of DΠ_{K*}(v) (nnz,))``."""
        proj, vals = self.batch(v[None])
        return proj[0], vals[0]

    def batch(self, V: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Π_{K*} and the values of DΠ_{K*} at B points at once: ``V`` is (B, m);
        returns ``(proj (B, m), values (B, nnz))``, row k as ``self(V[k])`` gives.

        The per-cone formulas are vectorized over cones of one size already;
        here the B points are more such cones (an SOC block of p cones becomes
        B·p), so a batch costs about as many NumPy calls as one point.
        """
        B = V.shape[0]
        proj = np.empty((B, self.m))
        vals: list[np.ndarray] = []
        us: list[np.ndarray] = []
        Ss: list[np.ndarray] = []
        proj[:, self.free] = V[:, self.free]
        vals.append(np.ones((B, self.free.size)))
        vn = V[:, self.nonneg]
        proj[:, self.nonneg] = np.maximum(vn, 0.0)
        vals.append(np.where(vn > 0, 1.0, np.where(vn < 0, 0.0, 0.5)))
        for idx in self.soc:
            p_, d = idx.shape
            cones = V[:, idx].reshape(B * p_, d)
            if self.lowrank:
                p, delta, u, S = _soc_lowrank(cones)
                vals.append(delta.reshape(B, -1))
                us.append(u.reshape(B, -1))
                Ss.append(S.reshape(B, -1))
            else:
                p, jac = _soc_blocks(cones)
                vals.append(jac.reshape(B, -1))
            proj[:, idx] = p.reshape(B, p_, d)
        for off, order, d in self.psd:
            p, jac = _psd_blocks(V[:, off : off + d], order)
            proj[:, off : off + d] = p
            vals.append(jac.reshape(B, -1))
        for idx, primal in self.exp:
            # K = Exp: project onto Exp*; K = ExpDual: onto (Exp*)* = Exp.
            p_ = idx.shape[0]
            p, jac = _exp_blocks(V[:, idx].reshape(B * p_, 3), dual=primal)
            proj[:, idx] = p.reshape(B, p_, 3)
            vals.append(jac.reshape(B, -1))
        return proj, np.concatenate(vals + us + Ss, axis=1)

    def _lowrank_apply(self, values: FloatArray, X: FloatArray, transpose: bool) -> FloatArray:
        """W S Wᵀ X (or W Sᵀ Wᵀ X) row by row: ``values`` (B, nnz), ``X`` (B, m)."""
        B, nb, nt = X.shape[0], self.nblock, self.tail_rows.size
        u, S = values[:, nb:nb + nt], values[:, nb + nt:].reshape(B, self.q, 2, 2)
        w1x = segment_sums(u * np.take(X, self.tail_rows, axis=1), self.tail_cone, self.q)
        w = np.stack([X[:, self.heads], w1x], axis=2)  # Wᵀx per cone, (B, q, 2)
        a = np.einsum("bqji,bqj->bqi" if transpose else "bqij,bqj->bqi", S, w)
        out = segment_sums(u * a[:, self.tail_cone, 1], self.tail_rows, self.m)
        out[:, self.heads] += a[:, :, 0]  # (one head per cone: no repeated index)
        return out

    def matvec(self, values: FloatArray, x: FloatArray) -> FloatArray:
        """DΠ_{K*} @ x from the values (no matrix is formed)."""
        return self.matvec_many(values[None], x[None])[0]

    def rmatvec(self, values: FloatArray, x: FloatArray) -> FloatArray:
        """DΠ_{K*}ᵀ @ x from the values."""
        return self.rmatvec_many(values[None], x[None])[0]

    def matvec_many(self, values: FloatArray, X: FloatArray) -> FloatArray:
        """:meth:`matvec` row by row: ``values`` (B, nnz), ``X`` (B, m)."""
        block = values[:, : self.nblock]
        out = segment_sums(block * np.take(X, self.cols, axis=1), self.rows, self.m)
        return out + self._lowrank_apply(values, X, False) if self.q else out

    def rmatvec_many(self, values: FloatArray, X: FloatArray) -> FloatArray:
        """:meth:`rmatvec` row by row."""
        block = values[:, : self.nblock]
        out = segment_sums(block * np.take(X, self.rows, axis=1), self.cols, self.m)
        return out + self._lowrank_apply(values, X, True) if self.q else out

    def matrix(self, values: FloatArray) -> CSR:
        """DΠ_{K*} as a CSR array from its values (low-rank terms expanded)."""
        block = values[: self.nblock]
        D = sp.coo_array((block, (self.rows, self.cols)), shape=(self.m, self.m)).tocsr()
        if not self.q:
            return D
        _, u, S = self.split(values)
        W = sp.coo_array((np.concatenate([np.ones(self.q), u]),
                          (np.concatenate([self.heads, self.tail_rows]),
                           np.concatenate([2 * np.arange(self.q), 2 * self.tail_cone + 1]))),
                         shape=(self.m, 2 * self.q)).tocsr()
        return sp.csr_array(D + W @ sp.block_diag(list(S)) @ W.T)


def dproject_dual(v: FloatArray, layout: ConeLayout) -> tuple[FloatArray, CSR]:
    """Π_{K*}(v) and the sparse Jacobian DΠ_{K*}(v), K given by ``layout``.

    ``v`` has length ``layout.dim``; the Jacobian is ``(m, m)`` CSR, block
    diagonal in the canonical cone order. (Builds a :class:`DualProjection`;
    reuse one of those when projecting many points for the same layout.)
    """
    dp = DualProjection(layout)
    proj, vals = dp(v)
    return proj, dp.matrix(vals)
