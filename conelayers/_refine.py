"""Newton refinement of a solver's answer, one item or a group.

Busseti, Moursi, Boyd, "Solution refinement at regular points of conic
problems", 2019. The bordered Jacobian K of the residual map N (notation in
:mod:`conelayers._linearization`) gives Newton's method on N: solve
K [dz; λ] = [−N(z); 0], set z ← (z + dz)/w₊. Interior-point solvers stop with
x accurate only to about √gap on problems whose quadratic terms became cones
(3e-5 at Clarabel's defaults on a 2-variable QP); two or three Newton steps
reach N's rounding floor (a relative residual of at most 1e-14, where
refinement stops) at a regular point. A step is kept only if it at least halves
the relative residual (dual, primal and gap residuals each against its own
scale); where the full Newton step falls short because the iterate's active
set is wrong, refinement pivots across the first boundary on the Newton ray
(see :func:`refine` and ``_step``). :func:`refine_many` takes the same steps
for a group of items together.
"""

from __future__ import annotations

import numpy as np

from ._batched import stack_rows
from ._factor import DenseLU, NearbyLU
from ._linearization import (
    _COND_LIMIT,
    _DENSE_LSTSQ_MAX,
    Linearization,
    Structure,
    _evaluate,
    _linearizations,
    _wrap,
    values_many,
)
from ._nullspace import _SINGULAR
from ._typing import CSC, FloatArray

__all__ = ["batchable", "refine", "refine_many"]


# Relative residual at which refinement stops: N's rounding floor (measured
# floors 1e-16 to 7e-15). Below it a step that "halves" the residual moves
# the last few units: on qp, sparsemax and the SDP of the benchmark suite
# (8 items each) refinement to 1e-15 took one to two more residual
# evaluations per item (0.2–0.3 ms each, 4.9 per item in all on qp) for
# 1e-14 → 2e-15, and sometimes a factorization and Newton step that failed.
_REFINED = 1e-14


def refine(
    structure: Structure, A: CSC, b: FloatArray, c: FloatArray, x: FloatArray, y: FloatArray,
    s: FloatArray, *, max_steps: int = 3, index: int = 0, start: Linearization | None = None,
    differentiable: bool = True,
) -> Linearization:
    """Newton refinement of a solution; returns the linearization at the result.

    ``start``: the linearization at the solver's answer where already made
    (:func:`refine_many` hands over an item it factored there).
    ``differentiable``: whether the result's derivative may be asked for;
    if so, it keeps the LU of its last Newton step for it where that serves
    (:func:`_hand_over`), else it holds no factors.

    Its ``x, y, s`` are the refined solution and ``residual`` its N(z). It is
    factored only if a derivative asks for it later. ``max_steps`` bounds the
    factorizations of K.

    A step is kept only in Newton's regime: when it at least halves the
    relative residual (``_DECISIVE``; at a regular point Newton's steps do far
    better, the error squares). The relative residual is a poor guide further
    out: it is the largest of three blocks, and a step can lower it while making
    the answer worse (at |b| = 1e9, 0.32 → 0.25 while x₂ went from the right
    +1e9 to −1e9). A step that falls short is not damped or line-searched: N
    is piecewise smooth, with a piece per active set, and from an iterate whose
    active set is wrong the residual *rises* along the Newton ray past the
    piece's boundary and falls again inside the right piece; backtracking
    only finds the tiny steps that stay in the wrong piece (measured: a factor
    0.999 per step on SCS's answer to an LP). Instead, two other steps are
    tried, under the same test (see ``_step``).
    """
    lin = start if start is not None else _start(structure, A, b, c, x, y, s, index)
    steps = chords = 0
    base: Linearization | None = None  # the last point whose LU gave a Newton step
    while steps < max_steps and lin.relative_residual > _REFINED:
        if base is not None and chords < _CHORD_MAX:
            trial = _chord_step(structure, base, lin)
            if trial is not None:
                chords += 1
                lin = trial
                continue
            if lin.relative_residual <= _ROUNDING:
                # Short at N's rounding level: a Newton step would factor K for the
                # last units, and falls short there too (the sparse QP of the
                # benchmark, every item: a chord step to 4e-14, then a 1 s SuperLU
                # factorization and a step that failed). The point stands.
                break
        base = None
        lin.factor(compact=False)  # (an iterate: dropped after its step)
        steps += 1
        try:
            trial, extra = _step(structure, lin, budget=max_steps - steps)
        except np.linalg.LinAlgError:
            # A step that cannot be computed falls short like any other: the
            # point reached so far stands. (Seen once, not reproduced, on the
            # code before the chord steps: "SVD did not converge", LAPACK's
            # DLASCL rejecting a non-finite K, inside a step on a sparsemax
            # batch of 128 items, which took the whole batch down.)
            break
        if trial is None:
            break
        steps += extra
        assert lin.lu is not None and lin.K is not None
        if extra == 0 and not lin.lu.singular and not (
                lin.K.shape[0] <= _DENSE_LSTSQ_MAX and lin.condition > _COND_LIMIT):
            base = lin  # _step took the plain LU Newton step (condition cached there)
        lin = trial
    # The factorization at the returned point is left to the first derivative
    # request (Linearization.factor is idempotent): a forward-only call pays
    # for the Newton steps only, and that request may use the LU that gave the
    # last step instead of a new one (NearbyLU).
    if differentiable and base is not None:
        _hand_over(lin, base)
    _keep(lin)
    return lin


