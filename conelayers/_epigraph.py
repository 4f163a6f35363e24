"""Squared-norm epigraphs of a cone program, solved as quadratic terms.

CVXPY's conic path (the one every layer canonicalizes through) writes a
quadratic term of the objective as an epigraph: a variable t whose only cost
is c_t ≥ 0 and whose only rows are the head of a second-order cone,

    (β + a t, β − a t, w) ∈ SOC      ⟺      4aβ t ≥ ‖w‖²,      w = b_w − A_w x

(``sum_squares`` and ``quad_form`` give a = β = 1; ``quad_over_lin(w, y)``
β = y). A solver that takes a quadratic objective solves the same program
faster as the QP with one variable u = w per tail row and the epigraph gone:

    min  ½ uᵀ diag(c_t / (2aβ)) u + c̄ᵀx̄   s.t.  Ā x̄ + E u + s̄ = b̄,  s̄ ∈ K̄,

the block's two head rows and t's column removed, its tail rows kept with
their cone now {0} (they read A_w x̄ + u = b_w), E placing u in them. Its
answer maps back exactly: t = ‖u‖² / (4aβ), the block's s = (β + at, β − at,
u) (on the cone's boundary), its y = μ (s₀, −s₁, −u) with μ = c_t / (2aβ),
which equals the QP's multipliers of the tail rows (stationarity in u) and
puts y on the dual cone's boundary, complementary to s; t's stationarity
−a y₀ + a y₁ + c_t = 0 holds by the choice of μ. Everything else keeps its
value. Clarabel's iterations on the benchmark suite: 14–18 → 10–12 (see
:mod:`conelayers._solvers.clarabel` for when it pays).

What is found here depends only on the layout and A's pattern (a head row
with one stored entry, t's column with only the two); the values that make a
block an epigraph (a > 0 in both head rows with opposite signs, equal β > 0,
c_t ≥ 0) are an item's and are checked per item (:meth:`Lifting.applies`):
an item where they fail is solved as the cone program it is.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._cones import SOC, ConeLayout
from ._typing import CSC, BoolArray, FloatArray, IntArray

__all__ = ["Lifting", "lifting"]


@dataclass(frozen=True, eq=False)
class Lifting:
    """The map between a cone program and its QP form (see the module doc).

    Per epigraph block k: ``heads[k]`` its first row, ``columns[k]`` t's column,
    ``entries[k]`` the positions in A's stored values of t's entries in the two
    head rows, ``tails[k]`` its tail rows (``heads[k] + 2`` up to the cone's
    end). The QP's rows are the program's ``rows`` (in order), its columns the
    program's ``columns_kept`` then the u's (block by block, tail row by tail
    row); its A has the stored pattern ``indices, indptr``, whose values are
    ``[A's stored values, 1][gather]`` (the 1: E's entries). ``zero_rows``
    marks the QP rows whose cone became {0}.

    An item's QP is formed (and its answer mapped back) once per solve, beside
    a solve of a small program of ~0.1–0.3 ms: so the per-block work is plain
    Python on floats, and the arrays are gathered in one call each.
    """

    heads: IntArray
    columns: IntArray
    entries: IntArray  # (K, 2)
    tails: tuple[range, ...]
    rows: IntArray
    columns_kept: IntArray
    indices: IntArray
    indptr: IntArray
    gather: IntArray
    zero_rows: BoolArray

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.size, self.indptr.size - 1

    @functools.cached_property
    def _blocks(self) -> tuple[tuple[int, int, int, int, int, int, int, int], ...]:
        """Per block, as Python ints: t's two entries, the head row, t's
        column, the block's u's in the QP's x, its tail rows."""
        start, out = self.columns_kept.size, []
        for (lower, upper), head, column, tail in zip(
                self.entries.tolist(), self.heads.tolist(), self.columns.tolist(), self.tails,
                strict=True):
            out.append((lower, upper, head, column, start, start + len(tail), tail.start,
                        tail.stop))
            start += len(tail)
        return tuple(out)

    def applies(self, A: CSC, b: FloatArray, c: FloatArray) -> bool:
        """Whether every block is an epigraph for this item's values: t's two
        entries ∓a with a > 0, the heads' b both β > 0, t's cost ≥ 0."""
        data = A.data
        for lower, upper, head, column, *_ in self._blocks:
            a, beta = data[upper], b[head]
            if not (a > 0 and data[lower] == -a and b[head + 1] == beta and beta > 0
                    and c[column] >= 0):
                return False
        return True

    def data(self, A: CSC, b: FloatArray, c: FloatArray
             ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """The QP's (P's diagonal on the u's, A's stored values, b, c) for an
        item where it :meth:`applies`; P's diagonal is μ = c_t / (2aβ) on
        each block's u's."""
        data = A.data
        weights = np.empty(self.shape[1] - self.columns_kept.size)
        for _, upper, head, column, start, stop, _, _ in self._blocks:
            weights[start - self.columns_kept.size : stop - self.columns_kept.size] = (
                c[column] / (2.0 * data[upper] * b[head]))
        c_qp = np.zeros(self.shape[1])
        c_qp[: self.columns_kept.size] = c[self.columns_kept]
        return weights, np.append(data, 1.0)[self.gather], b[self.rows], c_qp

    def solution(self, A: CSC, b: FloatArray, c: FloatArray, x_qp: FloatArray,
                 y_qp: FloatArray, s_qp: FloatArray, n: int, m: int
                 ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The cone program's (x, y, s) from the QP's answer (see the module doc)."""
        x, y, s = np.empty(n), np.empty(m), np.empty(m)
        x[self.columns_kept] = x_qp[: self.columns_kept.size]
        y[self.rows], s[self.rows] = y_qp, s_qp
        data = A.data
        for _, upper, head, column, start, stop, first, last in self._blocks:
            a, beta = float(data[upper]), float(b[head])
            u = x_qp[start:stop]
            t = float(u @ u) / (4.0 * a * beta)
            mu = float(c[column]) / (2.0 * a * beta)
            x[column] = t
            s[head], s[head + 1] = beta + a * t, beta - a * t
            y[head], y[head + 1] = mu * (beta + a * t), -mu * (beta - a * t)
            s[first:last] = u
        return x, y, s


def lifting(layout: ConeLayout, n: int, indices: IntArray, indptr: IntArray) -> Lifting | None:
    """The program's :class:`Lifting` (None: no second-order cone has an
    epigraph's pattern). ``indices, indptr``: A's CSC pattern, shape (m, n)."""
    m = layout.dim
    per_row = np.bincount(indices, minlength=m)
    column_of = np.repeat(np.arange(n), np.diff(indptr))
    heads, columns, entries, tails = [], [], [], []
    for offset, cone in layout.of_type(SOC):
        if cone.dim < 3 or per_row[offset] != 1 or per_row[offset + 1] != 1:
            continue
        (first,) = np.flatnonzero(indices == offset)
        (second,) = np.flatnonzero(indices == offset + 1)
        j = column_of[first]
        if column_of[second] != j or indptr[j + 1] - indptr[j] != 2:
            continue
        heads.append(offset)
        columns.append(j)
        entries.append((first, second))
        tails.append(range(offset + 2, offset + cone.dim))
    if not heads:
        return None
    dropped = np.zeros(m, dtype=bool)
    dropped[np.array(heads)] = dropped[np.array(heads) + 1] = True
    rows = np.flatnonzero(~dropped)
    kept = np.ones(n, dtype=bool)
    kept[np.array(columns)] = False
    columns_kept = np.flatnonzero(kept)
    position = np.full(m, -1)
    position[rows] = np.arange(rows.size)
    # The QP's A: the program's pattern on the kept rows and columns, tagged with
    # 1 + each entry's position in A's stored values, then E's entries tagged -1.
    tags = sp.csc_array((np.arange(1.0, indices.size + 1.0), indices, indptr), shape=(m, n))
    tail_rows = np.concatenate([np.arange(t.start, t.stop) for t in tails])
    E = sp.csc_array((np.full(tail_rows.size, -1.0),
                      (position[tail_rows], np.arange(tail_rows.size))),
                     shape=(rows.size, tail_rows.size))
    A_qp = sp.csc_array(sp.hstack([tags[rows][:, columns_kept], E], format="csc"))
    A_qp.sort_indices()
    tag = A_qp.data
    zero_rows = np.zeros(rows.size, dtype=bool)
    zero_rows[position[tail_rows]] = True
    return Lifting(
        heads=np.array(heads), columns=np.array(columns), entries=np.array(entries),
        tails=tuple(tails), rows=rows, columns_kept=columns_kept,
        indices=A_qp.indices.copy(), indptr=A_qp.indptr.copy(),
        gather=np.where(tag > 0, tag - 1.0, indices.size).astype(np.intp), zero_rows=zero_rows,
    )
