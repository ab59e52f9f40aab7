"""Forward process q(x_t | x_0): every position is independently replaced by the mask token with
probability 1 - alpha_t (MDM and IMDM alike: the IMDM's labels eps are independent of x_0, a separate
draw, imdm_lab.labels).
"""
from __future__ import annotations

import torch

from imdm_lab.counter_rng import generator_draw
from imdm_lab.schedules import Schedule, get_schedule


def check_tokens(x: torch.Tensor, name: str, batch: int | None = None, length: int | None = None,
                 validate: bool = True):
    """x must be a Long[B, L] tensor of non-negative ids (validate=False: shape and dtype only, no read-back)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.int64:
        got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a Long[B, L] tensor, got {got}")
    if batch is not None and tuple(x.shape) != (batch, length):
        raise ValueError(f"{name}: expected shape {(batch, length)}, got {tuple(x.shape)}")
    if validate and x.numel() and int(x.min()) < 0:
        raise ValueError(f"{name}: expected token ids >= 0, got {int(x.min())}")
    return x


def check_times(t, batch: int, name: str = "t", validate: bool = True) -> torch.Tensor:
    """t must be a Float[B] tensor (or a number, broadcast) with values in [0, 1] (validate=False: the
    range is not read back)."""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.full((batch,), float(t), dtype=torch.float64)
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != (batch,):
        got = f"shape {tuple(t.shape)} dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a float tensor of shape ({batch},) or a number, got {got}")
    if validate and not bool(torch.all((t >= 0) & (t <= 1))):
        raise ValueError(f"{name}: expected times in [0, 1], got range [{float(t.min())}, {float(t.max())}]")
    return t


def q_sample(x0: torch.Tensor, t, schedule: str | Schedule, mask_id: int,
             generator: torch.Generator | None = None, coins: torch.Tensor | None = None,
             validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw x_t ~ q(x_t | x_0):  x_t^i = x_0^i with prob. alpha_t, else the mask token (MDLM eq. 2).

    x0: Long[B, L], t: Float[B] in [0, 1]  ->  (x_t: Long[B, L], masked: Bool[B, L]).
    Position i is masked when its coin u_i < 1 - alpha_t; the coins are float64 uniforms from `generator`,
    or `coins` Float[B, L] in [0, 1) given by the caller (e.g. hashed from per-sample seeds)."""
    check_tokens(x0, "x0", validate=validate)
    sched = get_schedule(schedule)
    t = check_times(t, x0.shape[0], validate=validate).to(device=x0.device, dtype=torch.float64)
    if coins is None:
        coins = generator_draw(torch.rand, x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
    elif not isinstance(coins, torch.Tensor) or not coins.is_floating_point() \
            or tuple(coins.shape) != tuple(x0.shape):
        raise ValueError(f"coins: expected a float tensor of shape {tuple(x0.shape)}")
    elif validate and not bool(((coins >= 0) & (coins < 1)).all()):  # NaN fails both comparisons
        raise ValueError("coins: expected uniforms in [0, 1)")
    masked = coins.to(x0.device) < (1.0 - sched.alpha(t))[:, None]
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked
