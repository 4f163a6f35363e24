"""Hypothesis strategies: random DPP problems, feasible and bounded by construction.

Grammar of a generated problem (one vector variable x ∈ ℝⁿ, n ∈ 1..4, and, for
some draws, a PSD matrix variable X)::

    problem    := Minimize(f) | Maximize(−f)            s.t. constraint*
    f          := Σ wⱼ·termⱼ (1–3 terms)  +  μ‖x‖²  [+ ‖X − S‖²_F]
    term       := sum_squares(A) | norm(A, 1 | 2 | inf) | quad_over_lin(A, kᵀx + k₀)†
                | sum(huber(A, M)) | log_sum_exp(A) | sum(exp(A)) | −sum(log(A))
                | −sum(entr(A)) | lambda_max(L) | cᵀx
    constraint := A == e | A <= h | norm(A, 1 | 2 | inf) <= r | log_sum_exp(A) <= u
                | sum(exp(A)) <= u | L >> 0 | lambda_max(L) <= u | x >= lo
                | trace(X) + aᵀx <= h                   (only when X exists)
    A          := lin + q                                (q: a parameter vector)
    lin        := P @ x | C @ x | multiply(v, x) | x[idx] | lin + lin
                | hstack(lin, lin) | γ·lin               (random composition, depth ≤ 2)
    L          := F₀ + Σᵢ xᵢFᵢ                           (F₀ symmetric parameter,
                                                          Fᵢ constant symmetric, 2×2 or 3×3)

    † comes with the constraint kᵀx + k₀ >= δ (δ ∈ [0.05, 0.2]; kᵀx₀ + k₀ ≥ 0.5).

P, v, q, e, h, r, u, lo, F₀, S, a, c, M and (in half the draws) μ are
``cp.Parameter``s (r ``nonneg``; μ, M ``pos``; F₀, S ``symmetric``); C, k, γ,
Fᵢ and the weights wⱼ are constants (a parameter weight times a
parameter-dependent term would break DPP).

**Feasible by construction.** A point x₀ (and X₀ ≻ 0) is drawn first. Every
parameter that some constraint or domain depends on (e, h, r, u, lo, F₀ and the
offset q inside ``log``/``entr``) is computed from x₀ and the values of the
other parameters of the same batch item, so that x₀ satisfies every
inequality and cone constraint with a slack of at least 0.1 and every
equality exactly (Slater's condition holds; x₀ lies in the interior of every
atom's domain). A shared (unbatched) value of such a parameter is made valid
for every item at once (the worst case over the batch); an equality's
right-hand side is batched whenever its coefficients are.

**Bounded, with a unique solution.** μ‖x‖² (μ ≥ 0.1) makes f strongly convex
in x, and every term is bounded below by an affine function of x, so the
optimum exists and x* is unique; ‖X − S‖² does the same for X. Equality
constraints have fewer rows than n and random coefficients (full row rank,
so the multipliers are unique), and all data are continuous random draws,
so a generated instance is generic: the solution map is differentiable there
with probability one.

Hypothesis draws the *structure* (sizes, terms, constraints, which parameters
are batched, which duals are outputs) and a seed for the numeric data, so a
failing example shrinks to a small structure and is replayed exactly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = [
    "CONSTRAINT_KINDS",
    "FUZZ_EXAMPLES",
    "TERM_KINDS",
    "Generated",
    "degenerate_problems",
    "fuzz_settings",
    "generated_problems",
]

TERM_KINDS = ("sum_squares", "norm1", "norm2", "norm_inf", "quad_over_lin", "huber",
              "log_sum_exp", "exp", "log", "entr", "lambda_max", "linear")
CONSTRAINT_KINDS = ("eq", "ineq", "norm", "log_sum_exp", "exp", "psd", "lambda_max", "lower",
                    "trace")
PSD_KINDS = frozenset({"lambda_max", "psd"})
SLACK = (0.1, 1.0)  # how strictly x₀ satisfies each inequality


@dataclass
class _Dependent:
    """A parameter whose value is computed from x₀ and other parameters' values.

    ``required(values) -> array`` gives, for one item (``values`` maps parameter
    id → value, every free parameter assigned), the bound the value must meet:
    ``value >= required + slack`` ('geq'), ``value <= required − slack`` ('leq')
    or ``value == required`` ('eq').
    """

    param: cp.Parameter
    required: Callable[[], np.ndarray]
    sense: str  # 'geq', 'leq', 'eq'
    deps: tuple[cp.Parameter, ...]


@dataclass
class Generated:
    """One generated instance: the problem, its layer arguments and a batch of values.

    The attribute names match :class:`problems.Case` where they overlap, so the
    oracles of ``helpers`` apply unchanged.
    """

    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[Any]
    values: list[np.ndarray]
    batched: tuple[bool, ...]
    batch_size: int  # B (1 when nothing is batched)
    symmetric: tuple[int, ...]
    has_psd: bool
    description: str
    primal: list[cp.Variable] = field(default_factory=list)
    x0: np.ndarray | None = None  # strictly feasible for every item
    gp: bool = False

    @property
    def any_batched(self) -> bool:
        return any(self.batched)

    @property
    def solvers(self) -> tuple[str, ...]:
        return ("Clarabel", "SCS") if self.has_psd else ("Clarabel", "SCS", "ECOS")

    def item(self, i: int) -> list[np.ndarray]:
        """The parameter values of batch item ``i`` (no batch axis)."""
        return [v[i] if b else v for v, b in zip(self.values, self.batched, strict=True)]

    def item_outputs(self, outs, i: int):
        return [o[i] for o in outs] if self.any_batched else list(outs)

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{p.name()}{'[B]' if b else ''}{tuple(p.shape)}"
            for p, b in zip(self.parameters, self.batched, strict=True)
        )
        outs = ", ".join(getattr(v, "name", lambda: "dual")() for v in self.variables)
        return (f"Generated(B={self.batch_size if self.any_batched else 'none'}; "
                f"{self.description}; parameters: {shapes}; outputs: {outs})")


class _Builder:
    """Builds one problem from drawn choices and a numeric seed."""

    def __init__(self, draw, n: int, rng: np.random.Generator) -> None:
        self.draw, self.n, self.rng = draw, n, rng
        self.x = cp.Variable(n, name="x")
        self.x0 = rng.uniform(-0.8, 0.8, n)
        self.free: list[tuple[cp.Parameter, Callable[[], np.ndarray]]] = []
        self.dependent: list[_Dependent] = []
        self.symmetric: list[cp.Parameter] = []
        self.has_psd = False
        self.X: cp.Variable | None = None
        self.X0: np.ndarray | None = None
        self.implied: list[cp.Constraint] = []  # constraints that come with a term

    # -- parameters ---------------------------------------------------------

    def free_param(self, shape, sampler, **attrs) -> cp.Parameter:
        p = cp.Parameter(shape, **attrs)
        self.free.append((p, sampler))
        return p

    def dependent_param(self, shape, required, sense, deps, **attrs) -> cp.Parameter:
        p = cp.Parameter(shape, **attrs)
        self.dependent.append(_Dependent(p, required, sense, tuple(deps)))
        return p

    # -- affine maps ----------------------------------------------------------

    def linear(self, m: int, depth: int = 0) -> tuple[cp.Expression, list[cp.Parameter], str]:
        """A random affine-in-x, parameter-affine map ℝⁿ → ℝᵐ without offset."""
        draw, rng, n, x = self.draw, self.rng, self.n, self.x
        options = ["P@x", "C@x", "x[idx]"] + (["v*x"] if m == n else [])
        if depth < 2:
            options += ["sum", "scale"] + (["hstack"] if m >= 2 else [])
        kind = draw(st.sampled_from(options))
        if kind == "P@x":
            P = self.free_param((m, n), lambda: rng.standard_normal((m, n)))
            return P @ x, [P], "P@x"
        if kind == "C@x":
            C = rng.standard_normal((m, n))
            return C @ x, [], "C@x"
        if kind == "x[idx]":
            idx = rng.integers(0, n, m)
            return x[idx], [], "x[idx]"
        if kind == "v*x":
            v = self.free_param(n, lambda: rng.uniform(0.5, 1.5, n) * rng.choice([-1, 1], n))
            return cp.multiply(v, x), [v], "v*x"
        if kind == "sum":
            a, pa, da = self.linear(m, depth + 1)
            b, pb, db = self.linear(m, depth + 1)
            return a + b, pa + pb, f"({da} + {db})"
        if kind == "scale":
            gamma = float(rng.uniform(0.5, 2.0) * rng.choice([-1, 1]))
            a, pa, da = self.linear(m, depth + 1)
            return gamma * a, pa, f"γ·{da}"
        k = draw(st.integers(1, m - 1))
        a, pa, da = self.linear(k, depth + 1)
        b, pb, db = self.linear(m - k, depth + 1)
        return cp.hstack([a, b]), pa + pb, f"hstack({da}, {db})"

    def evaluate(self, expr: cp.Expression) -> np.ndarray:
        """Value of ``expr`` at x₀ (X₀) with the parameters' current values."""
        self.x.value = self.x0
        if self.X is not None:
            self.X.value = self.X0
        return np.asarray(expr.value, dtype=float)

    def affine(self, m: int, domain: bool = False) -> tuple[cp.Expression, list, str]:
        """lin + q. With ``domain``, q makes the map positive at x₀ (for log, entr)."""
        lin, params, desc = self.linear(m)
        if domain:
            q = self.dependent_param(m, lambda: -self.evaluate(lin), "geq", params)
        else:
            q = self.free_param(m, lambda: self.rng.standard_normal(m))
        return lin + q, [*params, q], f"{desc} + q"

    def lmi(self) -> tuple[cp.Expression, cp.Parameter, int, Callable[[], np.ndarray]]:
        """L(x) = F₀ + Σ xᵢFᵢ with constant symmetric Fᵢ; returns L, F₀, k and Σ x₀ᵢFᵢ."""
        rng, n = self.rng, self.n
        k = self.draw(st.integers(2, 3))
        Fs = []
        for _ in range(n):
            M = rng.standard_normal((k, k))
            Fs.append((M + M.T) / 2)
        self.has_psd = True
        shift = sum(xi * F for xi, F in zip(self.x0, Fs, strict=True))
        F0 = cp.Parameter((k, k), symmetric=True)
        self.symmetric.append(F0)
        expr = F0 + sum(self.x[i] * Fs[i] for i in range(n))
        return expr, F0, k, lambda: np.asarray(shift)

    def spd(self, k: int, low: float = 0.3) -> np.ndarray:
        Q, _ = np.linalg.qr(self.rng.standard_normal((k, k)))
        return (Q * self.rng.uniform(low, low + 1.5, k)) @ Q.T

    # -- objective terms --------------------------------------------------------

    def term(self, kind: str) -> tuple[Any, str]:
        rng, draw = self.rng, self.draw
        m = draw(st.integers(1, 4))
        if kind == "sum_squares":
            A, _, d = self.affine(m)
            return cp.sum_squares(A), f"sum_squares({d})"
        if kind in ("norm1", "norm2", "norm_inf"):
            p = {"norm1": 1, "norm2": 2, "norm_inf": "inf"}[kind]
            A, _, d = self.affine(m)
            return cp.norm(A, p), f"norm({d}, {p})"
        if kind == "quad_over_lin":
            A, _, d = self.affine(m)
            kvec = rng.standard_normal(self.n)
            k0 = float(rng.uniform(0.5, 1.5) - kvec @ self.x0)  # kᵀx₀ + k₀ ≥ 0.5
            # Keep the denominator away from 0: at kᵀx + k₀ = 0 (allowed by the
            # closure of the domain when A = 0 there) CVXPY's own evaluation of the
            # objective is 0/0, which would blind the forward oracle.
            self.implied.append(kvec @ self.x + k0 >= float(rng.uniform(0.05, 0.2)))
            return cp.quad_over_lin(A, kvec @ self.x + k0), f"quad_over_lin({d}, kᵀx + k₀)"
        if kind == "huber":
            A, _, d = self.affine(m)
            M = self.free_param((), lambda: np.array(rng.uniform(0.5, 2.0)), pos=True)
            return cp.sum(cp.huber(A, M)), f"sum(huber({d}, M))"
        if kind == "log_sum_exp":
            A, _, d = self.affine(m)
            return cp.log_sum_exp(A), f"log_sum_exp({d})"
        if kind == "exp":
            A, _, d = self.affine(m)
            return cp.sum(cp.exp(A)), f"sum(exp({d}))"
        if kind == "log":
            A, _, d = self.affine(m, domain=True)
            return -cp.sum(cp.log(A)), f"-sum(log({d}))"
        if kind == "entr":
            A, _, d = self.affine(m, domain=True)
            return -cp.sum(cp.entr(A)), f"-sum(entr({d}))"
        if kind == "lambda_max":
            L, F0, k, _ = self.lmi()
            self.free.append((F0, lambda: _sym(rng, k)))
            return cp.lambda_max(L), f"lambda_max(F0 + Σ xᵢFᵢ, {k}×{k})"
        c = self.free_param(self.n, lambda: rng.standard_normal(self.n))
        return c @ self.x, "cᵀx"

    # -- constraints -------------------------------------------------------------

    def constraint(self, kind: str, eq_rows: int) -> tuple[cp.Constraint | None, str, int]:
        """One constraint x₀ satisfies strictly (equalities exactly); rows used by eq."""
        rng, draw, n = self.rng, self.draw, self.n
        if kind == "eq":
            room = n - 1 - eq_rows
            if room < 1:
                return None, "", 0
            p = draw(st.integers(1, room))
            E = self.free_param((p, n), lambda: rng.standard_normal((p, n)))
            expr = E @ self.x
            e = self.dependent_param(p, lambda: self.evaluate(expr), "eq", [E])
            return expr == e, f"E@x == e ({p} rows)", p
        m = draw(st.integers(1, 4))
        if kind == "ineq":
            lin, params, d = self.linear(m)
            h = self.dependent_param(m, lambda: self.evaluate(lin), "geq", params)
            return lin <= h, f"{d} <= h", 0
        if kind == "norm":
            p = draw(st.sampled_from([1, 2, "inf"]))
            A, params, d = self.affine(m)
            expr = cp.norm(A, p)
            r = self.dependent_param((), lambda: self.evaluate(expr), "geq", params,
                                     nonneg=True)
            return expr <= r, f"norm({d}, {p}) <= r", 0
        if kind in ("log_sum_exp", "exp"):
            A, params, d = self.affine(m)
            expr = cp.log_sum_exp(A) if kind == "log_sum_exp" else cp.sum(cp.exp(A))
            u = self.dependent_param((), lambda: self.evaluate(expr), "geq", params)
            name = "log_sum_exp" if kind == "log_sum_exp" else "sum(exp"
            return expr <= u, f"{name}({d}){')' if kind == 'exp' else ''} <= u", 0
        if kind == "psd":
            L, F0, k, shift = self.lmi()
            self.free.append((F0, lambda: self.spd(k) - shift()))
            return L >> 0, f"F0 + Σ xᵢFᵢ >> 0 ({k}×{k})", 0
        if kind == "lambda_max":
            L, F0, k, _ = self.lmi()
            self.free.append((F0, lambda: _sym(rng, k)))
            expr = cp.lambda_max(L)
            u = self.dependent_param((), lambda: self.evaluate(expr), "geq", [F0])
            return expr <= u, f"lambda_max(F0 + Σ xᵢFᵢ) <= u ({k}×{k})", 0
        if kind == "lower":
            lo = self.dependent_param(n, lambda: self.x0.copy(), "leq", [])
            return self.x >= lo, "x >= lo", 0
        assert kind == "trace"
        if self.X is None:
            return None, "", 0
        a = self.free_param(n, lambda: rng.standard_normal(n))
        expr = cp.trace(self.X) + a @ self.x
        h = self.dependent_param((), lambda: self.evaluate(expr), "geq", [a])
        return expr <= h, "trace(X) + aᵀx <= h", 0