def _hand_over(lin: Linearization, base: Linearization) -> None:
    """Give the point refinement returns the LU of ``base`` (the iterate whose
    LU gave the last Newton step) for its derivative's solves (NearbyLU),
    where that LU serves and is not heavy. A dense base drops its K (its
    condition estimate made): only the factors are held until the derivative."""
    lu = base.lu
    if lin.K is not None or base.heavy or not NearbyLU.serves(lu):
        return
    if isinstance(lu, DenseLU):
        lu.release_matrix()
    lin.nearby = lu


def _keep(lin: Linearization) -> None:
    """Prepare the point refinement returns for keeping until the derivative:
    K compact (:meth:`Linearization.compact`), or not kept at all where its
    factorization is heavy (``_KEEP_BYTES``: the derivative forms it again)."""
    if lin.heavy:
        lin.unfactor()
    else:
        lin.compact()


# Chord steps (Newton with the last factored K) allowed per refinement.
_CHORD_MAX = 3

# Largest programs whose items are refined together (:func:`refine_many`),
# in stored entries of A and order of K. Above, per-item overhead is a small
# part of refinement and the batch's arrays outgrow the caches: the dense QP
# (32,770 entries, order 391) refined 24 % slower together than one by one
# (16 items). And the batch holds every item's LU at once, where :func:`refine`
# holds one (the sparse QP's SuperLU factors, order 4,103, ~100 MB each).
_MANY_MAX_NNZ = 10_000
_MANY_MAX_ORDER = 1000


def batchable(structure: Structure) -> bool:
    """Whether items of this program are worked on in groups (refinement, the
    derivative's factorizations): ``_MANY_MAX_NNZ``, ``_MANY_MAX_ORDER``."""
    return (structure.pattern.order <= _MANY_MAX_ORDER
            and structure.a_rows.size <= _MANY_MAX_NNZ)


