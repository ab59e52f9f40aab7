"""The eps-driven coupling: a teacher whose random choices are functions of the mask labels eps.

ELBO training cannot make eps useful, because under the forward process eps is independent of x_0: the
ELBO's optimum is p(x_0^i | visible tokens), which does not read eps (measured in docs/toy-demo.md).
Here the teacher's completion is a deterministic function x_0 = F(x_t, eps):
every random choice of its rollout (which position next, which token) is read from eps, and a student
learns F online, on fresh eps every batch, by cross-entropy on the masked positions. An exact teacher
makes F push the label law forward to the data law, so a perfectly learned one-step student reproduces
p: partition-and-map.

How the randomness is read from eps (READERS):
- `kr` (Knothe-Rosenblatt): positions are completed left to right, the token of position i drawn by
  inverse CDF of the teacher's conditional at u_i = CDF(eps_i[0]) (coordinate 0 of its own label). F is
  monotone in each u_i, a triangular map.
- `reveal-times`: the order is the ascending order of eps_i[1] (each position's label carries its own
  reveal time); tokens as in `kr`. Which position comes first now changes with eps, so F is a
  discontinuous function of all the labels jointly.
- `joint` (finite K-state labels): one uniform from the labels of all positions read as a base-K number,
  u = (sum_i z_i K^(L-1-i) + U') / K^L with a dither U' from the teacher's own generator, then decoded
  left to right by arithmetic coding (each draw passes its rescaled residual on). This uses the full
  L log K nats the labels can carry; what the labels cannot determine stays random (the dither).
- `bits` (continuous labels): the same arithmetic decoding of one uniform u, whose binary digits are the
  halves of the label coordinates, b = [CDF(eps_i[d]) >= 1/2] in position-major order (at most 52), with
  a dither below the last digit. Each coordinate gives one digit, so the map from a label to a token is a
  few cuts at the median of several coordinates instead of a staircase of V - 1 edges on one.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from imdm_lab.counter_rng import generator_draw
from imdm_lab.labels import BELOW_ONE, MaskLabels
from imdm_lab.losses import IGNORE, subs_log_probs
from imdm_lab.masking import check_times, q_sample
from imdm_lab.process import Process, process_of


class Reading(NamedTuple):
    u: torch.Tensor  # Float64[B, L], the uniform that decides position i's token (only u[:, 0] if chained)
    order: torch.Tensor  # Long[B, L], the positions in the order the teacher completes them
    chained: bool  # arithmetic decoding: one u, each draw hands its residual to the next


def _label_uniform(eps: torch.Tensor, labels: MaskLabels, coordinate: int) -> torch.Tensor:
    """U(0, 1) variates from one coordinate of continuous labels: Float[B, L, D] -> Float64[B, L]."""
    if not labels.continuous:
        raise ValueError(f"reader: this reading needs continuous labels, got {labels.kind!r}")
    if coordinate >= labels.dim:
        raise ValueError(f"reader: needs labels with at least {coordinate + 1} coordinates, got dim {labels.dim}")
    return labels.to_uniform(eps[..., coordinate])


def _read_kr(eps, labels, generator):
    B, L = eps.shape[:2]
    order = torch.arange(L, device=eps.device).expand(B, L)
    return Reading(_label_uniform(eps, labels, 0), order, False)


def _read_reveal_times(eps, labels, generator):
    order = _label_uniform(eps, labels, 1).argsort(dim=1)
    return Reading(_label_uniform(eps, labels, 0), order, False)


def _chained(u: torch.Tensor, length: int) -> Reading:
    """One uniform per row, Float64[B], decoded left to right by arithmetic coding (`joint`, `bits`)."""
    B = u.shape[0]
    order = torch.arange(length, device=u.device).expand(B, length)
    return Reading(u.clamp(0.0, BELOW_ONE)[:, None].expand(B, length).contiguous(), order, True)


def _read_joint(eps, labels, generator):
    if labels.continuous:
        raise ValueError(f"reader: 'joint' reads finite K-state labels, got {labels.kind!r}")
    B, L = eps.shape
    digits = labels.K ** torch.arange(L - 1, -1, -1, device=eps.device, dtype=torch.float64)
    dither = generator_draw(torch.rand, B, generator=generator, device=eps.device, dtype=torch.float64)
    return _chained(((eps.double() * digits).sum(-1) + dither) / float(labels.K) ** L, L)


def _read_bits(eps, labels, generator):
    if not labels.continuous:
        raise ValueError(f"reader: 'bits' reads continuous labels, got {labels.kind!r}")
    B, L, D = eps.shape
    n = min(L * D, 52)  # binary digits that a float64 u holds exactly
    bits = (labels.to_uniform(eps) >= 0.5).reshape(B, L * D)[:, :n].double()  # position-major
    weights = 2.0 ** -torch.arange(1, n + 1, device=eps.device, dtype=torch.float64)
    dither = generator_draw(torch.rand, B, generator=generator, device=eps.device, dtype=torch.float64)
    return _chained(bits @ weights + dither * 2.0**-n, L)


# name -> (eps Float[B, L, D] | Long[B, L], labels, generator) -> Reading
READERS = {"kr": _read_kr, "reveal-times": _read_reveal_times, "joint": _read_joint, "bits": _read_bits}


def read_labels(eps: torch.Tensor, labels: MaskLabels, reader: str,
                generator: torch.Generator | None = None) -> Reading:
    if reader not in READERS:
        raise ValueError(f"reader: expected one of {sorted(READERS)}, got {reader!r}")
    return READERS[reader](eps, labels, generator)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token v with CDF(v-1) <= u < CDF(v), and the residual (u - CDF(v-1)) / p(v) in [0, 1).

    probs: Float64[N, C] normalised, u: Float64[N] in [0, 1) -> (Long[N], Float64[N]). The residual is again
    U(0, 1) given v when u is, which is what arithmetic decoding passes on."""
    cdf = probs.cumsum(-1)
    v = torch.minimum(u * cdf[:, -1], torch.nextafter(cdf[:, -1], torch.zeros_like(u)))
    token = torch.searchsorted(cdf, v[:, None], right=True)[:, 0].clamp_max(probs.shape[-1] - 1)
    p = probs.gather(1, token[:, None])[:, 0]
    low = cdf.gather(1, token[:, None])[:, 0] - p
    return token, ((v - low) / p).clamp(0.0, BELOW_ONE)