def _sym(rng: np.random.Generator, k: int) -> np.ndarray:
    M = rng.standard_normal((k, k))
    return (M + M.T) / 2


def _assign(values: dict[int, np.ndarray], params: list[cp.Parameter]) -> None:
    for p in params:
        p.value = values[p.id]


@st.composite
def generated_problems(
    draw,
    *,
    psd: bool | None = None,
    max_batch: int = 3,
    batched: bool | None = None,
    duals: bool = True,
) -> Generated:
    """A random feasible, bounded DPP problem with a batch of parameter values.

    ``psd``: True/False forces/forbids PSD cones (lambda_max, LMIs, X ⪰ 0);
    ``batched``: True/False forces/forbids a batch axis; ``duals``: whether
    constraint duals may be among the outputs.
    """
    n = draw(st.integers(1, 4), label="n")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    b = _Builder(draw, n, rng)

    term_kinds = [k for k in TERM_KINDS if psd is not False or k not in PSD_KINDS]
    con_kinds = [k for k in CONSTRAINT_KINDS if psd is not False or k not in PSD_KINDS]
    terms = draw(st.lists(st.sampled_from(term_kinds), min_size=1, max_size=3), label="terms")
    kinds = draw(st.lists(st.sampled_from(con_kinds), max_size=3), label="constraints")
    use_X = draw(st.booleans(), label="matrix variable X") if psd is not False else False
    if psd is True and not (use_X or PSD_KINDS & {*terms, *kinds}):
        use_X = True

    parts: list[cp.Expression] = []
    described: list[str] = []
    for kind in terms:
        expr, desc = b.term(kind)
        # A parameter weight would multiply a parameter-dependent term (not DPP).
        parts.append(float(rng.uniform(0.3, 2.0)) * expr)
        described.append(f"w·{desc}")
    if draw(st.booleans(), label="μ is a parameter"):
        mu: Any = b.free_param((), lambda: np.array(rng.uniform(0.1, 1.0)), pos=True)
    else:
        mu = float(rng.uniform(0.1, 1.0))
    parts.append(mu * cp.sum_squares(b.x))
    described.append("μ‖x‖²")
    if use_X:
        k = draw(st.integers(2, 3), label="order of X")
        b.X = cp.Variable((k, k), PSD=True, name="X")
        b.X0 = b.spd(k)
        b.has_psd = True
        S = b.free_param((k, k), lambda: _sym(rng, k), symmetric=True)
        b.symmetric.append(S)
        parts.append(cp.sum_squares(b.X - S))
        described.append(f"‖X − S‖² ({k}×{k}, X PSD)")

    constraints: list[cp.Constraint] = list(b.implied)
    eq_rows = 0
    for kind in kinds:
        con, desc, rows = b.constraint(kind, eq_rows)
        if con is not None:
            constraints.append(con)
            described.append(f"s.t. {desc}")
            eq_rows += rows

    f = sum(parts[1:], parts[0])
    maximize = draw(st.booleans(), label="maximize")
    problem = cp.Problem(cp.Maximize(-f) if maximize else cp.Minimize(f), constraints)
    assert problem.is_dpp(), problem

    # Which parameters carry the batch axis.
    parameters = problem.parameters()
    order = {p.id: i for i, p in enumerate(parameters)}
    if batched is False:
        flags = [False] * len(parameters)
    else:
        flags = [draw(st.booleans(), label=f"batched[{i}]") for i in range(len(parameters))]
        if batched is True and parameters and not any(flags):
            flags[draw(st.integers(0, len(parameters) - 1))] = True
    # An equality's right-hand side is batched whenever its coefficients are.
    for dep in b.dependent:
        if dep.sense == "eq" and any(flags[order[p.id]] for p in dep.deps):
            flags[order[dep.param.id]] = True
    B = draw(st.integers(1, max_batch), label="batch size") if any(flags) else 1

    values = _sample_values(b, parameters, flags, B)

    # Outputs: every primal variable, and some constraint duals, in random order.
    primal = [b.x] + ([b.X] if b.X is not None else [])
    outputs: list[Any] = list(primal)
    if duals:
        for con in constraints:
            if draw(st.booleans(), label="dual output"):
                outputs.append(con.dual_variables[0])
    perm = draw(st.permutations(range(len(outputs))), label="output order")
    outputs = [outputs[i] for i in perm]

    sense = "Maximize(−f)" if maximize else "Minimize(f)"
    description = f"n={n}, seed={seed}, {sense}, f = " + " + ".join(described)
    symmetric = tuple(order[p.id] for p in b.symmetric if p.id in order)
    return Generated(problem, parameters, outputs, values, tuple(flags), B, symmetric,
                     b.has_psd, description, primal, b.x0)


def _sample_values(b: _Builder, parameters, flags, B) -> list[np.ndarray]:
    """Values for every parameter: free ones drawn, dependent ones computed per item."""
    order = {p.id: i for i, p in enumerate(parameters)}
    per_item: list[dict[int, np.ndarray]] = [{} for _ in range(B)]
    shared: dict[int, np.ndarray] = {}
    for p, sampler in b.free:
        if p.id not in order:
            continue
        if flags[order[p.id]]:
            for i in range(B):
                per_item[i][p.id] = np.asarray(sampler(), dtype=float)
        else:
            shared[p.id] = np.asarray(sampler(), dtype=float)
    for i in range(B):
        per_item[i].update(shared)
    for dep in b.dependent:
        required = []
        for i in range(B):
            _assign(per_item[i], list(dep.deps))
            required.append(np.asarray(dep.required(), dtype=float))
        lo, hi = SLACK
        if flags[order[dep.param.id]]:
            for i in range(B):
                slack = b.rng.uniform(lo, hi, np.shape(required[i]))
                per_item[i][dep.param.id] = {
                    "geq": required[i] + slack, "leq": required[i] - slack, "eq": required[i]
                }[dep.sense]
        else:
            slack = b.rng.uniform(lo, hi, np.shape(required[0]))
            value = {"geq": np.max(required, axis=0) + slack,
                     "leq": np.min(required, axis=0) - slack,
                     "eq": required[0]}[dep.sense]
            for i in range(B):
                per_item[i][dep.param.id] = value
    values = []
    for p in parameters:
        if flags[order[p.id]]:
            values.append(np.stack([per_item[i][p.id] for i in range(B)]))
        else:
            values.append(per_item[0][p.id])
    # Leave no value behind on the problem: tests set what they need.
    for p in parameters:
        p.value = None
    return values


