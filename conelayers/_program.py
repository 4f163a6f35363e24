"""The parametric cone program: C (parameters → data) and R (solution → outputs).

For a parameter vector θ (all of the layer's parameters, each flattened in
column-major order and concatenated in the order the user listed them; for
``gp=True`` the entry-wise logarithm of their values), write θ̃ = [θ; 1]. Then

    C: θ̃ ↦ (vals(A), b, c, d)  is linear:  [vals(A); b; c; d] = C θ̃,

where vals(A) are the entries of A on a sparsity pattern fixed at
construction (CSC order), and d is the objective's constant. Each θ defines

    minimize cᵀx + d   subject to   Ax + s = b,   s ∈ K       (primal)
    maximize −bᵀy + d  subject to   Aᵀy + c = 0,  y ∈ K*      (dual)

with K = ``layout`` (canonical order, see :mod:`conelayers._cones`).

R maps a solution to the requested outputs. Output k is

    out_k = R_k [x; y]            (reshaped column-major to its shape), or
    out_k = exp(R_k [x; y])       for a primal variable of a geometric program.

Every map here works on a whole batch at once: arrays carry a leading batch
axis, and the batch goes through C in one sparse matrix product.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._cones import ConeLayout
from ._typing import CSC, CSR, FloatArray, IntArray

__all__ = ["OutputMap", "ParameterSpec", "ParametricConeProgram", "theta_size"]


@dataclass(frozen=True, eq=False)
class ParameterSpec:
    """What the layer expects of one parameter's value.

    ``offset:offset + size`` is its segment of θ. ``checks`` names the
    declared attributes its values must satisfy (``"nonneg"``, ``"PSD"``, …);
    ``log`` marks a parameter of a geometric program, which enters θ as its log.
    ``raw``: where such a parameter is also used as it is (an exponent, ``x**p``,
    which the log-log transformation keeps), the offset of a second segment
    holding its values themselves (CVXPY's problem then has both ``p`` and
    ``log p``, each affine in its own segment).
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    checks: tuple[str, ...] = ()
    log: bool = False
    mask: FloatArray | None = None  # allowed nonzeros (diag / sparsity attributes)
    raw: int | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def theta_size(specs: Sequence[ParameterSpec]) -> int:
    """Length of θ: every parameter's segment, and the raw segments after them."""
    return max((max(s.offset, s.raw or 0) + s.size for s in specs), default=0)


@dataclass(frozen=True, eq=False)
class OutputMap:
    """R_k for one requested output: ``out = R @ [x; y]`` (``exp`` of it for GP)."""

    name: str
    shape: tuple[int, ...]
    R: CSR  # (size, n + m)
    exp: bool = False
    dual: bool = False

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @functools.cached_property
    def R_T(self) -> CSC:
        """Rᵀ, formed once (SciPy's ``.T`` builds a new array each call, ~20 µs)."""
        return self.R.T


@dataclass(frozen=True, eq=False)
class ParametricConeProgram:
    """A DPP problem canonicalized once: the maps C and R, and the cone K.

    Attributes
    ----------
    n, m : int
        Number of variables x and of constraint rows (``layout.dim``).
    layout : ConeLayout
        The cone K.
    A_indices, A_indptr : ndarray
        Fixed CSC sparsity pattern of A, shape ``(m, n)``; ``nnz = len(A_indices)``.
    C : scipy.sparse.csr_array, shape ``(nnz + m + n + 1, p + 1)``
        Rows: vals(A), then b, then c, then d; columns: θ, then the constant.
    parameters : tuple of ParameterSpec
        The user's parameters, in the user's order (segments of θ).
    outputs : tuple of OutputMap
        The maps R_k, in the order the user asked for them.
    objective_sign : float
        +1 for ``Minimize``, −1 for ``Maximize`` (CVXPY flips the latter).
    gp : bool
        Geometric program (log-log convex), solved in log space.
    """

    n: int
    m: int
    layout: ConeLayout
    A_indices: IntArray
    A_indptr: IntArray
    C: CSR
    parameters: tuple[ParameterSpec, ...]
    outputs: tuple[OutputMap, ...]
    objective_sign: float = 1.0
    gp: bool = False

    def __post_init__(self) -> None:
        assert self.layout.dim == self.m, "layout and m disagree; please report this bug"
        assert self.C.shape == (self.nnz + self.m + self.n + 1, self.param_size + 1)

    # -- sizes ---------------------------------------------------------------

    @property
    def nnz(self) -> int:
        """Number of entries of A's fixed sparsity pattern."""
        return int(self.A_indices.size)

    @property
    def param_size(self) -> int:
        """Length p of θ."""
        return theta_size(self.parameters)

    # -- C and its adjoint ---------------------------------------------------

    @functools.cached_property
    def _C_T(self) -> CSC:
        """Cᵀ, formed once (SciPy's ``.T`` builds a new array each call: ~3 %
        of a QP's forward + backward at B = 1)."""
        return self.C.T

    @functools.cached_property
    def _C_linear(self) -> CSR:
        """C without its constant column (the tangent map), formed once."""
        return self.C[:, : self.param_size]

    def apply(self, theta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """``apply(theta (B, p)) -> (vals(A) (B, nnz), b (B, m), c (B, n), d (B,))``.

        One sparse-times-dense product for the whole batch.
        """
        batch = theta.shape[0]
        theta_tilde = np.empty((self.param_size + 1, batch))
        theta_tilde[:-1] = theta.T
        theta_tilde[-1] = 1.0
        data = np.ascontiguousarray((self.C @ theta_tilde).T)
        k = np.cumsum([self.nnz, self.m, self.n])
        return data[:, : k[0]], data[:, k[0] : k[1]], data[:, k[1] : k[2]], data[:, k[2]]

    def apply_adjoint(self, dA: FloatArray, db: FloatArray, dc: FloatArray) -> FloatArray:
        """``apply_adjoint(dA (B, nnz), db (B, m), dc (B, n)) -> dtheta (B, p)``.

        The adjoint of θ ↦ (vals(A), b, c) (the constant column drops out).
        """
        batch = dA.shape[0]
        stacked = np.concatenate([dA, db, dc, np.zeros((batch, 1))], axis=1)
        return np.asarray((self._C_T @ stacked.T).T)[:, : self.param_size]

    def apply_linear(self, dtheta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``apply_linear(dtheta (B, p)) -> (dA (B, nnz), db (B, m), dc (B, n))``.

        The tangent map of :meth:`apply` (C without its constant column).
        """
        data = np.ascontiguousarray((self._C_linear @ dtheta.T).T)
        k = np.cumsum([self.nnz, self.m, self.n])
        return data[:, : k[0]], data[:, k[0] : k[1]], data[:, k[1] : k[2]]

    def matrix(self, values: FloatArray) -> CSC:
        """A as a CSC array from its values on the fixed pattern (no copy)."""
        return sp.csc_array((values, self.A_indices, self.A_indptr), shape=(self.m, self.n))

    # -- R and its adjoint / derivative --------------------------------------

    def recover(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, ...]:
        """``recover(x (B, n), y (B, m)) -> outputs``, each ``(B, *shape)``."""
        xy = np.concatenate([x, y], axis=1)
        outs = []
        for out in self.outputs:
            flat = np.asarray((out.R @ xy.T).T)
            if out.exp:
                flat = np.exp(flat)
            outs.append(_unflatten(flat, out.shape))
        return tuple(outs)

    def recover_adjoint(
        self, douts: tuple[FloatArray | None, ...], outs: tuple[FloatArray, ...]
    ) -> tuple[FloatArray, FloatArray]:
        """``recover_adjoint(douts, outs) -> (dx (B, n), dy (B, m))``.

        ``outs`` are the values :meth:`recover` returned (needed for GP's exp);
        a ``None`` cotangent counts as zero.
        """
        batch = outs[0].shape[0] if outs else 0
        dxy = np.zeros((batch, self.n + self.m))
        for out, dout, value in zip(self.outputs, douts, outs, strict=True):
            if dout is None:
                continue
            g = _flatten(dout, batch)
            if out.exp:
                g = g * _flatten(value, batch)
            dxy += np.asarray((out.R_T @ g.T).T)
        return dxy[:, : self.n], dxy[:, self.n :]

    def recover_derivative(
        self, dx: FloatArray, dy: FloatArray, outs: tuple[FloatArray, ...]
    ) -> tuple[FloatArray, ...]:
        """``recover_derivative(dx, dy, outs) -> douts``: the tangent map of R."""
        batch = dx.shape[0]
        dxy = np.concatenate([dx, dy], axis=1)
        douts = []
        for out, value in zip(self.outputs, outs, strict=True):
            flat = np.asarray((out.R @ dxy.T).T)
            if out.exp:
                flat = flat * _flatten(value, batch)
            douts.append(_unflatten(flat, out.shape))
        return tuple(douts)

    def recover_linear(self, dxy: FloatArray) -> FloatArray:
        """All outputs' linear parts R_k stacked, applied to rows of [dx, dy]: ``(k, Σ size)``.

        (For GP outputs this omits the positive factor exp(·), which does not
        change which tangents vanish.)
        """
        return np.concatenate([np.asarray((out.R @ dxy.T).T) for out in self.outputs], axis=1)

    def objective(self, x: FloatArray, c: FloatArray, d: FloatArray) -> FloatArray:
        """Optimal value of the user's objective, per item: sign·(cᵀx + d)."""
        value = self.objective_sign * (np.einsum("bi,bi->b", c, x) + d)
        return np.exp(value) if self.gp else value

    def __repr__(self) -> str:
        return (
            f"ParametricConeProgram(n={self.n}, m={self.m}, nnz(A)={self.nnz}, "
            f"p={self.param_size}, K={self.layout!r})"
        )


def _unflatten(flat: FloatArray, shape: tuple[int, ...]) -> FloatArray:
    """(B, size) → (B, *shape), column-major within each item.

    With the batch axis first, a Fortran-order reshape of the whole array is
    exactly a column-major reshape of each item.
    """
    return np.reshape(flat, (flat.shape[0], *shape), order="F")


def _flatten(value: FloatArray, batch: int) -> FloatArray:
    """(B, *shape) → (B, size), column-major within each item."""
    return np.reshape(np.asarray(value, dtype=np.float64), (batch, -1), order="F")
