"""ReDi / IM-ReDi: rectification on a perturbed coupling (Ugness/IMDM main.py,
generate_reflow_dataset; trainer_base.py, test_step; algo.py, IMReDi.nll).

Coupling: take data x0, draw t ~ U[t_min, 1], mask each position with probability 1 - alpha(t) of a
masking schedule (`linear`, i.e. probability t, is the official code's; the teacher's own schedule is the
alternative), and let the teacher complete x_t from time t with many ancestral steps (the shared sampler),
its initial labels regenerated from one integer seed per sample (eps = hash(seed), `MaskLabels.from_seeds`).
t and the mask come from a generator, or (hashed=True) from the counter RNG at the sample's seed, so
that they depend on the sample alone (not on batch composition or process count). Stored: (x_t, x_0, t, seed).
Fine-tuning: the ELBO-weighted cross-entropy w(t) * -log p(x_0^i | x_t, eps(seed)) at the stored t on the
masked positions of x_t, with eps regenerated from the seed and no reset.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from imdm_lab.counter_rng import generator_draw, hash_uniform
from imdm_lab.losses import elbo_terms, subs_log_probs
from imdm_lab.masking import q_sample
from imdm_lab.process import Process, process_of
from imdm_lab.sampling import SamplerOptions, sample
from imdm_lab.schedules import Schedule, sample_times

# Seeds are drawn below 2^62 so that they fit an int64 with room to spare.
SEED_BOUND = 2**62
# Counter-RNG stream of the hashed masking uniforms; the sampler uses stream 0 (initial eps) and j + 1 (resets).
MASK_STREAM = 0x7FFFFFFF


class Coupling(NamedTuple):
    x_t: torch.Tensor  # Long[N, L], the partially masked data (mask id where masked)
    x_0: torch.Tensor  # Long[N, L], the teacher's completion
    t: torch.Tensor  # Float64[N], the masking level
    seeds: torch.Tensor  # Long[N], eps(seed) is the teacher's initial label (unused for an MDM)


def hashed_perturbation(seeds: torch.Tensor, length: int, t_min: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The masking level and coins of each sample from its seed alone: Long[N] -> (t Float64[N], coins Float64[N, L]).

    u = U(seed, MASK_STREAM, 0..L) (imdm_lab.counter_rng): t = t_min + (1 - t_min) u_0, coin_l = u_{1+l}."""
    u = hash_uniform(seeds, length + 1, stream=MASK_STREAM)
    return t_min + (1.0 - t_min) * u[:, 0], u[:, 1:]


def perturbed_coupling(teacher: Callable, x0: torch.Tensor, *, steps: int, process: Process | None = None,
                       mask_schedule: str | Schedule = "linear", t_min: float | None = None,
                       seeds: torch.Tensor | None = None, hashed: bool = False,
                       generator: torch.Generator | None = None,
                       rollout: SamplerOptions = SamplerOptions()) -> Coupling:
    """Pairs (x_t, x_0 = teacher completion) for data x0 Long[N, L].

    x_t^i = mask with probability 1 - alpha(t) of `mask_schedule` (default `linear`: probability t, as the
    official code; pass the teacher's schedule to mask under it), t ~ U[t_min, 1] (default the process's
    t_min); the completion runs `steps` steps of the teacher's schedule from t_start = t. seeds: Long[N]
    per-sample label seeds (default: drawn from `generator`); hashed=True: t and the mask coins come from
    the seeds too (hashed_perturbation), the generator then drives only the teacher's rollout.
    process: the teacher's own unless it carries none; rollout: how the teacher samples (e.g.
    SamplerOptions(fix_eps=True): no label reset along the completion)."""
    proc = process_of(teacher, process)
    N, L = x0.shape
    t_min = proc.t_min if t_min is None else t_min
    if isinstance(t_min, bool) or not isinstance(t_min, (int, float)) or not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min: expected a number in [0, 1), got {t_min!r}")
    if seeds is not None and (not isinstance(seeds, torch.Tensor) or seeds.dtype != torch.int64
                              or tuple(seeds.shape) != (N,)):
        raise ValueError(f"seeds: expected a Long tensor of shape {(N,)}")
    if hashed and seeds is None:
        raise ValueError("seeds: expected per-sample seeds with hashed=True (t and the mask are hashed from them)")
    if hashed:
        t, coins = hashed_perturbation(seeds, L, t_min)
        t, coins = t.to(x0.device), coins.to(x0.device)
    else:
        t = sample_times(N, t_min, antithetic=False, generator=generator, dtype=torch.float64, device=x0.device)
        coins = None
    x_t, masked = q_sample(x0, t, mask_schedule, proc.mask_id, generator=generator, coins=coins)
    if seeds is None:
        seeds = generator_draw(torch.randint, 0, SEED_BOUND, (N,), generator=generator, device=x0.device)
    out = sample(teacher, batch_size=N, length=L, steps=steps, process=proc, given=x_t, given_mask=~masked,
                 t_start=t, seeds=seeds, generator=generator, device=x0.device, options=rollout)
    return Coupling(x_t, out.tokens, t, seeds)


def coupling_loss(student: Callable, batch: Coupling, *, process: Process | None = None, ignore_seed: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean over all tokens of w(t) * -log p_theta(x_0^i | x_t, eps) on the masked positions (scalar).

    eps = eps(seed) (no reset), or fresh labels with ignore_seed (the official LM1B IM-ReDi1 setting);
    process: the student's own unless it carries none (mask id, ELBO schedule, label law)."""
    proc = process_of(student, process)
    x_t, x_0, t, seeds = batch
    B, L = x_t.shape
    eps = proc.draw_labels(B, L, generator=generator, seeds=None if ignore_seed else seeds, device=x_t.device)
    logp = subs_log_probs(student(x_t, eps, t.to(torch.get_default_dtype())), x_t, proc.mask_id)
    return elbo_terms(logp, x_0, x_t == proc.mask_id, t, proc.schedule).mean()