@st.composite
def degenerate_problems(draw) -> Generated:
    """A generated problem (no PSD cones) with a *duplicated* equality constraint
    E₁x == e₁, E₂x == e₂, where E₂ = E₁ and e₂ = e₁ = E₁x₀ in every item.

    The solution map has no derivative there: the duals of the pair are not
    unique (only their sum is), and perturbing e₁ alone makes the problem
    infeasible. Both duals are outputs. The pair passes through the strictly
    feasible x₀, so every item stays feasible.
    """
    g = draw(generated_problems(psd=False, duals=False))
    x = g.primal[0]
    n = x.shape[0]
    p = draw(st.integers(1, n), label="rows of E₁")
    B = g.batch_size if g.any_batched else draw(st.integers(1, 3), label="batch size")
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed of E"))
    E = rng.standard_normal((B, p, n))
    e = E @ g.x0
    E1, e1 = cp.Parameter((p, n)), cp.Parameter(p)
    E2, e2 = cp.Parameter((p, n)), cp.Parameter(p)
    c1, c2 = E1 @ x == e1, E2 @ x == e2
    problem = cp.Problem(g.problem.objective, [*g.problem.constraints, c1, c2])
    parameters = [*g.parameters, E1, e1, E2, e2]
    values = [*g.values, E, e, E.copy(), e.copy()]
    batched = (*g.batched, True, True, True, True)
    outputs = [x, c1.dual_variables[0], c2.dual_variables[0]]
    return Generated(problem, parameters, outputs, values, batched, B, g.symmetric, False,
                     g.description + f" + E₁x == e₁ twice ({p} rows)", g.primal, g.x0)


