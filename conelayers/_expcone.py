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
typically after 5–10 steps. Far tails (a ≥ 500 or b ≤ −500) would need α or β below the
smallest double; there p = (0, 0, max(z₀, 0)) and p = (x₀, y₀, y₀e^b) are exact to e^(−500).

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
scaling v (Π_K is homogeneous of degree one). The tests check it against the KKT system solved
with ``np.linalg.solve`` and against finite differences.
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
    jac = np.zeros((p, 3, 3))
    jac[case == 1] = np.eye(3)
    c3 = case == 3
    jac[c3, 0, 0] = 1.0
    jac[c3, 2, 2] = (v[c3, 2] > 0).astype(np.float64)
    c4 = case == 4
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
    case = np.full(p, 4, dtype=np.int8)
    case[in_k] = 1
    case[in_polar] = 2
    c3 = ~in_k & ~in_polar & (x <= 0) & (y <= 0)
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

    @property
    def log_shaped(self) -> np.ndarray:
        """Whether G ≈ log τ + const near τ = 0 (the logarithm of the quantity ∝ τ stands alone)."""
        return self.at_a == (self.z >= 0)


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


def _solve_boundary(x: FloatArray, y: FloatArray,
                    z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Case 4 for scaled points (max|vᵢ| < 1): projection, root ρ, and ratio α/β."""
    m = x.shape[0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        xpos, ypos = x > 0, y > 0
        a = np.where(xpos, 1.0 - y / np.where(xpos, x, 1.0), -np.inf)
        b = np.where(ypos, x / np.where(ypos, y, 1.0), np.inf)

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
        for _ in range(2):
            log_om = lo - _log_q(lo)
            log_om = np.where(lo >= 2.0, log_om, np.minimum(log_om, 2.0 - _LOG3))
            hi = np.where(xpos, np.minimum(hi, a + np.exp(log_bp - np.log(x) - log_om)), hi)
            log_om = -hi - _log_q(hi)
            log_om = np.where(hi <= -1.0, log_om, np.minimum(log_om, 1.0 - _LOG3))
            lo = np.where(ypos, np.maximum(lo, b - np.exp(log_bd - np.log(y) - log_om)), lo)
        # These use the minimum of Ω (or ω) and are loose when x₀ (or y₀) is tiny; the same
        # inequalities also bound ρ logarithmically. If ρ ≥ a + 1, then e^ρ/Q(ρ) ≤ B_p/x₀, so
        # ρ − 2 log ρ ≤ ρ − log Q(ρ) ≤ L = log(B_p/x₀) (Q(ρ) ≤ ρ² for ρ ≥ 1). As ρ − 2 log ρ
        # increases for ρ ≥ 2 and c(L) = max(L + 3 log max(L, 5), 12) satisfies
        # c − 2 log c ≥ L, ρ ≤ max(a + 1, c(L)). Likewise with σ = −ρ, if ρ ≤ b − 1, then
        # σ − log Q(−σ) ≤ L' = log(B_d/y₀) and Q(−σ) ≤ (σ + 1)², so ρ ≥ min(b − 1, 1 − c(L' + 1)).
        hi = np.where(xpos, np.minimum(hi, np.maximum(a + 1.0, _log_bound(log_bp - np.log(x)))),
                      hi)
        lo = np.where(ypos, np.maximum(lo, np.minimum(b - 1.0,
                                                      1.0 - _log_bound(log_bd - np.log(y) + 1.0))),
                      lo)
        lo = np.minimum(lo, b)
        hi = np.maximum(np.maximum(hi, a), lo)

        # Which end to measure from: the one on the root's side of the midpoint of (a, b),
        # decided by the sign of g there (not by the bracket, which holds only up to rounding).
        at_a = xpos & ~ypos
        both = xpos & ypos
        mid = a + 0.5 * (b - a)
        if both.any():
            i = np.flatnonzero(both)
            probe = _Offsets(x[i], y[i], z[i], a[i], np.ones(i.size, dtype=bool))
            g_mid, _ = probe.equation(mid[i] - a[i])
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

        tail = (xpos & (a >= _TAIL)) | (ypos & (b <= -_TAIL))
        work = np.flatnonzero(~tail)
        tau = np.zeros(m)
        if work.size:
            tau[work] = _root(_Offsets(x[work], y[work], z[work], base[work], at_a[work]),
                              t_lo[work], t_hi[work], t_max[work])

        eq = _Offsets(x, y, z, base, at_a)
        rho, q, log_q, n_alpha, n_beta, log_na, log_nb = eq.terms(tau)
        alpha = n_alpha / q
        proj = np.stack([alpha * rho, alpha, _exp_product(n_alpha, log_na, q, log_q, rho)],
                        axis=1)
        ratio = np.where(_normal(n_alpha) & _normal(n_beta), n_alpha / n_beta,
                         np.exp(log_na - log_nb))

        ta = tail & at_a
        proj[ta] = np.stack([np.zeros(ta.sum()), np.zeros(ta.sum()), np.maximum(z[ta], 0.0)],
                            axis=1)
        tb = tail & ~at_a
        proj[tb] = np.stack([x[tb], y[tb], y[tb] * np.exp(b[tb])], axis=1)
    return proj, rho, ratio


def _root(eq: _Offsets, t_lo: FloatArray, t_hi: FloatArray, t_max: FloatArray) -> FloatArray:
    """Safeguarded Newton for G(τ) = 0 on [t_lo, t_hi], vectorized over points.

    Each step takes Newton's step in τ, or in log τ where G is log-shaped and τ < 1 (or where
    the step in τ leaves the bracket), or else bisects the bracket (geometrically when it spans
    more than a factor of 4). It stops when |G| is at the level of its rounding errors (a few
    ulps, so the residual of p_z = |d_z| + z₀ is relative to machine precision), when the step
    is below two ulps of τ, or when the bracket has collapsed; typically within 5–10 steps.
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
    rho = np.clip(rho, -1e150, 1e150)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        pos = rho >= 0
        em = np.exp(-np.abs(rho))  # e^(−|ρ|) ≤ 1
        # p̂ ∥ (ρ, 1, e^ρ) and n̂ ∥ (1, 1 − ρ, −e^(−ρ)), scaled to avoid overflow.
        pv = np.where(pos[:, None], np.stack([rho * em, em, np.ones_like(rho)], axis=1),
                      np.stack([rho, np.ones_like(rho), em], axis=1))
        nv = np.where(pos[:, None], np.stack([np.ones_like(rho), 1.0 - rho, -em], axis=1),
                      np.stack([em, em * (1.0 - rho), -np.ones_like(rho)], axis=1))
        pv /= np.linalg.norm(pv, axis=1, keepdims=True)
        nv /= np.linalg.norm(nv, axis=1, keepdims=True)
        e = np.cross(pv, nv)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        # (w·e)² = (1 + ρ² + e^(2ρ)) / (1 + e^(2ρ)(1 + (1 − ρ)²)), e^(2ρ) written via e^(−2|ρ|).
        e2 = em * em
        we2 = np.where(pos, (e2 + (rho * em) ** 2 + 1.0) / (e2 + 1.0 + (1.0 - rho) ** 2),
                       (1.0 + rho * rho + e2) / (1.0 + e2 + (em * (1.0 - rho)) ** 2))
        # λ = 1/(1 + (β/α)(w·e)²) = (α/β)/(α/β + (w·e)²): 1 for β = 0, 0 for α = 0.
        lam = np.where(np.isinf(ratio), 1.0, ratio / (ratio + we2))
    return pv[:, :, None] * pv[:, None, :] + lam[:, None, None] * e[:, :, None] * e[:, None, :]
