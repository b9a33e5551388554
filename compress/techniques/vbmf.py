"""Rank estimation by empirical variational Bayesian matrix factorization (EVBMF).

The global analytic solution of Nakajima, Sugiyama, Babacan & Tomioka (JMLR 2013) with the noise
variance estimated as in Nakajima et al., "Condition for perfect dimensionality recovery by VBMF"
(2015): for an L×M matrix (L ≤ M, α = L/M) with singular values γ_h and x_h = γ_h² / (M σ²), the free
energy up to constants is  Σ_h x_h + L·log σ² + Σ_{x_h > x̄} ψ1(x_h),  with
ψ1(x) = log(τ + 1) + α·log(τ/α + 1) − τ,  τ(x) = ½(x − 1 − α + √((x − 1 − α)² − 4α)),
x̄ = (1 + τ̄)(1 + α/τ̄) and τ̄ the zero of Φ(τ) + Φ(τ/α), Φ(z) = log(z + 1)/z − ½. σ² is searched in
the paper's bounds; the rank is the number of singular values above the EVB threshold √(M σ² x̄).
"""

from __future__ import annotations

import math

import torch

_GRID = 2000  # log-spaced candidates for σ² between the bounds


def _tau_bar(alpha: float) -> float:
    """τ̄: the unique zero of Φ(τ) + Φ(τ/α), found by bisection in log space (≈ 2.5129·√α)."""

    def xi(tau: float) -> float:
        return math.log1p(tau) / tau + math.log1p(tau / alpha) / (tau / alpha) - 1.0

    low, high = 1e-6, 1e6  # xi(low) > 0 > xi(high)
    for _ in range(200):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if xi(mid) > 0 else (low, mid)
    return math.sqrt(low * high)


def _free_energy(sigma2: torch.Tensor, s2: torch.Tensor, m: int, alpha: float, x_bar: float) -> torch.Tensor:
    """Free energy (constants dropped) for each candidate noise variance in `sigma2`."""
    x = s2[None, :] / (m * sigma2[:, None])
    shifted = x - 1 - alpha
    tau = 0.5 * (shifted + torch.sqrt((shifted**2 - 4 * alpha).clamp(min=0)))
    psi1 = torch.log(tau + 1) + alpha * torch.log(tau / alpha + 1) - tau
    psi1 = torch.where(x > x_bar, psi1, torch.zeros_like(psi1))
    return x.sum(1) + s2.numel() * torch.log(sigma2) + psi1.sum(1)


def evbmf_rank(matrix: torch.Tensor) -> int:
    """The rank EVBMF estimates for `matrix` (2-D), in [0, min(matrix.shape)]; deterministic."""
    s = torch.linalg.svdvals(matrix.detach().double())
    if not torch.isfinite(s).all():
        raise ValueError("VBMF: the matrix contains NaN or inf")
    big_l, m = min(matrix.shape), max(matrix.shape)
    if s[0] <= 0:
        return 0
    alpha = big_l / m
    tau_bar = _tau_bar(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    s2 = s**2
    h_bar = min(math.ceil(big_l / (1 + alpha)) - 1, big_l - 1)  # upper bound of the rank (1-based)
    upper = float(s2.sum()) / (big_l * m)
    lower = max(float(s2[h_bar]) / (m * x_bar), float(s2[h_bar:].mean()) / m, upper * 1e-10)
    grid = torch.logspace(math.log10(lower), math.log10(upper), _GRID, dtype=torch.float64)
    sigma2 = grid[torch.argmin(_free_energy(grid, s2, m, alpha, x_bar))]
    return int((s > torch.sqrt(m * sigma2 * x_bar)).sum())


def vbmf_ranks(weight: torch.Tensor) -> tuple[int, int]:
    """(out, in) Tucker-2 ranks of a conv weight by EVBMF of its mode-0 and mode-1 unfoldings."""
    w = weight.detach()
    r_out = evbmf_rank(w.reshape(w.shape[0], -1))
    r_in = evbmf_rank(w.transpose(0, 1).reshape(w.shape[1], -1))
    return max(1, r_out), max(1, r_in)