# -- example counts ------------------------------------------------------------

# `CONELAYERS_FUZZ_EXAMPLES=N` runs every property of test_fuzz.py and
# test_failure_injection.py on N generated examples, with fresh random draws
# (the long profile); unset, each property runs its small default count,
# derandomized so that the suite is reproducible (the CI profile).
FUZZ_EXAMPLES = int(os.environ.get("CONELAYERS_FUZZ_EXAMPLES", "0") or 0)

# Building a CVXPY problem and canonicalizing it takes tens of milliseconds per
# example, far above Hypothesis's data-generation budget: `too_slow` would fire
# on the generator's cost, not on a defect. No other health check is suppressed.
_SLOW_GENERATION = [HealthCheck.too_slow]
settings.register_profile(
    "conelayers-ci", deadline=None, derandomize=True, database=None,
    suppress_health_check=_SLOW_GENERATION, print_blob=True,
)
settings.register_profile(
    "conelayers-long", deadline=None, derandomize=False, database=None,
    suppress_health_check=_SLOW_GENERATION, print_blob=True,
)


def fuzz_settings(default_examples: int) -> settings:
    """Settings of one property: the CI profile with ``default_examples``, or the
    long profile with ``CONELAYERS_FUZZ_EXAMPLES`` examples."""
    if FUZZ_EXAMPLES:
        return settings(settings.get_profile("conelayers-long"), max_examples=FUZZ_EXAMPLES)
    return settings(settings.get_profile("conelayers-ci"), max_examples=default_examples)