def refine_many(
    structure: Structure, As: list[CSC], A_vals: FloatArray, b: FloatArray, c: FloatArray,
    x: FloatArray, y: FloatArray, s: FloatArray, *, max_steps: int = 3,
    indices: list[int], differentiable: bool = True,
) -> list[Linearization]:
    """:func:`refine` for several items of one program (rows of the arrays;
    ``As[k]`` is item k's A, ``A_vals`` the values of all): the same steps,
    taken together.

    Refinement of a small program is a few dozen NumPy calls per residual
    evaluation, on arrays of a few hundred entries: per item, call overhead
    is most of its cost (QP, n = 20: 0.5 ms, of which the LU and its solves
    are ~0.05 ms). Here every evaluation of N covers all the items that take
    a step (:func:`_evaluate`); what stays per item is the LU and its solves.
    The path is :func:`refine`'s main one: the start, Newton steps with the
    LU of a regular K, chord steps. An item that leaves it (K singular or
    ill-conditioned, a Newton step that falls short above rounding level:
    where :func:`refine` tries pivots and least squares) is refined again
    from the solver's answer by :func:`refine` itself (handed the factored
    start where no step was taken yet), so every item ends where
    :func:`refine` would take it.
    """
    B = len(As)
    if B == 0:
        return []
    if not batchable(structure):
        return [refine(structure, As[k], b[k], c[k], x[k], y[k], s[k], max_steps=max_steps,
                       index=indices[k], differentiable=differentiable) for k in range(B)]
    lins = _start_many(structure, As, A_vals, b, c, x, y, s, indices)
    starts = list(lins)
    steps, chords = [0] * B, [0] * B
    base: list[Linearization | None] = [None] * B
    stopped, alone = [False] * B, [False] * B

    def running(k: int) -> bool:
        return (not (stopped[k] or alone[k]) and steps[k] < max_steps
                and lins[k].relative_residual > _REFINED)

    active = [k for k in range(B) if running(k)]
    while active:
        moves: list[tuple[int, FloatArray, bool]] = []  # (item, new z, chord step?)
        newton = [k for k in active if base[k] is None or chords[k] >= _CHORD_MAX]
        data = dict(zip(newton, values_many(structure, [lins[k] for k in newton]),
                        strict=True))
        for k in active:
            lin, prior = lins[k], base[k]
            if prior is not None and chords[k] < _CHORD_MAX:
                moves.append((k, lin.z + _chord_direction(prior, lin), True))
                continue
            base[k] = None
            lin.factor(data[k], compact=False)
            steps[k] += 1
            assert lin.lu is not None and lin.K is not None
            if lin.lu.singular or (lin.K.shape[0] <= _DENSE_LSTSQ_MAX
                                   and lin.condition > _COND_LIMIT):
                alone[k] = True  # least squares and pivots: refine's own path
                continue
            moves.append((k, lin.z + _newton_direction(lin, least_squares=False), False))
        trials = _points_many(structure, [lins[k] for k, _, _ in moves],
                              [z for _, z, _ in moves])
        for (k, _, chord), trial in zip(moves, trials, strict=True):
            lin = lins[k]
            if trial is not None and trial.relative_residual <= _DECISIVE * lin.relative_residual:
                if chord:
                    chords[k] += 1
                else:
                    base[k] = lin  # a plain LU Newton step: its LU serves chord steps
                lins[k] = trial
            elif lin.relative_residual <= _ROUNDING:
                stopped[k] = True  # short at N's rounding level: the point stands
            elif chord:
                base[k] = None  # the next round factors K here
            else:
                alone[k] = True  # refine would try pivots now
        active = [k for k in range(B) if running(k)]
    for k in range(B):
        if alone[k]:
            # From the start, as refine alone would go; where no step was taken
            # yet, the start (factored here) is handed over instead of formed again.
            start = lins[k] if lins[k] is starts[k] else None
            lins[k] = refine(structure, As[k], b[k], c[k], x[k], y[k], s[k],
                             max_steps=max_steps, index=indices[k], start=start,
                             differentiable=differentiable)
            continue
        lin, prior = lins[k], base[k]
        if differentiable and prior is not None:
            _hand_over(lin, prior)
        _keep(lin)
    return lins


def _points_many(structure: Structure, lins: list[Linearization],
                 zs: list[FloatArray]) -> list[Linearization | None]:
    """:func:`_point` for several items at once: the linearization of item
    ``lins[k]``'s program at ``zs[k]`` normalized to w = 1, None where not
    finite with w > 0."""
    out: list[Linearization | None] = [None] * len(lins)
    keep = [k for k, z in enumerate(zs) if np.isfinite(z).all() and z[-1] > 0]
    if not keep:
        return out
    n = lins[0].x.size
    Z = np.stack([zs[k] / zs[k][-1] for k in keep])
    group = [lins[k] for k in keep]
    As = [lin.A for lin in group]
    new = _linearizations(structure, As, stack_rows(As, "data"), stack_rows(group, "b"),
                          stack_rows(group, "c"), Z[:, :n], Z[:, n:-1],
                          [lin.index for lin in group])
    for k, lin in zip(keep, new, strict=True):
        out[k] = lin
    return out