@torch.no_grad()
def eps_coupled_completion(teacher: Callable, x_t: torch.Tensor, eps: torch.Tensor, reading: Reading, *,
                           mask_id: int, t: torch.Tensor | None = None) -> torch.Tensor:
    """x_0 = F(x_t, eps): the teacher completes the masked positions one at a time (Long[B, L] -> Long[B, L]).

    Step j completes position order[:, j] (if masked) with the inverse CDF of the teacher's x0_hat given
    everything revealed so far, at u[:, j's position] (or the running residual when chained). The teacher
    sees the same labels throughout (no reset); L network calls."""
    x = x_t.clone()
    B, L = x.shape
    rows = torch.arange(B, device=x.device)
    u_run = reading.u[:, 0].clone()
    t = torch.ones(B, device=x.device) if t is None else t
    for j in range(L):
        pos = reading.order[:, j]
        todo = x[rows, pos] == mask_id
        if not todo.any():
            continue
        logits = teacher(x, eps, t.to(torch.get_default_dtype()))
        b, p = rows[todo], pos[todo]
        # SUBS is per position: only the positions completed now, not all B * L * V logits
        logp = subs_log_probs(logits[b, p][:, None], x[b, p][:, None], mask_id)[:, 0]
        u = u_run[b] if reading.chained else reading.u[b, p]
        token, residual = inverse_cdf(logp.double().softmax(-1), u)
        x[b, p] = token
        u_run[b] = residual
    return x


def scored_weights(masked: torch.Tensor, positions: int | None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Which masked positions the loss scores, and their weights: Bool[B, L] -> Float[B, L].

    positions None: every masked position, weight 1. An integer k: k of row b's m_b masked positions,
    uniformly at random without replacement (all if m_b <= k), each of weight m_b / min(k, m_b), so that
    E[weights] = masked exactly (each position is kept with probability min(k, m_b) / m_b): the
    subsampled loss is an unbiased estimate of the full one, and the read-out runs on B * k rows."""
    weights = masked.to(torch.get_default_dtype())
    if positions is None:
        return weights
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 1:
        raise ValueError(f"positions: expected an integer >= 1 or None, got {positions!r}")
    keys = generator_draw(torch.rand, *masked.shape, generator=generator, device=masked.device)
    keys = torch.where(masked, keys, 2.0)  # unmasked positions sort last
    rank = keys.argsort(dim=1).argsort(dim=1)  # the position's place in a random order of the masked ones
    m = masked.sum(1, keepdim=True)
    kept = masked & (rank < positions)
    return kept * (m / m.clamp_max(positions).clamp_min(1))


def eps_coupling_loss(student: Callable, teacher: Callable, x0: torch.Tensor, *, reader: str,
                      process: Process | None = None, full_mask_fraction: float = 0.5,
                      t: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      positions: int | None = None, efficient: bool = False,
                      completion: Callable | None = None) -> torch.Tensor:
    """Cross-entropy of the student against F(x_t, eps) on the masked positions, fresh eps (scalar).

    x0: Long[B, L] data. A fraction of the rows is fully masked (t = 1: the one-step map from labels to
    sequences), the others are data masked under the process's schedule at t ~ U(0, 1), or at the
    caller's times t Float[B] (completions, used by multi-step sampling). The targets are deterministic
    given (x_t, eps), so any positive time weighting has the same optimum; the loss is left unweighted,
    which avoids the 1/t variance of the ELBO weight. process: the student's own unless it carries none;
    its labels are what the teacher reads (the teacher may be an MDM with the same mask id).
    positions: score k random masked positions per row, reweighted to the same expectation
    (`scored_weights`); efficient=True: the student returns the NLL itself at those positions,
    `student(x_t, eps, t, targets=...)` (imdm_lab.head_nll), so its read-out runs on B * k rows.
    completion: F itself, (x_t, eps, reading, mask_id=, t=) -> x_0, when the teacher has it in closed
    form (toy_tasks.oracle.AlignOracle); default the generic loop over the teacher's calls."""
    proc = process_of(student, process)
    if proc.labels is None:
        raise ValueError("process: expected a student with mask labels (an IMDM) for the eps-driven coupling")
    if isinstance(full_mask_fraction, bool) or not isinstance(full_mask_fraction, (int, float)) \
            or not 0.0 <= full_mask_fraction <= 1.0:
        raise ValueError(f"full_mask_fraction: expected a number in [0, 1], got {full_mask_fraction!r}")
    mask_id = proc.mask_id
    B, L = x0.shape
    dev = x0.device
    if t is None:
        t = generator_draw(torch.rand, B, generator=generator, device=dev, dtype=torch.float64)
    else:
        t = check_times(t, B).to(device=dev, dtype=torch.float64, copy=True)
    t[: int(round(full_mask_fraction * B))] = 1.0
    x_t, masked = q_sample(x0, t, proc.schedule, mask_id, generator=generator)
    labels = proc.labels
    eps = labels.draw(B, L, generator=generator, device=dev)
    reading = read_labels(eps, labels, reader, generator)
    if completion is None:
        target = eps_coupled_completion(teacher, x_t, eps, reading, mask_id=mask_id, t=t)
    else:
        target = completion(x_t, eps, reading, mask_id=mask_id, t=t)
    weights = scored_weights(masked, positions, generator)
    t_in = t.to(torch.get_default_dtype())
    if efficient:
        nll = student(x_t, eps, t_in, targets=torch.where(weights > 0, target, IGNORE), validate=False)
    else:
        logp = subs_log_probs(student(x_t, eps, t_in), x_t, mask_id)
        nll = -logp.gather(-1, target[..., None])[..., 0]
    return (weights * torch.where(weights > 0, nll, torch.zeros_like(nll))).sum() / masked.sum().clamp_min(1)
