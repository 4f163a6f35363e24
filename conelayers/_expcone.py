"""Euclidean projection onto the exponential cone and its Jacobian, to machine precision.

The cone (SCS's and diffcp's convention) and its dual are

    K   = cl{(x, y, z) : y > 0, y·e^(x/y) ≤ z},
    K*  = cl{(u, v, w) : u < 0, −u·e^(v/u) ≤ e·w},

and the polar cone is K° = −K* = cl{(x, y, z) : x > 0, x·e^(y/x − 1) ≤ −z}. Every v splits
uniquely as v = p + d with p = Π_K(v) ∈ K, d = Π_K°(v) ∈ K°, ⟨p, d⟩ = 0 (Moreau), and
conversely any such split gives the projection. With v = (x₀, y₀, z₀) there are four cases:

1. v ∈ K: p = v, J = I.
2. v ∈ K°: p = 0, J = 0.
3. x₀ ≤ 0 and y₀ ≤ 0 (and neither of the above): p = (x₀, 0, max(z₀, 0)), d = (0, y₀, min(z₀, 0)),
   J = diag(1, 0, 1{z₀ > 0}).
4. Otherwise (x₀ > 0 or y₀ > 0) p lies on the smooth part of ∂K and d on that of ∂K°:

       p = α·(ρ, 1, e^ρ),   d = β·(1, 1 − ρ, −e^(−ρ)),   α, β > 0.

   Both families are orthogonal for every ρ (ρ + 1 − ρ − 1 = 0), so all that is left is
   p + d = v. Its first two rows are linear in (α, β) with determinant −Q(ρ),
   Q(ρ) = ρ² − ρ + 1 = (ρ − ½)² + ¾ > 0:

       α = ((ρ − 1)x₀ + y₀) / Q(ρ) = x₀(ρ − a) / Q(ρ),   a = 1 − y₀/x₀   (x₀ > 0),
       β = (x₀ − ρy₀) / Q(ρ)       = y₀(b − ρ) / Q(ρ),   b = x₀/y₀       (y₀ > 0),

   so α, β > 0 exactly on the open interval ρ ∈ (a, b) (a = −∞ when x₀ ≤ 0, b = +∞ when
   y₀ ≤ 0). The third row is the univariate equation of H. A. Friberg, "Projection onto the
   exponential cone: a univariate root-finding problem" (Optim. Methods Softw., 2023):

       g(ρ) = α(ρ)e^ρ − β(ρ)e^(−ρ) − z₀ = p_z − |d_z| − z₀ = 0.

   At ρ = a, β = x₀ and g(a) = −x₀e^(−a) − z₀ < 0 exactly when v ∉ K°; at ρ = b, α = y₀ and
   g(b) = y₀e^b − z₀ > 0 exactly when v ∉ K. The root is unique (ρ = p_x/p_y recovers it
   from the unique projection), so g changes sign once on (a, b).

Accuracy. Any ρ in (a, b) gives an exact Moreau split of v' = v + (0, 0, g(ρ)), so
‖p(ρ) − Π_K(v)‖ ≤ |g(ρ)| (projections are nonexpansive): what matters is a residual at the
level of rounding, not an accurate ρ. Three things spoil that in a plain Newton iteration on
ρ (and limit SCS's and diffcp's projections to about 1e-6..1e-9), and are avoided here:

* Scale. Π_K is positively homogeneous, so v is first scaled by a power of two (exactly) to
  max|vᵢ| ∈ [½, 1), and all tolerances are absolute.
* Resolution near an end of (a, b). When the root is close to a, α ∝ ρ − a is tiny while e^ρ
  is large. For v = (0.05, −1, 1): a = 21, ρ − a ≈ 6·10⁻⁶, α ≈ 8·10⁻¹⁰, p_z ≈ 1; ρ itself is
  only known to ulp(21) ≈ 4·10⁻¹⁵, so ρ − a and p_z = x₀(ρ − a)e^ρ/Q(ρ) only to ~10⁻⁹. We
  therefore solve for the offset τ = ρ − a ≥ 0 from a (or τ = b − ρ from b, when the root is
  in the half of (a, b) next to b) and form α = x₀τ/Q (β = y₀τ/Q) from it, with full relative
  accuracy however small τ is. (Rounding a = 1 − y₀/x₀ itself perturbs y₀ by
  eps·(|y₀| + x₀) only: a backward error.)
* Cancellation and overflow in g. We solve F(ρ) = 0 with F = log(p_z/(|d_z| + z₀)) for
  z₀ ≥ 0 and F = log((p_z − z₀)/|d_z|) for z₀ < 0: F has the sign of g, no argument is a
  difference of nearly equal numbers, the quotient is ≈ 1 near the root (one rounding), and
  far from it the logarithms are formed from log α + ρ etc., which cannot overflow.

The bracket comes from Friberg's bounds (via the distances from v to simple points of K and
K°), plus logarithmic versions of them that stay tight when x₀ or y₀ is tiny, and is checked
by the sign of F at its ends. The iteration is Newton's method in τ, or in log τ where
F ≈ log τ + const (the quantity ∝ τ alone under the logarithm and τ < 1), safeguarded by
bisection; it stops when |F| ≤ 4·eps, i.e. when the z-row of p + d = v holds to a few ulps,
typically after 4–10 steps. Far tails (a ≥ 500 or b ≤ −500) would need α or β below the
smallest double; there p = (0, 0, max(z₀, 0)) and p = (x₀, y₀, y₀e^b) are exact to e^(−500).

Speed. The projection is called at every refinement iterate of the derivative engine, on
batches of a few dozen cones, where the cost is the number of NumPy operations rather than
arithmetic. So the iteration above first runs as a fast path: the same steps from the same
start, but without checking the bracket first (two evaluations of F that matter only where
rounding has put the root just outside it; a bracket [0, 0] in τ, where the root is closer
to a or b than their ulp, becomes [0, 1], what the check makes of it when G(1) > 0), and with
F evaluated by only the branches that regular points take (|ρ| ≤ 700, no subnormal or
infinite intermediate), specialised to the batch when all its points measure from the same
end and have z₀ of one sign. A point is accepted only by the test above, at a regular point,
where F is the same number; every other point (a wrong bracket, an irregular point, a
collapsed bracket, more than 12 steps) is solved again from scratch by the checked iteration
with the general F. Wherever the bracket holds, the fast path therefore changes no bit of the
result (the tests check this against the checked iteration alone); where rounding has put the
root just outside it, either result passes the same test. On the ``logistic`` benchmark (60
cones per call, all in case 4) it needs about 4 evaluations of F per point, and no point goes
to the checked iteration.

Jacobian (case 4). p solves min ½‖p − v‖² s.t. φ(p) = y e^(x/y) − z ≤ 0 with the constraint
active and multiplier μ = |d_z| = βe^(−ρ) > 0. Differentiating the KKT conditions
p − v + μ∇φ(p) = 0, φ(p) = 0 gives

    [I + μ∇²φ(p)   n] [dp]   [dv]
    [nᵀ            0] [dμ] = [ 0],        n = ∇φ(p) = e^ρ·(1, 1 − ρ, −e^(−ρ)) ∥ d,

and J is the top-left 3×3 block of the inverse: J = H⁻¹ − H⁻¹nnᵀH⁻¹/(nᵀH⁻¹n),
H = I + μ∇²φ(p). Here ∇²φ(p) = (e^ρ/α)·wwᵀ with w = (1, −ρ, 0), so H = I + κwwᵀ, κ = β/α.
Rather than solving it numerically we use its structure: w ⊥ p, n ⊥ p, so Jp = p and Jn = 0
(indeed v + εp = (1 + ε)p + d and v + εd = p + (1 + ε)d), and on the remaining unit direction
e = p̂ × n̂ the Schur complement gives eᵀJe = 1/(eᵀHe). Hence

    J = p̂p̂ᵀ + λ·eeᵀ,   λ = 1/(1 + κ(w·e)²),
    (w·e)² = e^(−2ρ)‖(ρ, 1, e^ρ)‖² / ‖(1, 1 − ρ, −e^(−ρ))‖²
           = (1 + ρ² + e^(2ρ)) / (1 + e^(2ρ)(1 + (1 − ρ)²)),

symmetric with eigenvalues 1, λ, 0 in [0, 1] by construction, and well defined in the limits
α → 0 (λ → 0) and β → 0 (λ → 1). It depends on v only through ρ and α/β, and is invariant to
scaling v (Π_K is homogeneous of degree one). The code forms e ∥ p × n in closed form and
(w·e)² = ‖P‖²/‖N‖² from the rescaled P ∥ p, N ∥ n it uses anyway. The tests check J against
the KKT system solved with ``np.linalg.solve``, against finite differences, and against the
formula evaluated with normalized vectors and ``np.cross``.
"""

