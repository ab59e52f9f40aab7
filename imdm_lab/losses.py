"""The SUBS parameterisation, the continuous-time ELBO of MDM / IMDM and distillation divergences.

SUBS (MDLM sec. 3.2.3) is applied here, once, to the raw output of any denoiser: the mask class gets
probability zero and visible positions are carried over (their distribution is a point mass on the
visible token). The continuous-time ELBO (MDLM eq. 10; unchanged for IMDM since keep/reset do not depend
on x_0, Ugness/IMDM algo.py, IMDM._compute_posterior) is then

    L(x_0) = E_t E_{x_t, eps} [ -alpha'_t / (1 - alpha_t) * sum_{i masked} -log p(x_0^i | x_t, eps) ].

Value checks (token ranges, time ranges) read tensors back to the host; `validate=False` skips them for
inputs a caller has already checked once (the trainer checks its data when it opens it), so a training
step queues its work without waiting on the device. The memory-efficient NLL lives in imdm_lab.head_nll.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from imdm_lab.masking import check_times, check_tokens, q_sample
from imdm_lab.process import Process, process_of
from imdm_lab.schedules import Schedule, get_schedule

# MDLM's "neg_infinity": finite, so that 0 * log p stays 0 in divergences and bf16 can hold it.
NEG_INF = -1e6
# Target id of a position whose NLL is not needed (visible positions: they contribute 0 to the ELBO).
IGNORE = -1


def subs_log_probs(logits: torch.Tensor, x_t: torch.Tensor, mask_id: int, validate: bool = True) -> torch.Tensor:
    """log p(x_0^i | x_t) after SUBS: Float[B, L, C] logits, Long[B, L] x_t -> Float[B, L, C].

    Masked positions: log-softmax with the mask logit (if mask_id < C) set to NEG_INF.
    Visible positions: 0 at the visible token, NEG_INF elsewhere (carry-over). dtype is kept.
    validate=False skips the token-range checks (shapes and mask_id are always checked)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        got = f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits: expected a float tensor of shape [B, L, C], got {got}")
    check_tokens(x_t, "x_t", *logits.shape[:2], validate=validate)
    C = logits.shape[-1]
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or not 0 <= mask_id <= C:
        raise ValueError(f"mask_id: expected an integer in [0, {C}], got {mask_id!r}")
    visible = x_t != mask_id
    if validate and visible.any() and int(x_t[visible].max()) >= C:
        raise ValueError(f"x_t: expected token ids in [0, {C}) or mask_id {mask_id}, "
                         f"got {int(x_t[visible].max())}")
    if mask_id < C:
        logits = logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), NEG_INF)
    logp = torch.log_softmax(logits, dim=-1)
    carry = torch.full_like(logp, NEG_INF).scatter_(-1, torch.where(visible, x_t, 0)[..., None], 0.0)
    return torch.where(visible[..., None], carry, logp)


def weighted_nll(nll: torch.Tensor, masked: torch.Tensor, t: torch.Tensor, schedule: str | Schedule) -> torch.Tensor:
    """The ELBO integrand from per-position NLLs: w(t) * nll on masked positions, 0 elsewhere.

    nll: Float[B, L] = -log p(x_0^i | x_t) (any value where not masked), masked: Bool[B, L], t: Float[B]
    -> Float[B, L] in at least float32, w(t) = -alpha'_t / (1 - alpha_t) as in elbo_terms."""
    dtype = torch.promote_types(nll.dtype, torch.float32)
    w = get_schedule(schedule).elbo_weight(t.to(dtype))
    nll = nll.to(dtype)
    return torch.where(masked, w[:, None] * nll, torch.zeros_like(nll))


def elbo_terms(log_probs: torch.Tensor, x0: torch.Tensor, masked: torch.Tensor, t: torch.Tensor,
               schedule: str | Schedule) -> torch.Tensor:
    """Per-token ELBO integrand at fixed t: w(t) * -log p(x_0^i | x_t) on masked positions, 0 elsewhere.

    log_probs: Float[B, L, C] (after SUBS), x0: Long[B, L], masked: Bool[B, L], t: Float[B]
    -> Float[B, L] in at least float32;  w(t) = -alpha'_t / (1 - alpha_t).
    The weight and the product are formed in at least float32: in bf16, 1 - alpha_t rounds to 0 for
    t below ~4e-3 and the weight would be inf."""
    return weighted_nll(-log_probs.gather(-1, x0[..., None])[..., 0], masked, t, schedule)


class ElboOutput(NamedTuple):
    per_token: torch.Tensor  # Float[B, L]: weighted NLL of masked tokens, 0 on visible ones
    mean: torch.Tensor  # scalar: mean over ALL tokens (MDLM / IMDM normalisation)


