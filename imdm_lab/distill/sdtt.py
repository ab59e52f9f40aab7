"""SDTT / IM-SDTT: progressive self-distillation targets (Deschenaux & Gulcehre; Ugness/IMDM
algo.py, IMSDTT).

In round r a frozen teacher takes k ancestral steps of size dt from x_t; the student, given the same x_t
(and, for an IMDM, the same labels eps, held fixed over the teacher's rollout: no reset), learns to match
in ONE step of size k * dt the teacher's predictions. Rounds multiply dt by k and copy the student into the
teacher, so the student's step count goes N_0 -> N_0 / k -> ... -> 1.

The teacher steps here are contiguous, t -> t - dt -> ... -> t - k dt (the official code leaves a gap
between them, Ugness/IMDM algo.py, IMSDTT); a step whose end time is <= 0 reveals every remaining mask.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from imdm_lab.checks import check_int
from imdm_lab.counter_rng import generator_draw
from imdm_lab.losses import divergence, subs_log_probs
from imdm_lab.masking import check_times, q_sample
from imdm_lab.posterior import mdm_coefficients
from imdm_lab.process import Process, process_of
from imdm_lab.sampling import categorical
from imdm_lab.schedules import check_steps, get_schedule, sample_times


def round_plan(start_steps: int, target_steps: int = 1, k: int = 2) -> list[float]:
    """Teacher step sizes dt_r = k^r / N_0 of the rounds that take a N_0-step sampler to target_steps.

    After round r the student samples with N_0 / k^(r+1) steps; e.g. (16, 1, 2) -> [1/16, 1/8, 1/4, 1/2]."""
    start_steps, target_steps = check_steps(start_steps), check_steps(target_steps)
    k = check_int("k", k, 2)
    dts, n = [], start_steps
    while n > target_steps and n % k == 0:
        dts.append(1.0 / n)
        n //= k
    if n != target_steps:
        raise ValueError(f"target_steps: expected start_steps / k^r = {start_steps} / {k}^r, got {target_steps}")
    return dts


@torch.no_grad()
def teacher_targets(teacher: Callable, x_t: torch.Tensor, eps, t: torch.Tensor, dt: float, *, k: int = 2,
                    process: Process | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """log-probs the student must match: Float[B, L, C] for x_t Long[B, L], t Float[B] (eps fixed).

    Teacher step j goes from tau_j = t - j dt to tau_j - dt, unmasking a masked position with probability
    (alpha_s - alpha_t)/(1 - alpha_t) and drawing its token from the teacher's x0_hat (float64). A position
    revealed at step j gets the teacher's log x0_hat of step j; one still masked after the k steps gets
    that of the last step. Visible positions carry their token (SUBS). process: the teacher's own unless
    it carries none (mask id, schedule)."""
    proc = process_of(teacher, process)
    mask_id, sched = proc.mask_id, get_schedule(proc.schedule)
    x = x_t.clone()
    still = x == mask_id
    target = None
    for j in range(k):
        tau = (t - j * dt).clamp_min(0.0)
        logp = subs_log_probs(teacher(x, eps, tau.to(torch.get_default_dtype())), x, mask_id)
        target = logp if target is None else torch.where(still[..., None], logp, target)
        s = tau.double() - dt
        alpha_s = torch.where(s <= 0, torch.ones_like(s), sched.alpha(s.clamp_min(0.0)))
        unmask, _ = mdm_coefficients(sched.alpha(tau.double()), alpha_s)
        coins = generator_draw(torch.rand, x.shape, generator=generator, device=x.device, dtype=torch.float64)
        reveal = still & (coins < unmask[:, None])
        if reveal.any():
            x[reveal] = categorical(logp[reveal].double().exp(), generator)
        still = still & ~reveal
    return target


def sdtt_loss(student: Callable, teacher: Callable, x0: torch.Tensor, dt: float, *, k: int = 2,
              process: Process | None = None, divergence_kind: str = "kl-bwd", t: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One SDTT (an MDM process) / IM-SDTT (a process with labels) loss on a data batch x0 Long[B, L] -> scalar.

    t ~ U[t_min, 1] (antithetic; or the caller's times t Float[B]), x_t ~ q(x_t | x0), eps fresh per
    position and shared by teacher and student; the divergence (reverse KL by default) is averaged over
    the masked positions of x_t, in at least float32. process: the student's own unless it carries none;
    the teacher runs under the same process."""
    proc = process_of(student, process)
    B, L = x0.shape
    if t is None:
        t = sample_times(B, proc.t_min, antithetic=True, generator=generator, device=x0.device)
    t = check_times(t, B).to(x0.device)
    x_t, masked = q_sample(x0, t, proc.schedule, proc.mask_id, generator=generator)
    eps = proc.draw_labels(B, L, generator=generator, device=x0.device)
    target = teacher_targets(teacher, x_t, eps, t, dt, k=k, process=proc, generator=generator)
    student_logp = subs_log_probs(student(x_t, eps, t), x_t, proc.mask_id)
    wide = torch.promote_types(student_logp.dtype, torch.float32)  # a bf16 student's log-probs
    return divergence(student_logp.to(wide), target.to(wide), divergence_kind, mask=masked)[1]