def _chord_direction(base: Linearization, lin: Linearization) -> FloatArray:
    """dz with K₀ [dz; λ] = [−N(z); 0] at ``lin``'s z, K₀ factored at ``base``."""
    assert base.lu is not None and base.K is not None
    full = np.zeros(base.K.shape[0])
    full[: lin.z.size] = -lin.residual
    with np.errstate(all="ignore"):
        return base.lu.solve(full)[: lin.z.size]


def _chord_step(structure: Structure, base: Linearization,
                lin: Linearization) -> Linearization | None:
    """The Newton step from ``lin`` with ``base``'s LU (a chord step), kept
    under the same test as any step (it at least halves the relative
    residual); None otherwise, and then ``lin`` is factored after all.

    After the first Newton step from an accurate solver answer the iterate is
    within ~1e-8 of the solution and on the same piece of N (same D on the
    nonnegative rows), so K has barely moved and the old factors serve:
    measured on sparsemax (n = 50, B = 128, one thread) refinement factored K
    3.3 times per item (0.44 ms per LU and condition estimate at 0.19 ms) for
    2 Newton steps; now the second step is a chord step, one LU fewer per
    item. The derivative still factors the point refinement returns (the
    exact K there), so gradients are unchanged.
    """
    trial = _point(structure, lin, lin.z + _chord_direction(base, lin))
    if trial is not None and trial.relative_residual <= _DECISIVE * lin.relative_residual:
        return trial
    return None


def _start(structure: Structure, A: CSC, b: FloatArray, c: FloatArray, x: FloatArray,
           y: FloatArray, s: FloatArray, index: int) -> Linearization:
    """The linearization at the solver's answer, z = (x, v, 1) with v = y − s.

    The embedding needs y and s complementary (yᵀs = 0, so that
    Π_{K*}(y − s) = y); an interior-point answer is not: yᵢsᵢ = μ > 0 on every
    row. Then on a row of the nonnegative cone y − s keeps whichever of yᵢ, sᵢ
    is larger in absolute terms, and on badly scaled data that is the wrong
    one: at |b| = 1e9 (box LP, Clarabel) an active row had sᵢ = 0.52 (zero at
    the primal scale 1e9) against yᵢ = 0.5, so v = y − s made it inactive,
    and the relative residual of a right answer was 0.32 instead of 6e-10.
    So each of yᵢ and sᵢ is also measured against its own scale (the dual
    and primal scales of the residual, σ_d and σ_p): v'ᵢ = yᵢ/σ_d − sᵢ/σ_p,
    and the complementary pair σ_d·max(v'ᵢ, 0), σ_p·max(−v'ᵢ, 0) gives vᵢ.
    Where that changes the sign of some vᵢ, the balanced start is used only if
    its relative residual is decisively (``_DECISIVE``) lower: a marginal gain
    is no evidence that the active set it implies is the right one. (A
    sparsemax item, n = 50, Clarabel: y − s at 3.5e-4 converged in two Newton
    steps to 1e-15; the balanced start, at 2.7e-4, sat on a wrong piece and
    three factorizations left it there.) Elsewhere (always when y and s are
    complementary, as SCS's are) v = y − s. (Other cones keep y − s: their
    pieces are not a sign per row.)
    """
    return _start_many(structure, [A], A.data[None], b[None], c[None], x[None], y[None],
                       s[None], [index])[0]


def _start_many(structure: Structure, As: list[CSC], A_vals: FloatArray, b: FloatArray,
                c: FloatArray, x: FloatArray, y: FloatArray, s: FloatArray,
                indices: list[int]) -> list[Linearization]:
    """:func:`_start` for B items at once (rows of the arrays)."""
    v = y - s
    evaluated = _evaluate(structure, As, A_vals, b, c, x, v)
    scales = evaluated[5]
    rows = structure.dproj.nonneg
    scaled = y[:, rows] / scales[:, :1] - s[:, rows] / scales[:, 1:2]
    starts = _wrap(structure, As, b, c, x, v, evaluated, indices)
    differ = np.flatnonzero(~np.all((scaled > 0) == (v[:, rows] > 0), axis=1))
    if differ.size:
        vb = v[differ].copy()
        sd, sp_ = scales[differ, :1], scales[differ, 1:2]
        vb[:, rows] = sd * np.maximum(scaled[differ], 0.0) - sp_ * np.maximum(-scaled[differ], 0.0)
        balanced = _linearizations(structure, [As[k] for k in differ], A_vals[differ],
                                   b[differ], c[differ], x[differ], vb,
                                   [indices[k] for k in differ])
        for k, bal in zip(differ, balanced, strict=True):
            if bal.relative_residual <= _DECISIVE * starts[k].relative_residual:
                starts[k] = bal
    return starts


