"""Reverse posteriors of one ancestral step t -> s (s < t) for a masked position.

Visible tokens are carried over unchanged; these functions describe a position that is masked at time t.

MDM (MDLM eq. 7), two-way:  unmask to v with (alpha_s - alpha_t)/(1 - alpha_t) * x0_hat(v),
                            stay masked with (1 - alpha_s)/(1 - alpha_t).
IMDM (Ugness/IMDM algo.py, IMDM._compute_posterior), three-way: the stay-masked mass splits into
    keep the label eps   with (alpha_t/alpha_s - alpha_t)/(1 - alpha_t) = r * stay,
    reset to a fresh eps with (1 - alpha_t/alpha_s)(1 - alpha_s)/(1 - alpha_t) = (1 - r) * stay,
where r = alpha_t/alpha_s is the probability that the forward chain kept the label from s to t.
`fix_eps` folds reset into keep (the "ODE-like" path of a fixed label).

The coefficients do not depend on the token, so the sampler draws the branch first and then a token
only where it unmasks; the full (C+1)- and (C+2)-column tensors are for tests and distillation.
"""
from __future__ import annotations

import torch


def mdm_coefficients(alpha_t: torch.Tensor, alpha_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(unmask, stay) = ((alpha_s - alpha_t)/(1 - alpha_t), (1 - alpha_s)/(1 - alpha_t)).

    alpha_t, alpha_s: Float[...] with alpha_t <= alpha_s  ->  two Float[...] summing to 1.
    Where 1 - alpha_t = 0 (a mask at a time where none should remain) the position unmasks surely,
    so the endpoints give no NaN."""
    denom = 1.0 - alpha_t
    safe = denom > 0
    unmask = torch.where(safe, (alpha_s - alpha_t) / torch.where(safe, denom, torch.ones_like(denom)),
                         torch.ones_like(denom))
    unmask = unmask.clamp(0.0, 1.0)
    return unmask, 1.0 - unmask


def imdm_coefficients(alpha_t: torch.Tensor, alpha_s: torch.Tensor,
                      fix_eps: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(unmask, keep, reset): keep = (alpha_t/alpha_s) * stay, reset = (1 - alpha_t/alpha_s) * stay.

    alpha_t, alpha_s: Float[...]  ->  three Float[...] summing to 1; keep + reset = MDM's stay.
    fix_eps: reset = 0 and keep = stay."""
    unmask, stay = mdm_coefficients(alpha_t, alpha_s)
    if fix_eps:
        return unmask, stay, torch.zeros_like(stay)
    safe = alpha_s > 0
    ratio = torch.where(safe, alpha_t / torch.where(safe, alpha_s, torch.ones_like(alpha_s)),
                        torch.ones_like(alpha_s)).clamp(0.0, 1.0)
    keep = ratio * stay
    return unmask, keep, stay - keep


def _check_probs(x0_probs: torch.Tensor, alpha_t: torch.Tensor):
    if not isinstance(x0_probs, torch.Tensor) or x0_probs.dim() < 1 or not x0_probs.is_floating_point():
        raise ValueError("x0_probs: expected a float tensor of shape [..., C]")
    if alpha_t.shape != x0_probs.shape[:alpha_t.dim()]:
        raise ValueError(f"alpha_t: expected a leading shape of x0_probs {tuple(x0_probs.shape[:-1])}, "
                         f"got {tuple(alpha_t.shape)}")


def _expand(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-row coefficient Float[B] (or Float[B, L]) to like's shape [..., 1]."""
    return c.reshape(c.shape + (1,) * (like.dim() - c.dim()))


def mdm_posterior(x0_probs: torch.Tensor, alpha_t: torch.Tensor, alpha_s: torch.Tensor) -> torch.Tensor:
    """MDM posterior of a masked position: Float[B, L, C] x0_hat, alpha Float[B] -> Float[B, L, C + 1].

    Columns 0..C-1: unmask to token v; column C: stay masked."""
    _check_probs(x0_probs, alpha_t)
    unmask, stay = mdm_coefficients(alpha_t, alpha_s)
    unmask, stay = _expand(unmask, x0_probs), _expand(stay, x0_probs)
    return torch.cat([unmask * x0_probs, stay.expand(*x0_probs.shape[:-1], 1)], dim=-1)


def imdm_posterior(x0_probs: torch.Tensor, alpha_t: torch.Tensor, alpha_s: torch.Tensor,
                   fix_eps: bool = False) -> torch.Tensor:
    """IMDM posterior of a masked position: Float[B, L, C], Float[B] -> Float[B, L, C + 2].

    Columns 0..C-1: unmask to token v; column C: stay masked with the same eps (keep);
    column C + 1: stay masked with a fresh eps (reset)."""
    _check_probs(x0_probs, alpha_t)
    unmask, keep, reset = (_expand(c, x0_probs) for c in imdm_coefficients(alpha_t, alpha_s, fix_eps))
    lead = (*x0_probs.shape[:-1], 1)
    return torch.cat([unmask * x0_probs, keep.expand(lead), reset.expand(lead)], dim=-1)