def elbo(denoiser: Callable, x0: torch.Tensor, t, *, process: Process | None = None,
         generator: torch.Generator | None = None, eps: torch.Tensor | None = None, efficient: bool = False,
         validate: bool = True) -> ElboOutput:
    """One Monte-Carlo draw of the continuous-time ELBO (in nats) at times t.

    x0: Long[B, L]; t: Float[B] in (0, 1]; process: the denoiser's own unless it carries none (schedule,
    mask id, label law); the mask pattern comes from `generator` (q_sample); the labels eps are `eps` when
    given, else drawn fresh from the process's label law (IMDM), else None (MDM).
    efficient=True: the denoiser returns the SUBS NLL itself, `denoiser(x_t, eps, t, targets=..., validate=...)
    -> Float[B, L]` with targets = x0 at masked positions and IGNORE elsewhere (imdm_lab.head_nll), so the
    full [B, L, C] log-probabilities are never formed; the same draws, the same value.
    validate=False: x0 and t are trusted (checked once by the caller), nothing is read back to the host;
    the denoiser is then called with validate=False too (it must take that keyword, as scale's DiT does).
    Returns per-token losses Float[B, L] and their mean over all B * L tokens."""
    proc = process_of(denoiser, process)
    schedule, mask_id, labels = proc.schedule, proc.mask_id, proc.labels
    check_tokens(x0, "x0", validate=validate)
    B, L = x0.shape
    t = check_times(t, B, validate=validate).to(x0.device)
    if validate and bool((t <= 0).any()):
        raise ValueError("t: expected times in (0, 1] for the ELBO (its weight diverges at t = 0)")
    if eps is None:
        eps = proc.draw_labels(B, L, generator=generator, device=x0.device)
    elif labels is not None:
        labels.check(eps, B, L)
    x_t, masked = q_sample(x0, t, schedule, mask_id, generator=generator, validate=validate)
    if efficient:
        nll = denoiser(x_t, eps, t, targets=torch.where(masked, x0, IGNORE), validate=validate)
        if not isinstance(nll, torch.Tensor) or tuple(nll.shape) != (B, L) or not nll.is_floating_point():
            got = tuple(nll.shape) if isinstance(nll, torch.Tensor) else type(nll).__name__
            raise ValueError(f"denoiser: expected a float NLL of shape {(B, L)} for targets=, got {got}")
        per_token = weighted_nll(nll, masked, t, schedule)
    else:
        # a caller that trusts its inputs tells the denoiser too (it takes `validate=`, as the DiT does)
        logits = denoiser(x_t, eps, t) if validate else denoiser(x_t, eps, t, validate=False)
        logp = subs_log_probs(logits, x_t, mask_id, validate=validate)
        per_token = elbo_terms(logp, x0, masked, t, schedule)
    return ElboOutput(per_token, per_token.mean())


def _kl_bwd(ls, lt):
    return (ls.exp() * (ls - lt)).sum(-1)


def _kl_fwd(ls, lt):
    return (lt.exp() * (lt - ls)).sum(-1)


def _tvd(ls, lt):
    return 0.5 * (ls.exp() - lt.exp()).abs().sum(-1)


def _mse(ls, lt):
    return ((ls.exp() - lt.exp()) ** 2).sum(-1)


# kind -> per-position divergence of Float[..., C] log-probs (student, teacher) -> Float[...]
DIVERGENCES = {
    "kl-bwd": _kl_bwd,  # KL(student || teacher), the reverse KL of SDTT / IM-SDTT
    "kl-fwd": _kl_fwd,  # KL(teacher || student)
    "tvd": _tvd,  # total variation 1/2 sum |p_s - p_t|
    "mse": _mse,  # squared L2 distance of the probability vectors
}


def divergence(student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str = "kl-bwd",
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position divergence between two log-prob tensors and its mean over the selected positions.

    student_logp, teacher_logp: Float[B, L, C] (after SUBS); mask: Bool[B, L] positions that count
    (e.g. the masked positions of x_t), None = all  ->  (Float[B, L], scalar mean over mask)."""
    if kind not in DIVERGENCES:
        raise ValueError(f"kind: expected one of {sorted(DIVERGENCES)}, got {kind!r}")
    if not isinstance(student_logp, torch.Tensor) or student_logp.dim() != 3 or not student_logp.is_floating_point():
        got = tuple(student_logp.shape) if isinstance(student_logp, torch.Tensor) else type(student_logp).__name__
        raise ValueError(f"student_logp: expected a float tensor of shape [B, L, C], got {got}")
    if not isinstance(teacher_logp, torch.Tensor) or teacher_logp.shape != student_logp.shape:
        got = tuple(teacher_logp.shape) if isinstance(teacher_logp, torch.Tensor) else type(teacher_logp).__name__
        raise ValueError(f"teacher_logp: expected the shape of student_logp {tuple(student_logp.shape)}, got {got}")
    per_pos = DIVERGENCES[kind](student_logp, teacher_logp)
    if mask is None:
        return per_pos, per_pos.mean()
    if mask.shape != per_pos.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a Bool tensor of shape {tuple(per_pos.shape)}, got "
                         f"{tuple(mask.shape)} {mask.dtype}")
    per_pos = torch.where(mask, per_pos, torch.zeros_like(per_pos))
    return per_pos, per_pos.sum() / mask.sum().clamp_min(1)