# A step is kept when it lowers the relative residual at least by this factor.
_DECISIVE = 0.5
# Relative residual below which a Newton step that falls short is rounding in
# N itself (measured floors: 1e-16 to 7e-15), not a wrong model: no other step
# is tried there (the least-squares one costs an SVD of K).
_ROUNDING = 1e-13


def _step(structure: Structure, lin: Linearization, *,
          budget: int) -> tuple[Linearization | None, int]:
    """One refinement step from ``lin`` (factored): the point it reaches, or
    None where no step reduces the residual decisively, and the number of
    extra factorizations it used (at most ``budget``).

    1. The Newton step, K [dz; λ] = [−N(z); 0] by LU; least squares where K is
       exactly or numerically singular (condition above ``_COND_LIMIT``; K of
       a Clarabel answer to a small PSD/exp-cone problem had condition 1.8e16,
       rank 38 of 39 from a non-unique CVXPY auxiliary variable: the LU step
       failed, the least-squares one went 1.5e-6 → 5e-12 → 4e-16, while the
       old order, LU then a pivot then least squares, spent the three
       factorizations and stopped at 7e-10; outputs 1e-10 off then, enough to
       put central differences of re-solves 7e-5 off the, correct, adjoint).
    2. Where the full Newton step falls short, the active set of the iterate
       is wrong: on the nonnegative rows of an LP, N is linear on each piece
       (a sign pattern of v) and the solver's answer can sit on a neighbouring
       piece, with one row too many or too few active. Such a piece is nearly
       degenerate: K has a nearly null direction, and along it lies the
       neighbouring piece's boundary, as along an edge in a simplex pivot.
       SCS's 1e-4 answers measured (6 LPs of the failure-injection family, one
       in ~1,000 draws, multipliers ~1e-4 or a row active to 4e-4): K's smallest
       singular value 1e-6…5e-8 of the largest; its direction, one way or the
       other, crossed the one wrong row first, and one Newton step from the
       middle of the next piece reached 1e-16 every time (x had been up to 1.1
       off: on an edge whose reduced cost was the tolerance). So each way along
       that direction (``_null_direction``) is tried: across the first
       boundary, to the middle of the next piece, one Newton step from there,
       kept if decisive.
    3. The same pivot along the Newton ray itself (the first sign change of a
       row of v on the full step), where budget is left.
    4. The minimum-norm least-squares step, singular values below the point's
       accuracy dropped (K is numerically singular, typically because
       CVXPY's auxiliary variables are not unique; a minimum-norm step still
       converges on the determined components).
    Each pivot costs a factorization, counted against ``budget``.
    """
    assert lin.lu is not None and lin.K is not None
    target = _DECISIVE * lin.relative_residual
    small = lin.K.shape[0] <= _DENSE_LSTSQ_MAX
    # Where K is numerically singular (as for the derivative: condition above
    # _COND_LIMIT) the LU step is rounding noise along the null direction; the
    # least-squares step is Newton's step on the determined components.
    least_squares = lin.lu.singular or (small and lin.condition > _COND_LIMIT)
    dz = _newton_direction(lin, least_squares=least_squares)
    trial = _point(structure, lin, lin.z + dz)
    if trial is not None and trial.relative_residual <= target:
        return trial, 0
    if lin.relative_residual <= _ROUNDING:
        return None, 0
    used = 0
    if structure.dproj.nonneg.size:
        null = _null_direction(lin)
        rays = [] if null is None else [(null, np.inf), (-null, np.inf)]
        for direction, reach in [*rays, (dz, 1.0)]:
            if used >= budget:
                break
            across = _across_boundary(structure, lin, direction, reach)
            if across is None:
                continue
            used += 1
            across.factor(compact=False)
            assert across.lu is not None
            step = _newton_direction(across, least_squares=across.lu.singular)
            pivoted = _point(structure, across, across.z + step)
            if pivoted is not None and pivoted.relative_residual <= target:
                return pivoted, used
    if not least_squares and small:
        dz = _newton_direction(lin, least_squares=True)
        trial = _point(structure, lin, lin.z + dz)
        if trial is not None and trial.relative_residual <= target:
            return trial, used
    return None, used