from __future__ import annotations

import numpy as np

from ._typing import FloatArray

__all__ = ["dproject_exp", "project_exp"]

# Offsets a ≥ _TAIL or b ≤ −_TAIL: α (or β) < e^(−500), and p takes its limit form.
_TAIL = 500.0
# |ρ| above which e^ρ is formed in log space.
_EXP_SAFE = 700.0
_MAX_ITER = 100
# Steps of the fast iteration before a point is left to the safeguarded one.
_FAST_ITER = 12
_EPS = np.finfo(np.float64).eps
_LOG3 = float(np.log(3.0))


def project_exp(v: FloatArray) -> FloatArray:
    """Euclidean projection onto the exponential cone, row by row.

    Parameters
    ----------
    v : ndarray of shape (p, 3)
        Points (x, y, z).

    Returns
    -------
    ndarray of shape (p, 3)
        Π_K(v) for K = cl{(x, y, z) : y > 0, y·e^(x/y) ≤ z}.
    """
    proj, _, _, _ = _project(v)
    return proj


def dproject_exp(v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Projection onto the exponential cone and its Jacobian, row by row.

    Parameters
    ----------
    v : ndarray of shape (p, 3)
        Points (x, y, z).

    Returns
    -------
    proj : ndarray of shape (p, 3)
        Π_K(v).
    jac : ndarray of shape (p, 3, 3)
        DΠ_K(v), symmetric with eigenvalues in [0, 1]. At the nonsmooth points (the boundaries
        between the four cases) it is one of the one-sided limits.
    """
    proj, case, rho, ratio = _project(v)
    p = proj.shape[0]
    c4 = case == 4
    if p and np.count_nonzero(c4) == p:  # the common case, without the masked assignments
        return proj, _boundary_jacobian(rho, ratio)
    jac = np.zeros((p, 3, 3))
    jac[case == 1] = np.eye(3)
    c3 = case == 3
    jac[c3, 0, 0] = 1.0
    jac[c3, 2, 2] = (v[c3, 2] > 0).astype(np.float64)
    if c4.any():
        jac[c4] = _boundary_jacobian(rho[c4], ratio[c4])
    jac[case == 0] = np.nan
    return proj, jac


def _project(v: FloatArray) -> tuple[FloatArray, np.ndarray, FloatArray, FloatArray]:
    """Projection, case (1–4), and for case 4 the root ρ and α/β, per row of ``v``."""
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"expected an array of shape (p, 3), got {v.shape}")
    p = v.shape[0]
    # Rows with a NaN or an infinity give NaN (case 0); they are computed as zeros meanwhile.
    finite = np.asarray(np.isfinite(v).all(axis=1))
    # Exact rescaling by a power of two: max|vᵢ| ∈ [½, 1) (rows of zeros stay zero).
    u = np.where(finite[:, None], v, 0.0)
    _, expo = np.frexp(np.abs(u).max(axis=1, initial=0.0))
    scale = np.ldexp(1.0, expo)
    scale[scale == 0] = 1.0
    u = u / scale[:, None]
    x, y, z = u[:, 0], u[:, 1], u[:, 2]

    in_k = _in_exp(x, y, z)
    in_polar = ~in_k & _in_polar(x, y, z)
    c3 = ~in_k & ~in_polar & (x <= 0) & (y <= 0)
    if p and not np.count_nonzero(in_k | in_polar | c3) and np.count_nonzero(finite) == p:
        # All in case 4 (the common case), without the masked assignments.
        proj, rho, ratio = _solve_boundary(x, y, z)
        return proj * scale[:, None], np.full(p, 4, dtype=np.int8), rho, ratio
    case = np.full(p, 4, dtype=np.int8)
    case[in_k] = 1
    case[in_polar] = 2
    case[c3] = 3
    case[~finite] = 0

    proj = np.zeros_like(u)
    proj[in_k] = u[in_k]
    proj[c3, 0] = x[c3]
    proj[c3, 2] = np.maximum(z[c3], 0.0)
    rho = np.full(p, np.nan)
    ratio = np.full(p, np.nan)
    c4 = case == 4
    if c4.any():
        proj[c4], rho[c4], ratio[c4] = _solve_boundary(x[c4], y[c4], z[c4])
    proj[~finite] = np.nan
    return proj * scale[:, None], case, rho, ratio


def _in_exp(x: FloatArray, y: FloatArray, z: FloatArray) -> np.ndarray:
    """Membership in K; for y > 0 in log form, log y + x/y ≤ log z, which cannot overflow."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        smooth = (y > 0) & (z > 0) & (np.log(y) + x / y <= np.log(z))
    return smooth | ((y == 0) & (x <= 0) & (z >= 0))


def _in_polar(x: FloatArray, y: FloatArray, z: FloatArray) -> np.ndarray:
    """Membership in K° = −K*; for x > 0 in log form, log x + y/x − 1 ≤ log(−z)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        smooth = (x > 0) & (z < 0) & (np.log(x) + y / x - 1.0 <= np.log(-z))
    return smooth | ((x == 0) & (y <= 0) & (z <= 0))


def _log_q(rho: FloatArray) -> FloatArray:
    """log Q(ρ), Q(ρ) = ρ² − ρ + 1 ≥ ¾, without overflow for huge |ρ|."""
    big = np.abs(rho) > 1e150
    if not big.any():
        return np.log(rho * (rho - 1.0) + 1.0)
    safe = np.where(big, 0.0, rho)
    return np.where(big, 2.0 * np.log(np.abs(rho)), np.log(safe * (safe - 1.0) + 1.0))


def _log_bound(big_l: FloatArray) -> FloatArray:
    """A c ≥ 2 with c − 2 log c ≥ L (L + 3 log L works for L ≥ 5, 12 for L < 5)."""
    return np.maximum(big_l + 3.0 * np.log(np.maximum(big_l, 5.0)), 12.0)


class _Offsets:
    """ρ = base + σ·τ for the points in case 4, with α and β formed from τ where it matters.

    ``at_a`` marks base a (σ = +1, α ∝ τ); the others have base b (σ = −1, β ∝ τ).
    """

    def __init__(self, x: FloatArray, y: FloatArray, z: FloatArray, base: FloatArray,
                 at_a: np.ndarray) -> None:
        self.x, self.y, self.z, self.base, self.at_a = x, y, z, base, at_a
        self.sigma = np.where(at_a, 1.0, -1.0)
        self.nonneg = z >= 0
        # +1 (−1) where every point has the property, else 0: :meth:`fast_equation` then
        # evaluates only the branch taken (the typical batch has all its points on one side).
        self.side = _uniform(at_a)
        self.sign = _uniform(self.nonneg)

    def take(self, idx: np.ndarray) -> _Offsets:
        return _Offsets(self.x[idx], self.y[idx], self.z[idx], self.base[idx], self.at_a[idx])

    def terms(self, tau: FloatArray) -> tuple[FloatArray, ...]:
        """ρ, Q(ρ) (+∞ past 10¹⁵⁴), log Q(ρ), Nα = αQ, Nβ = βQ (≥ 0 for τ ≥ 0), log Nα, log Nβ.

        The log of the numerator ∝ τ is log x₀ + log τ (or log y₀ + log τ), accurate even where
        the product itself would be a subnormal number.
        """
        x, y, at_a = self.x, self.y, self.at_a
        rho = self.base + self.sigma * tau
        q = rho * (rho - 1.0) + 1.0
        log_q = _log_q(rho)
        n_alpha = np.maximum(np.where(at_a, x * tau, (rho - 1.0) * x + y), 0.0)
        n_beta = np.maximum(np.where(at_a, x - rho * y, y * tau), 0.0)
        log_tau = np.log(tau)
        log_na = np.where(at_a, np.log(np.where(at_a, x, 1.0)) + log_tau, np.log(n_alpha))
        log_nb = np.where(at_a, np.log(n_beta), np.log(np.where(at_a, 1.0, y)) + log_tau)
        return rho, q, log_q, n_alpha, n_beta, log_na, log_nb

    def equation(self, tau: FloatArray) -> tuple[FloatArray, FloatArray]:
        """G(τ), increasing, with a single root; and dG/dτ.

        G = σ·F(ρ) with F = log p_z − log(|d_z| + z₀) for z₀ ≥ 0 and
        F = log(p_z − z₀) − log|d_z| for z₀ < 0, where p_z = αe^ρ and |d_z| = βe^(−ρ): F has
        the sign of g, both logarithms have positive arguments on (a, b), and neither argument
        is a difference of nearly equal numbers. dG/dτ = F'(ρ) since dρ/dτ = σ.
        """
        x, y, z, at_a = self.x, self.y, self.z, self.at_a
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            rho, q, log_q, n_alpha, n_beta, log_na, log_nb = self.terms(tau)
            pz = _exp_product(n_alpha, log_na, q, log_q, rho)
            dz = _exp_product(n_beta, log_nb, q, log_q, -rho)
            # log p_z and log|d_z| from the products themselves where those are normal numbers:
            # the sum log Nα − log Q + ρ would carry an absolute error of ulp(ρ).
            log_pz = np.where(_normal(pz), np.log(pz), log_na - log_q + rho)
            log_dz = np.where(_normal(dz), np.log(dz), log_nb - log_q - rho)
            # d/dρ of log p_z and log|d_z|; dNα/dρ = x₀, dNβ/dρ = −y₀, dQ/dρ = 2ρ − 1, and
            # Nα = x₀τ from a, Nβ = y₀τ from b.
            dq = (2.0 * rho - 1.0) / q
            dlog_pz = np.where(at_a, 1.0 / tau, x / n_alpha) - dq + 1.0
            dlog_dz = np.where(at_a, -y / n_beta, -1.0 / tau) - dq - 1.0
            # F = log(A/B): one rounding near the root, where A ≈ B, rather than the difference
            # of two logarithms that may be large.
            nonneg = z >= 0
            num = np.where(nonneg, pz, pz - z)
            den = np.where(nonneg, dz + z, dz)
            ratio = num / den
            f = np.where(_normal(num) & _normal(den) & _normal(ratio), np.log(ratio),
                         np.where(nonneg, log_pz - np.log(den), np.log(num) - log_dz))
            df = np.where(nonneg, dlog_pz - dz * dlog_dz / (dz + z),
                          pz * dlog_pz / (pz - z) - dlog_dz)
        return self.sigma * f, df

    def fast_terms(self, tau: FloatArray) -> tuple[FloatArray, ...]:
        """ρ, Q(ρ), Nα, Nβ as :meth:`terms` computes them where Nα, Nβ ≥ 0 and |ρ| ≤ 10¹⁵⁰."""
        x, y, at_a, side = self.x, self.y, self.at_a, self.side
        # (ρ = base ± τ exactly when σ = ±1.)
        if side > 0:
            rho = self.base + tau
            rm1 = rho - 1.0
            n_alpha, n_beta = x * tau, x - rho * y
        elif side < 0:
            rho = self.base - tau
            rm1 = rho - 1.0
            n_alpha, n_beta = rm1 * x + y, y * tau
        else:
            rho = self.base + self.sigma * tau
            rm1 = rho - 1.0
            n_alpha = np.where(at_a, x * tau, rm1 * x + y)
            n_beta = np.where(at_a, x - rho * y, y * tau)
        return rho, rho * rm1 + 1.0, n_alpha, n_beta

    def fast_equation(self, tau: FloatArray) -> tuple[FloatArray, FloatArray, np.ndarray]:
        """G(τ) and dG/dτ as :meth:`equation`, with only the branches taken at regular points.

        Returns also which points are regular: |ρ| ≤ 700 and Nα, Nβ, both arguments of F's
        logarithm and their quotient normal numbers. There :meth:`equation` takes exactly these
        branches (and its ``max(·, 0)`` is inactive), so G and dG/dτ are the same numbers, bit
        for bit; at the other points they are meaningless and the caller must not use them.
        """
        x, y, z, at_a, nonneg = self.x, self.y, self.z, self.at_a, self.nonneg
        side, sign = self.side, self.sign
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            rho, q, n_alpha, n_beta = self.fast_terms(tau)
            dq = (2.0 * rho - 1.0) / q
            inv_tau = 1.0 / tau
            if side > 0:
                dlog_pz = inv_tau - dq + 1.0
                dlog_dz = -y / n_beta - dq - 1.0
            elif side < 0:
                dlog_pz = x / n_alpha - dq + 1.0
                dlog_dz = -inv_tau - dq - 1.0
            else:
                dlog_pz = np.where(at_a, inv_tau, x / n_alpha) - dq + 1.0
                dlog_dz = np.where(at_a, -y / n_beta, -inv_tau) - dq - 1.0
            pz = n_alpha / q * np.exp(rho)
            dz = n_beta / q * np.exp(-rho)
            if sign > 0:
                num, den = pz, dz + z
                df = dlog_pz - dz * dlog_dz / den
            elif sign < 0:
                num, den = pz - z, dz
                df = pz * dlog_pz / num - dlog_dz
            else:
                num = np.where(nonneg, pz, pz - z)
                den = np.where(nonneg, dz + z, dz)
                df = np.where(nonneg, dlog_pz - dz * dlog_dz / den, pz * dlog_pz / num - dlog_dz)
            ratio = num / den
            f = np.log(ratio)
            least = np.minimum(np.minimum(n_alpha, n_beta), np.minimum(num, den))
            regular = ((least >= 1e-290) & (ratio >= 1e-290) & (ratio < np.inf)
                       & (np.abs(rho) <= _EXP_SAFE))
            g = f if side > 0 else -f if side < 0 else self.sigma * f  # (G = ±F exactly)
        return g, df, regular

    @property
    def log_shaped(self) -> np.ndarray:
        """Whether G ≈ log τ + const near τ = 0 (the logarithm of the quantity ∝ τ stands alone)."""
        return self.at_a == self.nonneg


def _uniform(mask: np.ndarray) -> int:
    """+1 if ``mask`` is all true, −1 if all false, else 0."""
    count = np.count_nonzero(mask)  # (cheaper than .all() and .any() on short arrays)
    return 1 if count == mask.size else -1 if count == 0 else 0


def _normal(t: FloatArray) -> np.ndarray:
    """Finite and far from underflow."""
    return (t >= 1e-290) & (t < np.inf)


def _exp_product(num: FloatArray, log_num: FloatArray, q: FloatArray, log_q: FloatArray,
                 rho: FloatArray) -> FloatArray:
    """num/Q·e^ρ: directly (accurate to a few ulps) where e^ρ and num are normal numbers, and
    else as exp(log num − log Q + ρ)."""
    direct = (np.abs(rho) <= _EXP_SAFE) & _normal(num)
    safe = np.where(direct, rho, 0.0)
    return np.where(direct, num / q * np.exp(safe), np.exp(log_num - log_q + rho))


def _bracket(x: FloatArray, y: FloatArray, z: FloatArray, a: FloatArray,
             b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """A bracket [lo, hi] ⊂ [a, b] for the root ρ of a case-4 point (up to rounding)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        xpos, ypos = x > 0, y > 0
        # Distances from v to simple points of K, (min(x,0), 0, max(z,0)) and
        # (x, y, max(z, y e^(x/y))), bound ‖d‖; those to points of K°, (0, min(y,0), min(z,0))
        # and (x, y, min(z, −x e^(y/x − 1))), bound ‖p‖. Then p_z = αe^ρ ≤ B_p = min(‖p‖,
        # ‖d‖ + z₀) and |d_z| = βe^(−ρ) ≤ B_d = min(‖d‖, ‖p‖ − z₀), where the sums are formed
        # without cancellation: √(x⁺² + y² + z₀²) + z₀ = (x⁺² + y²)/(√(…) − z₀) for z₀ < 0, and
        # (y e^b − z₀) + z₀ = y e^b (in case 4 both lifts are positive).
        xp2, yp2 = np.maximum(x, 0.0) ** 2, np.maximum(y, 0.0) ** 2
        root_p = np.sqrt(xp2 + y**2 + np.minimum(z, 0.0) ** 2)
        root_d = np.sqrt(x**2 + yp2 + np.maximum(z, 0.0) ** 2)
        lift_p = np.where(ypos, y * np.exp(b), np.inf)  # (y e^b − z₀) + z₀
        lift_d = np.where(xpos, x * np.exp(-a), np.inf)  # (z₀ + x e^(−a)) − z₀
        dist_p = np.minimum(root_p, lift_p - z)
        dist_d = np.minimum(root_d, lift_d + z)
        root_p_plus = np.where(z >= 0, root_p + z, (xp2 + y**2) / (root_p - z))
        root_d_minus = np.where(z <= 0, root_d - z, (x**2 + yp2) / (root_d + z))
        tiny = np.finfo(np.float64).tiny
        log_bp = np.log(np.maximum(np.minimum(dist_d, np.minimum(root_p_plus, lift_p)), tiny))
        log_bd = np.log(np.maximum(np.minimum(dist_p, np.minimum(root_d_minus, lift_d)), tiny))

        # Bracket [lo, hi] ⊂ [a, b] for the root (after Friberg):
        # z₀ > 0: αe^ρ ≥ z₀ and α ≤ ‖p‖ give ρ ≥ log(z₀/‖p‖); z₀ < 0: ρ ≤ log(‖d‖/(−z₀)).
        lo = np.where(z > 0, np.log(z) - np.log(dist_d), -np.inf)
        hi = np.where(z < 0, np.log(dist_p) - np.log(-z), np.inf)
        lo = np.maximum(lo, a)
        hi = np.minimum(hi, b)
        # x₀ > 0: x₀(ρ − a)·Ω(ρ) = p_z ≤ B_p with Ω(ρ) = e^ρ/Q(ρ) ≥ min_{[lo, ∞)} Ω, which is
        # Ω(lo) for lo ≥ 2 and min(Ω(lo), Ω(2) = e²/3) otherwise (Ω increases, except on [1, 2]).
        # y₀ > 0: y₀(b − ρ)·ω(ρ) = |d_z| ≤ B_d with ω(ρ) = e^(−ρ)/Q(ρ) ≥ min_{(−∞, hi]} ω,
        # which is ω(hi) for hi ≤ −1 and min(ω(hi), ω(−1) = e/3) otherwise.
        # (Each update is skipped where it would change nothing: no x₀ > 0, or no y₀ > 0.)
        any_x, any_y = bool(xpos.any()), bool(ypos.any())
        for _ in range(2):
            if any_x:
                log_om = lo - _log_q(lo)
                log_om = np.where(lo >= 2.0, log_om, np.minimum(log_om, 2.0 - _LOG3))
                hi = np.where(xpos, np.minimum(hi, a + np.exp(log_bp - np.log(x) - log_om)), hi)
            if any_y:
                log_om = -hi - _log_q(hi)
                log_om = np.where(hi <= -1.0, log_om, np.minimum(log_om, 1.0 - _LOG3))
                lo = np.where(ypos, np.maximum(lo, b - np.exp(log_bd - np.log(y) - log_om)), lo)
        # These use the minimum of Ω (or ω) and are loose when x₀ (or y₀) is tiny; the same
        # inequalities also bound ρ logarithmically. If ρ ≥ a + 1, then e^ρ/Q(ρ) ≤ B_p/x₀, so
        # ρ − 2 log ρ ≤ ρ − log Q(ρ) ≤ L = log(B_p/x₀) (Q(ρ) ≤ ρ² for ρ ≥ 1). As ρ − 2 log ρ
        # increases for ρ ≥ 2 and c(L) = max(L + 3 log max(L, 5), 12) satisfies
        # c − 2 log c ≥ L, ρ ≤ max(a + 1, c(L)). Likewise with σ = −ρ, if ρ ≤ b − 1, then
        # σ − log Q(−σ) ≤ L' = log(B_d/y₀) and Q(−σ) ≤ (σ + 1)², so ρ ≥ min(b − 1, 1 − c(L' + 1)).
        if any_x:
            hi = np.where(xpos,
                          np.minimum(hi, np.maximum(a + 1.0, _log_bound(log_bp - np.log(x)))), hi)
        if any_y:
            lo = np.where(ypos, np.maximum(lo, np.minimum(
                b - 1.0, 1.0 - _log_bound(log_bd - np.log(y) + 1.0))), lo)
        lo = np.minimum(lo, b)
        hi = np.maximum(np.maximum(hi, a), lo)
    return lo, hi


def _solve_boundary(x: FloatArray, y: FloatArray,
                    z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Case 4 for scaled points (max|vᵢ| < 1): projection, root ρ, and ratio α/β."""
    m = x.shape[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        xpos, ypos = x > 0, y > 0
        a = np.where(xpos, 1.0 - y / np.where(xpos, x, 1.0), -np.inf)
        b = np.where(ypos, x / np.where(ypos, y, 1.0), np.inf)

        lo, hi = _bracket(x, y, z, a, b)

        # Which end to measure from: the one on the root's side of the midpoint of (a, b),
        # decided by the sign of g there (not by the bracket, which holds only up to rounding).
        at_a = xpos & ~ypos
        both = xpos & ypos
        mid = a + 0.5 * (b - a)
        if both.any():
            i = np.flatnonzero(both)
            probe = _Offsets(x[i], y[i], z[i], a[i], np.ones(i.size, dtype=bool))
            g_mid, _, regular = probe.fast_equation(mid[i] - a[i])
            if not regular.all():
                k = np.flatnonzero(~regular)
                g_mid[k], _ = probe.take(k).equation(mid[i[k]] - a[i[k]])
            left = g_mid >= 0  # root in (a, mid]
            at_a[i] = left
            hi[i] = np.where(left, np.minimum(hi[i], mid[i]), hi[i])
            lo[i] = np.where(left, lo[i], np.maximum(lo[i], mid[i]))
            hi[i] = np.maximum(hi[i], lo[i])
        base = np.where(at_a, a, b)
        t_lo = np.maximum(np.where(at_a, lo - a, b - hi), 0.0)
        # (An overflowing bound, possible only for |x₀| or |y₀| near the smallest doubles, is
        # capped; Newton's step from there is still finite.)
        t_hi = np.minimum(np.maximum(np.where(at_a, hi - a, b - lo), t_lo), 1e300)

        # The far end of the τ range: mid, or +∞ if the other end is infinite.
        t_max = np.where(both, np.abs(b - a) * 0.5, np.inf)
        # A bracket [0, 0] (the root is closer to the end than ulp(a) or ulp(b)) is where
        # :func:`_root`'s check extends it to [0, min(1, t_max)] when G(1) > 0, the common
        # case; the fast iteration starts from there too.
        t_hi_fast = np.where(t_hi > 0, t_hi, np.minimum(1.0, t_max))
        tail = (xpos & (a >= _TAIL)) | (ypos & (b <= -_TAIL))
        eq = _Offsets(x, y, z, base, at_a)
        if tail.any():
            work = np.flatnonzero(~tail)
            tau = np.zeros(m)
            tau[work], conv = _fast_root(eq.take(work), t_lo[work], t_hi_fast[work])
            slow = work[~conv]
        else:
            tau, conv = _fast_root(eq, t_lo, t_hi_fast)
            slow = np.flatnonzero(~conv)
        if slow.size:
            tau[slow] = _root(eq.take(slow), t_lo[slow], t_hi[slow], t_max[slow])

        # p = α(ρ, 1, e^ρ) and α/β: directly where Nα, Nβ and e^ρ are normal numbers (what
        # ``terms`` and ``_exp_product`` then compute too), else through their logarithms.
        rho, q, n_alpha, n_beta = eq.fast_terms(tau)
        alpha = n_alpha / q
        proj = np.empty((m, 3))
        proj[:, 0], proj[:, 1], proj[:, 2] = alpha * rho, alpha, alpha * np.exp(rho)
        ratio = n_alpha / n_beta
        odd = np.flatnonzero(tail | ~(_normal(n_alpha) & _normal(n_beta))
                             | (np.abs(rho) > _EXP_SAFE))
        if odd.size:
            rho_o, q_o, log_q, n_alpha_o, n_beta_o, log_na, log_nb = eq.take(odd).terms(tau[odd])
            alpha_o = n_alpha_o / q_o
            proj[odd] = np.stack(
                [alpha_o * rho_o, alpha_o, _exp_product(n_alpha_o, log_na, q_o, log_q, rho_o)],
                axis=1)
            ratio[odd] = np.where(_normal(n_alpha_o) & _normal(n_beta_o), n_alpha_o / n_beta_o,
                                  np.exp(log_na - log_nb))
            ta = tail & at_a
            proj[ta] = np.stack([np.zeros(ta.sum()), np.zeros(ta.sum()), np.maximum(z[ta], 0.0)],
                                axis=1)
            tb = tail & ~at_a
            proj[tb] = np.stack([x[tb], y[tb], y[tb] * np.exp(b[tb])], axis=1)
    return proj, rho, ratio


def _fast_root(eq: _Offsets, t_lo: FloatArray, t_hi: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """The iteration of :func:`_root` from the same start, as far as it stays regular.

    It skips :func:`_root`'s check of the bracket (two evaluations of G, needed only where
    rounding has moved the root outside it; the caller replaces a bracket [0, 0] by the one
    the check makes of it when G(1) > 0) and evaluates G with
    :meth:`_Offsets.fast_equation`. A point is accepted only by the convergence test of
    :func:`_root` (|G| at the level of its rounding errors) at regular points, where G is the
    same number as there; so where the bracket was right, the result is the same, bit for bit.
    Returns τ and which points were accepted; the others (a wrong bracket, an irregular point,
    a collapsed bracket or more than ``_FAST_ITER`` steps) are for :func:`_root`, which starts
    again from scratch.
    """
    n = t_lo.shape[0]
    t = 0.5 * (t_lo + t_hi)
    tau = t.copy()
    conv = np.zeros(n, dtype=bool)
    live = np.arange(n)
    lo, hi = t_lo, t_hi
    log_shaped = eq.log_shaped
    any_log_shaped = bool(np.count_nonzero(log_shaped))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        for _ in range(_FAST_ITER if n else 0):
            g, dg, regular = eq.fast_equation(t)
            lo = np.where(g < 0, t, lo)
            hi = np.where(g > 0, t, hi)
            lin = t - g / dg
            # (lo and hi are finite, so these comparisons also reject a NaN or infinite step.)
            ok_lin = (lin > lo) & (lin < hi)
            # |G| ≤ 4·eps or |G| ≤ 2·eps·|τ·dG| (fmax: a NaN derivative leaves the first test).
            small = np.abs(g) <= np.fmax(4.0 * _EPS, 2.0 * _EPS * np.abs(t * dg))
            # Stop also where the bracket has collapsed: :func:`_root` would take its last step
            # as it is; there it takes that step itself.
            stop = small | ~regular | (hi - lo <= 2.0 * _EPS * hi)
            # (np.count_nonzero: cheaper than .any() and .all() on short arrays.)
            n_stop = np.count_nonzero(stop)
            if n_stop:
                accept = small & regular
                done = live[accept]
                tau[done] = np.where(g == 0, t, np.minimum(np.maximum(lin, lo), hi))[accept]
                conv[done] = True
                if n_stop == stop.size:
                    break
            if not any_log_shaped and np.count_nonzero(ok_lin) == ok_lin.size:
                t = lin  # what the general choice below gives then
            else:
                logn = t * np.exp(-g / (t * dg))
                ok_log = (logn > lo) & (logn < hi)
                use_log = ok_log & ((log_shaped & (t < 1.0)) | ~ok_lin)
                bis = np.where((lo > 0) & (hi > 4.0 * lo), np.sqrt(lo * hi), 0.5 * (lo + hi))
                t = np.where(use_log, logn, np.where(ok_lin, lin, bis))
            if n_stop:
                keep = np.flatnonzero(~stop)
                live, eq, t, lo, hi = live[keep], eq.take(keep), t[keep], lo[keep], hi[keep]
                log_shaped = log_shaped[keep]
                any_log_shaped = bool(np.count_nonzero(log_shaped))
    return tau, conv


def _root(eq: _Offsets, t_lo: FloatArray, t_hi: FloatArray, t_max: FloatArray) -> FloatArray:
    """Safeguarded Newton for G(τ) = 0 on [t_lo, t_hi], vectorized over points.

    Each step takes Newton's step in τ, or in log τ where G is log-shaped and τ < 1 (or where
    the step in τ leaves the bracket), or else bisects the bracket (geometrically when it spans
    more than a factor of 4). It stops when |G| is at the level of its rounding errors (a few
    ulps, so the residual of p_z = |d_z| + z₀ is relative to machine precision), when the step
    is below two ulps of τ, or when the bracket has collapsed; typically within 4–10 steps.
    """
    n = t_lo.shape[0]
    # Make sure the bracket holds the sign change: the bounds hold only up to rounding. G < 0
    # at τ = 0 (v ∉ K°, v ∉ K), and G > 0 at t_max or far enough out.
    g_lo, _ = eq.equation(t_lo)
    t_hi = np.where(g_lo > 0, t_lo, t_hi)
    t_lo = np.where(g_lo > 0, 0.0, t_lo)
    g_hi, _ = eq.equation(t_hi)
    bad = np.flatnonzero(g_hi < 0)
    for _ in range(64):
        if not bad.size:
            break
        t_lo[bad] = t_hi[bad]
        t_hi[bad] = np.minimum(2.0 * t_hi[bad] + 1.0, t_max[bad])
        g_hi, _ = eq.take(bad).equation(t_hi[bad])
        bad = bad[g_hi < 0]

    tau = 0.5 * (t_lo + t_hi)
    active = np.arange(n)
    iters = 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        while active.size and iters < _MAX_ITER:
            iters += 1
            sub = eq.take(active)
            t = tau[active]
            lo, hi = t_lo[active], t_hi[active]
            g, dg = sub.equation(t)
            lo = np.where(g < 0, t, lo)
            hi = np.where(g > 0, t, hi)
            # Newton in τ, and in log τ (exact for G ≈ log τ + c, the shape near the end).
            lin = t - g / dg
            logn = t * np.exp(-g / (t * dg))
            ok_lin = np.isfinite(lin) & (lin > lo) & (lin < hi)
            ok_log = np.isfinite(logn) & (logn > lo) & (logn < hi)
            use_log = ok_log & ((sub.log_shaped & (t < 1.0)) | ~ok_lin)
            bis = np.where((lo > 0) & (hi > 4.0 * lo), np.sqrt(lo * hi), 0.5 * (lo + hi))
            new = np.where(use_log, logn, np.where(ok_lin, lin, bis))
            # Converged: the Newton step is below a couple of ulps (it may then round to t
            # itself, which is why it is tested before the bracket), or the bracket collapsed.
            small = (np.abs(g) <= 4.0 * _EPS) | (np.abs(g) <= 2.0 * _EPS * np.abs(t * dg))
            done = small | (hi - lo <= 2.0 * _EPS * hi)
            tau[active] = np.where(g == 0, t, np.where(small, np.clip(lin, lo, hi), new))
            t_lo[active], t_hi[active] = lo, hi
            active = active[~done]
    return tau


def _boundary_jacobian(rho: FloatArray, ratio: FloatArray) -> FloatArray:
    """J = p̂p̂ᵀ + λ·eeᵀ for case-4 points with root ρ and α/β = ``ratio``."""
    # |ρ| beyond 10¹⁵⁰ (the far tails, where the limits J = ẑẑᵀ and I − ẑẑᵀ are exact to
    # rounding) is clipped so that ρ² stays finite.
    rho = np.minimum(np.maximum(rho, -1e150), 1e150)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        # P = (ρ, 1, e^ρ)·E₁ ∥ p̂ and N = (1, 1 − ρ, −e^(−ρ))·E₂ ∥ n̂ with E₁ = e^(−max(ρ, 0)),
        # E₂ = e^(min(ρ, 0)) ≤ 1, so that no entry overflows: P = (ρE₁, E₁, E₂),
        # N = (E₂, (1 − ρ)E₂, −E₁). Their cross product (P ⊥ N) is, in closed form,
        # e ∥ P × N = (−E₁² − (1 − ρ)E₂², E₂² + ρE₁², −E₁E₂Q(ρ)).
        e1 = np.exp(-np.maximum(rho, 0.0))
        e2 = np.exp(np.minimum(rho, 0.0))
        e1s, e2s = e1 * e1, e2 * e2
        rho_e1 = rho * e1
        p_sq = rho_e1 * rho_e1 + e1s + e2s
        n_sq = e2s + ((1.0 - rho) * e2) ** 2 + e1s
        k = rho.shape[0]
        pv = np.empty((k, 3))
        pv[:, 0], pv[:, 1], pv[:, 2] = rho_e1, e1, e2
        pv /= np.sqrt(p_sq)[:, None]
        ev = np.empty((k, 3))
        e_x = -e1s - (1.0 - rho) * e2s
        e_y = e2s + rho * e1s
        e_z = -(e1 * e2) * (rho * (rho - 1.0) + 1.0)
        ev[:, 0], ev[:, 1], ev[:, 2] = e_x, e_y, e_z
        # (w·e)² = e^(−2ρ)‖(ρ, 1, e^ρ)‖²/‖(1, 1 − ρ, −e^(−ρ))‖² = ‖P‖²/‖N‖² (E₁/E₂ = e^(−ρ)).
        we2 = p_sq / n_sq
        # λ = 1/(1 + (β/α)(w·e)²) = (α/β)/(α/β + (w·e)²): 1 for β = 0, 0 for α = 0; the
        # 1/‖e‖² of the unit vector is folded in.
        lam = np.where(np.isinf(ratio), 1.0, ratio / (ratio + we2))
        lam /= e_x * e_x + e_y * e_y + e_z * e_z
    return pv[:, :, None] * pv[:, None, :] + lam[:, None, None] * (ev[:, :, None] * ev[:, None, :])
