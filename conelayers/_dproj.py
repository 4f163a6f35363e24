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
* Exp / ExpDual: 3×3 blocks, read from diffcp's own operator (three products
  with probe vectors give every block at once).

The closed forms are vectorized over cones of equal size; tests check every
block against ``diffcp._diffcp.dprojection_dense``.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from ._cones import PSD, SOC, ConeLayout, Exp, ExpDual, Nonneg, Zero, svec_indices
from ._typing import CSR, FloatArray

__all__ = ["dproject_dual"]

# Tolerance diffcp uses to decide that a point lies on the SOC boundary.
_SOC_BOUNDARY_ATOL = 1e-8


def _soc_blocks(v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Projection and Jacobian blocks for p SOCs of size d; ``v`` is (p, d)."""
    p, d = v.shape
    t = v[:, 0]
    z = v[:, 1:]
    nz = np.linalg.norm(z, axis=1)
    inside = (nz <= t) | np.isclose(nz, t, atol=_SOC_BOUNDARY_ATOL)
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


def _exp_blocks(v: FloatArray, count: int, dual: bool) -> tuple[FloatArray, FloatArray]:
    """Projection and 3×3 Jacobian blocks for ``count`` exponential cones.

    ``dual`` selects the cone: the projection onto the *dual* of the cone the
    data sits in. diffcp's routines are the reference here.
    """
    import diffcp._diffcp as _diffcp
    import diffcp.cones as cone_lib

    key = cone_lib.EXP
    proj = cone_lib._proj(v, key, dual=dual)
    op = _diffcp.dprojection(v, [_diffcp.Cone(cone_lib.CONE_MAP[key], [count])], dual)
    cols = []
    for j in range(3):
        probe = np.zeros(3 * count)
        probe[j::3] = 1.0
        cols.append(np.asarray(op.matvec(probe)).reshape(count, 3))
    jac = np.stack(cols, axis=2)  # (count, 3 rows, 3 cols)
    return proj, jac


def dproject_dual(v: FloatArray, layout: ConeLayout) -> tuple[FloatArray, CSR]:
    """Π_{K*}(v) and the sparse Jacobian DΠ_{K*}(v), K given by ``layout``.

    ``v`` has length ``layout.dim``; the Jacobian is ``(m, m)`` CSR, block
    diagonal in the canonical cone order.
    """
    m = layout.dim
    proj = np.empty(m)
    r_idx: list[np.ndarray] = []
    c_idx: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def add_blocks(offsets: np.ndarray, blocks: np.ndarray) -> None:
        p, d, _ = blocks.shape
        local_r, local_c = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
        r_idx.append((offsets[:, None, None] + local_r[None]).ravel())
        c_idx.append((offsets[:, None, None] + local_c[None]).ravel())
        vals.append(blocks.ravel())

    def add_diag(offset: int, diag: np.ndarray) -> None:
        idx = offset + np.arange(diag.size)
        r_idx.append(idx)
        c_idx.append(idx)
        vals.append(diag)

    soc_by_size: dict[int, list[int]] = {}
    for offset, cone in layout:
        sl = slice(offset, offset + cone.dim)
        if isinstance(cone, Zero):  # dual cone is free
            proj[sl] = v[sl]
            add_diag(offset, np.ones(cone.dim))
        elif isinstance(cone, Nonneg):
            proj[sl] = np.maximum(v[sl], 0.0)
            add_diag(offset, np.where(v[sl] > 0, 1.0, np.where(v[sl] < 0, 0.0, 0.5)))
        elif isinstance(cone, SOC):
            soc_by_size.setdefault(cone.dim, []).append(offset)
        elif isinstance(cone, PSD):
            p, jac = _psd_block(v[sl], cone.order)
            proj[sl] = p
            add_blocks(np.array([offset]), jac[None])
        elif isinstance(cone, (Exp, ExpDual)):
            # K = Exp  -> project onto Exp* (dual=True);
            # K = ExpDual -> project onto (Exp*)* = Exp (dual=False).
            p, jac = _exp_blocks(v[sl], cone.count, dual=isinstance(cone, Exp))
            proj[sl] = p
            add_blocks(offset + 3 * np.arange(cone.count), jac)
        else:  # pragma: no cover - ConeLayout admits no other type
            raise AssertionError(f"unknown cone {cone!r}; please report this bug")

    for d, offsets in soc_by_size.items():
        off = np.array(offsets)
        idx = off[:, None] + np.arange(d)[None]
        p, jac = _soc_blocks(v[idx])
        proj[idx] = p
        add_blocks(off, jac)

    if not vals:
        return proj, sp.csr_array((m, m))
    D = sp.coo_array(
        (np.concatenate(vals), (np.concatenate(r_idx), np.concatenate(c_idx))), shape=(m, m)
    ).tocsr()
    return proj, D