# Inverse-iteration sweeps for K's smallest singular direction, and the ratio
# of singular values below which that direction counts as nearly null.
_NULL_SWEEPS = 3
_NULL_RATIO = 1e-4


def _null_direction(lin: Linearization) -> FloatArray | None:
    """The z-part of K's right singular vector of the smallest singular value,
    by inverse iteration on KᵀK with the LU at hand (the SVD where K is
    exactly singular and small); None unless that singular value is below
    ``_NULL_RATIO`` of ‖K‖ (a nearly degenerate piece)."""
    assert lin.lu is not None and lin.K is not None
    N, size = lin.z.size, lin.K.shape[0]
    if lin.lu is _SINGULAR:  # certified null spaces: a null vector is at hand
        assert lin._null is not None
        return lin._null.N[:N, 0]
    if lin.lu.singular:
        if size > _DENSE_LSTSQ_MAX:
            return None
        _, S, Vt, _ = lin._svd()
        return Vt[-1, :N] if S[-1] <= _NULL_RATIO * S[0] else None
    u = np.random.default_rng(0).standard_normal(size)
    for _ in range(_NULL_SWEEPS):
        u = lin.lu.solve(lin.lu.solve(u, True), False)
        norm = float(np.linalg.norm(u))
        if not (np.isfinite(norm) and norm > 0):
            return None
        u /= norm
    sigma = float(np.linalg.norm(lin.K @ u))
    scale = float(abs(lin.K).max())  # dense or sparse K
    return u[:N] if sigma <= _NULL_RATIO * scale else None


def _newton_direction(lin: Linearization, *, least_squares: bool) -> FloatArray:
    """dz with K [dz; λ] = [−N(z); 0] (LU, or minimum-norm least squares)."""
    assert lin.lu is not None and lin.K is not None
    N = lin.z.size
    full = np.zeros(lin.K.shape[0])
    full[:N] = -lin.residual  # the border row and the SOC unknowns' rows are zero
    return (lin._lstsq(full, transpose=False) if least_squares else lin.lu.solve(full))[:N]


def _point(structure: Structure, lin: Linearization,
           z_new: FloatArray) -> Linearization | None:
    """The linearization at z_new / w (N is positively homogeneous: the
    embedding's solutions are rays, normalized to w = 1); None unless finite
    with w > 0."""
    new = _points_many(structure, [lin], [z_new])[0]
    if new is not None:
        # Where K was singular here, its null spaces seed the next point's (see
        # _nullspace._bordered_null): no SVD there unless the rank changed.
        new.hint = lin.hint_for_next()
    return new


def _across_boundary(structure: Structure, lin: Linearization, dz: FloatArray,
                     reach: float) -> Linearization | None:
    """The point in the middle of the next piece of N along the ray
    z + t·dz, 0 < t < ``reach``, across its first sign change of a
    nonnegative-cone entry of v (one row entering or leaving the active set);
    None if there is none. (The next piece ends at the second sign change, or
    at ``reach``, or where there is neither at twice the first.)"""
    rows = lin.x.size + structure.dproj.nonneg
    v, dv = lin.z[rows], dz[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = -v / dv
    t = np.sort(t[np.isfinite(t) & (t > 0) & (t < reach)])
    if not t.size:
        return None
    t_next = t[1] if t.size > 1 else min(reach, 2.0 * t[0])
    return _point(structure, lin, lin.z + 0.5 * (t[0] + t_next) * dz)
