"""ReDi / IM-ReDi: rectification on a perturbed coupling (imdm-reference sec. 5.2).

Coupling: take data x0, draw t ~ U[t_min, 1], mask each position with probability 1 - alpha(t) of a
masking schedule (`linear`, i.e. probability t, is the official code's; the teacher's own schedule is the
alternative), and let the teacher complete x_t from time t with many ancestral steps (the shared sampler),
its initial labels regenerated from one integer seed per sample (eps = hash(seed), `MaskNoise.from_seeds`).
Stored: (x_t, x_0, t, seed).
Fine-tuning: the ELBO-weighted cross-entropy w(t) * -log p(x_0^i | x_t, eps(seed)) at the stored t on the
masked positions of x_t, with eps regenerated from the seed and no reset.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from imdm_lab.losses import elbo_terms, subs_log_probs
from imdm_lab.masking import MaskNoise, q_sample
from imdm_lab.noise import generator_draw
from imdm_lab.sampling import sample
from imdm_lab.schedules import Schedule, sample_times

# Seeds are drawn below 2^62 so that they fit an int64 with room to spare.
SEED_BOUND = 2**62


class Coupling(NamedTuple):
    x_t: torch.Tensor  # Long[N, L], the partially masked data (mask id where masked)
    x_0: torch.Tensor  # Long[N, L], the teacher's completion
    t: torch.Tensor  # Float64[N], the masking level
    seeds: torch.Tensor  # Long[N], eps(seed) is the teacher's initial label (unused for an MDM)


def perturbed_coupling(teacher: Callable, x0: torch.Tensor, *, steps: int, mask_id: int,
                       noise: MaskNoise | None = None, schedule: str | Schedule = "linear",
                       mask_schedule: str | Schedule = "linear", fix_eps: bool = False, t_min: float = 1e-3,
                       seeds: torch.Tensor | None = None, cache: bool = True,
                       generator: torch.Generator | None = None) -> Coupling:
    """Pairs (x_t, x_0 = teacher completion) for data x0 Long[N, L].

    x_t^i = mask with probability 1 - alpha(t) of `mask_schedule` (default `linear`: probability t, as the
    official code; pass the teacher's schedule to mask under it); the completion runs `steps` steps of
    `schedule` from t_start = t. seeds: Long[N] per-sample label seeds (default: drawn from `generator`);
    cache: reuse the teacher's logits while x is unchanged (only right for a teacher without time input)."""
    N, L = x0.shape
    t = sample_times(N, t_min, antithetic=False, generator=generator, dtype=torch.float64, device=x0.device)
    x_t, _ = q_sample(x0, t, mask_schedule, mask_id, generator=generator)
    if seeds is not None and (not isinstance(seeds, torch.Tensor) or seeds.dtype != torch.int64
                              or tuple(seeds.shape) != (N,)):
        raise ValueError(f"seeds: expected a Long tensor of shape {(N,)}")
    if seeds is None:
        seeds = generator_draw(torch.randint, 0, SEED_BOUND, (N,), generator=generator, device=x0.device)
    out = sample(teacher, batch_size=N, length=L, steps=steps, mask_id=mask_id, schedule=schedule,
                 noise=noise, given=x_t, t_start=t, seeds=seeds if noise is not None else None,
                 generator=generator, fix_eps=fix_eps, cache=cache, device=x0.device)
    return Coupling(x_t, out.tokens, t, seeds)


def coupling_loss(student: Callable, batch: Coupling, *, mask_id: int, noise: MaskNoise | None = None,
                  schedule: str | Schedule = "linear", ignore_seed: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean over all tokens of w(t) * -log p_theta(x_0^i | x_t, eps) on the masked positions (scalar).

    eps = eps(seed) (no reset), or fresh labels with ignore_seed (the official LM1B IM-ReDi1 setting)."""
    x_t, x_0, t, seeds = batch
    B, L = x_t.shape
    eps = None
    if noise is not None:
        eps = (noise.draw(B, L, generator=generator, device=x_t.device) if ignore_seed
               else noise.from_seeds(seeds, L))
    logp = subs_log_probs(student(x_t, eps, t.to(torch.get_default_dtype())), x_t, mask_id)
    return elbo_terms(logp, x_0, x_t == mask_id, t, schedule).mean()
