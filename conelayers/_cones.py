"""Cones: their types, canonical order, and the symmetric-matrix convention.

This module alone owns these facts; every other module imports them.

Convention (SCS's and diffcp's). A cone program is

    minimize cᵀx   subject to   Ax + s = b,   s ∈ K,

with dual variable y ∈ K*. K is a product of cones stacked in the canonical
order

    Zero × Nonneg × SOC × … × PSD × … × Exp × … × ExpDual × …

* ``Zero(d)``: {0}ᵈ; its dual cone is ℝᵈ (free).
* ``Nonneg(d)``: ℝ₊ᵈ; self-dual.
* ``SOC(d)``: {(t, z) ∈ ℝ × ℝᵈ⁻¹ : ‖z‖₂ ≤ t}; self-dual.
* ``PSD(k)``: k×k positive semidefinite matrices, stored as the d = k(k+1)/2
  vector ``svec(X)``: the lower triangle, column by column, off-diagonal
  entries multiplied by √2 (so that ⟨svec X, svec Y⟩ = tr(XY)); self-dual.
* ``Exp(p)``: p copies of the exponential cone cl{(x, y, z) : y·e^(x/y) ≤ z, y > 0},
  each stored as consecutive (x, y, z).
* ``ExpDual(p)``: p copies of its dual cone.

Power cones are not here on purpose: diffcp has no derivative for them, and
CVXPY rewrites power atoms into second-order cones for our target.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ._typing import FloatArray, IntArray

__all__ = [
    "PSD",
    "SOC",
    "Cone",
    "ConeLayout",
    "Exp",
    "ExpDual",
    "Nonneg",
    "Zero",
    "svec",
    "svec_indices",
    "svec_permutation_to_upper",
    "unsvec",
]


@dataclass(frozen=True, repr=False)
class Cone:
    """Base of the cone value types; ``dim`` is the number of rows it takes."""

    order_key: ClassVar[int]
    scs_key: ClassVar[str]

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        (value,) = (getattr(self, f.name) for f in fields(self))
        return f"{type(self).__name__}({value})"


@dataclass(frozen=True, repr=False)
class Zero(Cone):
    """The zero cone {0}ᵈ (equality constraints)."""

    size: int
    order_key: ClassVar[int] = 0
    scs_key: ClassVar[str] = "z"

    @property
    def dim(self) -> int:
        return self.size


@dataclass(frozen=True, repr=False)
class Nonneg(Cone):
    """The nonnegative orthant ℝ₊ᵈ."""

    size: int
    order_key: ClassVar[int] = 1
    scs_key: ClassVar[str] = "l"

    @property
    def dim(self) -> int:
        return self.size


@dataclass(frozen=True, repr=False)
class SOC(Cone):
    """One second-order cone of dimension ``size`` (head t, then tail z)."""

    size: int
    order_key: ClassVar[int] = 2
    scs_key: ClassVar[str] = "q"

    @property
    def dim(self) -> int:
        return self.size


@dataclass(frozen=True, repr=False)
class PSD(Cone):
    """One cone of ``order`` × ``order`` PSD matrices, in svec form."""

    order: int
    order_key: ClassVar[int] = 3
    scs_key: ClassVar[str] = "s"

    @property
    def dim(self) -> int:
        return self.order * (self.order + 1) // 2


@dataclass(frozen=True, repr=False)
class Exp(Cone):
    """``count`` exponential cones, each three consecutive rows (x, y, z)."""

    count: int
    order_key: ClassVar[int] = 4
    scs_key: ClassVar[str] = "ep"

    @property
    def dim(self) -> int:
        return 3 * self.count


@dataclass(frozen=True, repr=False)
class ExpDual(Cone):
    """``count`` dual exponential cones, each three consecutive rows."""

    count: int
    order_key: ClassVar[int] = 5
    scs_key: ClassVar[str] = "ed"

    @property
    def dim(self) -> int:
        return 3 * self.count


@dataclass(frozen=True)
class ConeLayout:
    """The cone K of a cone program: cones in canonical order, with row offsets.

    Build it with :meth:`from_dims`; empty cones are dropped. Iterating yields
    ``(offset, cone)`` pairs.
    """

    cones: tuple[Cone, ...]

    def __post_init__(self) -> None:
        keys = [c.order_key for c in self.cones]
        if keys != sorted(keys):
            raise AssertionError(f"cones out of canonical order: {self.cones}")

    @classmethod
    def from_dims(
        cls,
        *,
        zero: int = 0,
        nonneg: int = 0,
        soc: tuple[int, ...] | list[int] = (),
        psd: tuple[int, ...] | list[int] = (),
        exp: int = 0,
        exp_dual: int = 0,
    ) -> ConeLayout:
        cones: list[Cone] = []
        if zero:
            cones.append(Zero(int(zero)))
        if nonneg:
            cones.append(Nonneg(int(nonneg)))
        cones += [SOC(int(d)) for d in soc if d]
        cones += [PSD(int(k)) for k in psd if k]
        if exp:
            cones.append(Exp(int(exp)))
        if exp_dual:
            cones.append(ExpDual(int(exp_dual)))
        return cls(tuple(cones))

    @property
    def dim(self) -> int:
        """Total number of rows m."""
        return sum(c.dim for c in self.cones)

    def __iter__(self) -> Iterator[tuple[int, Cone]]:
        offset = 0
        for cone in self.cones:
            yield offset, cone
            offset += cone.dim

    def of_type(self, kind: type[Cone]) -> list[tuple[int, Cone]]:
        """The ``(offset, cone)`` pairs of one cone type."""
        return [(o, c) for o, c in self if isinstance(c, kind)]

    def count(self, kind: type[Cone]) -> int:
        """Total rows taken by one cone type."""
        return sum(c.dim for _, c in self.of_type(kind))

    def to_scs(self) -> dict[str, Any]:
        """SCS / diffcp cone dictionary (keys z, l, q, s, ep, ed)."""
        return {
            "z": self.count(Zero),
            "l": self.count(Nonneg),
            "q": [c.dim for _, c in self.of_type(SOC)],
            "s": [c.order for _, c in self.of_type(PSD)],  # type: ignore[attr-defined]
            "ep": self.count(Exp) // 3,
            "ed": self.count(ExpDual) // 3,
        }

    @classmethod
    def from_scs(cls, cones: Mapping[str, Any]) -> ConeLayout:
        return cls.from_dims(
            zero=cones.get("z", 0) + cones.get("f", 0),
            nonneg=cones.get("l", 0),
            soc=tuple(cones.get("q", ())),
            psd=tuple(cones.get("s", ())),
            exp=cones.get("ep", 0),
            exp_dual=cones.get("ed", 0),
        )

    def __repr__(self) -> str:
        inner = " × ".join(repr(c) for c in self.cones) or "∅"
        return f"ConeLayout({inner})"


# ---------------------------------------------------------------------------
# svec / unsvec (SCS convention: lower triangle, column-major, √2 off-diagonal)


def svec_indices(order: int) -> tuple[IntArray, IntArray]:
    """Row and column indices of the svec entries, in svec order.

    Lower triangle, column by column: (0,0), (1,0), …, (k-1,0), (1,1), (2,1), …
    """
    cols, rows = np.triu_indices(order)
    return rows, cols


def svec(X: FloatArray) -> FloatArray:
    """Scaled lower-triangular vectorization of a symmetric matrix.

    ``svec(X)`` lists X's lower triangle column by column with off-diagonal
    entries multiplied by √2, so that ``svec(X) @ svec(Y) == trace(X @ Y)``.
    Works on a stack of matrices (``X`` of shape ``(..., k, k)``).
    """
    X = np.asarray(X, dtype=np.float64)
    k = X.shape[-1]
    rows, cols = svec_indices(k)
    scale = np.where(rows == cols, 1.0, math.sqrt(2.0))
    return X[..., rows, cols] * scale


def unsvec(x: FloatArray, order: int | None = None) -> FloatArray:
    """Inverse of :func:`svec`: a symmetric matrix (or stack) from its svec."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    k = order if order is not None else round((math.sqrt(8 * d + 1) - 1) / 2)
    if k * (k + 1) // 2 != d:
        raise ValueError(f"svec length {d} is not k(k+1)/2 for an integer k")
    rows, cols = svec_indices(k)
    scale = np.where(rows == cols, 1.0, 1.0 / math.sqrt(2.0))
    X = np.zeros((*x.shape[:-1], k, k))
    X[..., rows, cols] = x * scale
    X[..., cols, rows] = x * scale
    return X


def svec_permutation_to_upper(order: int) -> IntArray:
    """Permutation ``p`` with ``svec_upper(X) == svec(X)[p]``.

    ``svec_upper`` is the upper triangle column by column (Clarabel's
    ``PSDTriangleConeT`` order), with the same √2 scaling.
    """
    rows, cols = svec_indices(order)
    position = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    # Upper triangle column-major: for column j, rows i <= j; entry (i, j) = (j, i) lower.
    return np.array(
        [position[(j, i)] for j in range(order) for i in range(j + 1)], dtype=np.intp
    )
