"""Noise schedules alpha(t): the probability that a token is still visible at time t in [0, 1].

A masked diffusion model corrupts x_0 by masking each position independently with probability
1 - alpha_t (alpha_0 = 1, alpha decreasing). Everything a sampler, a loss or the exact engine needs
from a schedule is here: alpha, its derivative, the sampling grid, the ELBO weight and the law of the
step at which a position is revealed.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from imdm_lab.checks import check_int

# MDLM's log-linear and cosine schedules keep alpha_1 = 1e-3 > 0 so that -alpha'/(1 - alpha) stays finite.
ALPHA_FLOOR = 1e-3


@dataclass(frozen=True)
class Schedule:
    """alpha(t) and d alpha / dt, elementwise on tensors of any shape (dtype preserved)."""

    name: str
    alpha: Callable[[torch.Tensor], torch.Tensor]
    dalpha: Callable[[torch.Tensor], torch.Tensor]

    def elbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-masked-token ELBO weight  w(t) = -alpha'_t / (1 - alpha_t)   (MDLM eq. 10).

        t: Float[...] in (0, 1]  ->  Float[...]; linear: 1/t, loglinear: 1/t (the constants cancel)."""
        return -self.dalpha(t) / (1.0 - self.alpha(t))

    def grid(self, steps: int, t_start: float = 1.0) -> torch.Tensor:
        """Sampling times t_0 = t_start > t_1 > ... > t_k = 0 (Float64[k+1]); step j goes t_{j-1} -> t_j."""
        check_steps(steps)
        return torch.linspace(t_start, 0.0, steps + 1, dtype=torch.float64)

    def reveal_probs(self, steps: int) -> np.ndarray:
        """Law of the step j in {1..k} at which an all-masked start reveals a given position (Float64[k]).

        The ancestral step t -> s unmasks a masked position with probability (alpha_s - alpha_t)/(1 - alpha_t),
        so P(still masked after step j) = (1 - alpha(t_j)) / (1 - alpha(t_0)) telescopes and
        P(revealed at step j) = (alpha(t_j) - alpha(t_{j-1})) / (1 - alpha(t_0)); the last step reveals the rest
        (alpha_s = 1 there). Positions are revealed independently of each other."""
        a = self.alpha(self.grid(steps)).numpy()
        a[-1] = 1.0
        p = np.diff(a) / (1.0 - a[0])
        p[-1] = 1.0 - p[:-1].sum()
        return p


def _linear_alpha(t):
    return 1.0 - t


def _linear_dalpha(t):
    return -torch.ones_like(t)


def _loglinear_alpha(t):
    return 1.0 - (1.0 - ALPHA_FLOOR) * t


def _loglinear_dalpha(t):
    return torch.full_like(t, -(1.0 - ALPHA_FLOOR))


def _cosine_alpha(t):
    return ALPHA_FLOOR + (1.0 - ALPHA_FLOOR) * torch.cos(t * (math.pi / 2))


def _cosine_dalpha(t):
    return -(1.0 - ALPHA_FLOOR) * (math.pi / 2) * torch.sin(t * (math.pi / 2))


SCHEDULES: dict[str, Schedule] = {
    "linear": Schedule("linear", _linear_alpha, _linear_dalpha),
    "loglinear": Schedule("loglinear", _loglinear_alpha, _loglinear_dalpha),
    "cosine": Schedule("cosine", _cosine_alpha, _cosine_dalpha),
}


def get_schedule(schedule: str | Schedule) -> Schedule:
    """Look a schedule up by name; a Schedule passes through."""
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {sorted(SCHEDULES)}, got {schedule!r}")
    return SCHEDULES[schedule]


def check_steps(steps) -> int:
    return check_int("steps", steps, 1)


def sample_times(batch: int, t_min: float = 1e-3, antithetic: bool = True,
                 generator: torch.Generator | None = None, device=None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Training times t ~ U[t_min, 1] (Float[B]).

    antithetic: one uniform offset U shared by the batch, u_i = (U + i/B) mod 1, so the batch covers
    [0, 1) evenly (stratified); this lowers the variance of the ELBO estimate (MDLM, sec. 3.5)."""
    batch = check_int("batch", batch, 1)
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min: expected a number in [0, 1), got {t_min!r}")
    # A generator draws only on its own device (a CUDA generator cannot fill a CPU tensor).
    gdev = generator.device if generator is not None else device
    if antithetic:
        u0 = torch.rand((), generator=generator, dtype=torch.float64, device=gdev)
        u = (u0 + torch.arange(batch, dtype=torch.float64, device=gdev) / batch) % 1.0
    else:
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=gdev)
    return ((1.0 - t_min) * u + t_min).to(device=device, dtype=dtype)
