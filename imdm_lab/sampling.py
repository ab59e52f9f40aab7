"""One ancestral sampler for every denoiser: MDM (process.labels None) and IMDM (a MaskLabels law).

What the model knows, the sampler reads from it: the mask id, the schedule, the label law and the cache
rule come from `denoiser.process` (imdm_lab.process), the length from `denoiser.length` when it has one.

Step j goes from t_j to s = t_{j+1} on the schedule's grid t_j = t_start * (1 - j/k); the last step has
alpha_s = 1, so it reveals every remaining mask. For each masked position the branch (unmask / keep eps /
reset eps) is drawn first from the token-independent coefficients of `imdm_lab.posterior`, then a token
is drawn from x0_hat only where the position unmasks. This has exactly the law of one categorical draw
from the (C+2)-way posterior but never builds it, and converts only the unmasking rows to float64.

The sampler owns the labels eps: it draws them from `seeds` through the counter-based hash (stream 0)
or from `generator`; a reset at step j gets a fresh label, hashed from (seed, stream j + 1, position)
when seeds are given, and the denoiser sees the current labels at every call.

Cache: with no time conditioning, the network output depends only on (x_t, eps); when a step neither
reveals a token nor resets a label the previous output is reused (one network call saved). The
process says whether the denoiser reads t (then nothing is reused).

Two modes with the same law:
- default: the masked positions are found with nonzero each step and only they draw (their count
  sets how much of the generator a step consumes, and host syncs size the buffers);
- dense (`SamplerOptions(dense=True)`): every one of the B x L positions draws a branch uniform and a
  token uniform each step, the results are kept where the position is masked by torch.where; no
  nonzero, boolean indexing or `if` on a tensor inside the loop, so a step reads nothing back (the first
  network call checks the ids of `given` once). The network is called at every step (skipping it would
  need a host decision) and the draws cost B * L * C per step instead of (unmasking rows) * C.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from imdm_lab.checks import check_cost, check_int
from imdm_lab.counter_rng import generator_draw
from imdm_lab.labels import MaskLabels
from imdm_lab.losses import NEG_INF
from imdm_lab.masking import check_times, check_tokens
from imdm_lab.posterior import imdm_coefficients
from imdm_lab.process import Process, process_of
from imdm_lab.schedules import check_steps, get_schedule


class SampleOutput(NamedTuple):
    tokens: torch.Tensor  # Long[B, L]
    nfe: int  # number of network calls
    eps_init: torch.Tensor | None  # labels before the first step (Float[B, L, D] | Long[B, L])
    eps_final: torch.Tensor | None  # labels after the last step (with all resets applied)


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None,
                overwrite: bool = False) -> torch.Tensor:
    """Inverse-CDF draw of one class per row: Float[N, C] (non-negative, any positive total) -> Long[N].

    One uniform per row (in probs' dtype) is scaled by the row total and located in the cumulative sum.
    v is kept strictly below the total, so the first index with cdf > v always has positive mass.
    overwrite=True turns probs into its cumulative sum in place (no N x C allocation)."""
    cdf = probs.cumsum_(-1) if overwrite else probs.cumsum(-1)
    total = cdf[:, -1:]
    v = generator_draw(torch.rand, total.shape, generator=generator, device=probs.device, dtype=probs.dtype) * total
    v = torch.minimum(v, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, v, right=True)[:, 0].clamp_max(probs.shape[-1] - 1)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Top-p filter: keep the smallest set of most likely classes whose mass reaches top_p; renormalise.

    Float[N, C] normalised rows -> Float[N, C]. A class is kept when the mass strictly before it (in
    descending order) is below top_p, so the most likely class is always kept."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p
    kept = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
    out = torch.zeros_like(probs).scatter_(-1, order, kept)
    return out / out.sum(-1, keepdim=True)


def token_weights_(z: torch.Tensor, mask_id: int, temperature: float = 1.0,
                   top_p: float = 1.0) -> torch.Tensor:
    """In place: logits Float[N, C] of masked rows -> weights proportional to x0_hat.

    SUBS (no mass on the mask class), temperature p^(1/T), then nucleus (which normalises):
        w = exp((z - max z) / T),
    the row maximum subtracted before the division, so that z / T never overflows at a tiny T: every
    exponent is <= 0 with 0 at the argmax, and as T -> 0 the weights tend to the argmax, never to NaN."""
    if mask_id < z.shape[-1]:
        z[:, mask_id] = NEG_INF
    z.sub_(z.max(-1, keepdim=True).values)
    if temperature != 1.0:
        z.div_(temperature)
    z.exp_()
    return nucleus(z / z.sum(-1, keepdim=True), top_p) if top_p < 1.0 else z


class _Rows:
    """Reusable N x C buffers for the rows that unmask. A fresh tensor of that size each step would be
    paged in (zero-filled) anew by the OS, which costs about as much as the arithmetic done on it."""

    def __init__(self):
        self.buffers = {}

    def take(self, logits: torch.Tensor, flat: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """logits.view(B*L, C)[flat] converted to dtype: Float[N, C], valid until the next take."""
        src = logits.reshape(-1, logits.shape[-1])
        rows = torch.index_select(src, 0, flat, out=self._buffer("in", flat.numel(), src))
        if dtype == src.dtype:
            return rows
        return self._buffer("work", flat.numel(), src, dtype).copy_(rows)

    def _buffer(self, key, n, like, dtype=None):
        dtype = dtype or like.dtype
        buf = self.buffers.get(key)
        if buf is None or buf.shape[0] < n or buf.dtype != dtype:
            # with slack: the number of rows fluctuates from step to step around its mean
            buf = torch.empty(n + n // 4, like.shape[-1], dtype=dtype, device=like.device)
            self.buffers[key] = buf
        return buf[:n]


def _draw(probs, generator):
    return categorical(probs, generator, overwrite=True)


def _argmax(probs, generator):
    return probs.argmax(-1)


# last_step -> how the final step (alpha_s = 1) picks the tokens it reveals
LAST_STEPS = {"ancestral": _draw, "greedy": _argmax}


@dataclass(frozen=True)
class SamplerOptions:
    """How `sample` draws; what a call is about (the model, batch size, steps, given tokens, seeds,
    generator, device) are its arguments.

    temperature and top_p act on x0_hat, not on the keep/reset masses; last_step: how the final step
    (alpha_s = 1) picks the tokens it reveals (LAST_STEPS); fix_eps: no label is ever reset; cache: reuse
    the network output over steps that change nothing, default the process's rule (refused where the
    network reads t, and in the dense mode, which calls the network at every step); dtype: float64 or
    float32 for the categorical draws; dense: the sync-free mode (module docstring); revalidate=False: the
    denoiser takes `validate=` (as scale.model.dit.DiT does) and gets validate=False at every call after
    the first, whose ids the sampler checks (the states after it hold only the sampler's own draws).
    Refused on construction, with the option's name, unless every value is of its kind and range."""
    temperature: float = 1.0
    top_p: float = 1.0
    last_step: str = "ancestral"
    fix_eps: bool = False
    cache: bool | None = None
    dtype: torch.dtype = torch.float64
    dense: bool = False
    revalidate: bool = True

    def __post_init__(self):
        temperature, top_p, dtype = self.temperature, self.top_p, self.dtype
        # finite: at T = inf every logit, the mask's NEG_INF included, would become 0 and the mask drawable
        if not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature!r}")
        if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
            raise ValueError(f"top_p: expected a number in (0, 1], got {top_p!r}")
        if self.last_step not in LAST_STEPS:
            raise ValueError(f"last_step: expected one of {sorted(LAST_STEPS)}, got {self.last_step!r}")
        if dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype: expected torch.float64 or torch.float32, got {dtype!r}")
        # below the smallest normal number of the draw dtype T is subnormal there, or 0 (0 / 0 at the argmax)
        if temperature < torch.finfo(dtype).tiny:
            raise ValueError(f"temperature: expected a number >= {torch.finfo(dtype).tiny:.4g} (the smallest "
                             f"normal {dtype}), got {temperature!r}")
        for name in ("fix_eps", "dense", "revalidate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        if self.cache is not None and not isinstance(self.cache, bool):
            raise ValueError(f"cache: expected a bool or None, got {self.cache!r}")
        if self.dense and self.cache:
            raise ValueError("cache: expected False or None with dense=True (the dense mode calls the network "
                             "at every step: skipping a call needs a host decision)")


def _initial_state(batch_size, length, mask_id, given, given_mask, device):
    """x before the first step: all masks, or `given` kept where given_mask (default: given != mask)."""
    x = torch.full((batch_size, length), mask_id, dtype=torch.int64, device=device)
    if given is None:
        if given_mask is not None:
            raise ValueError("given_mask: expected None when no `given` tokens are passed")
        return x
    check_tokens(given, "given", batch_size, length)
    if given_mask is None:
        given_mask = given != mask_id
    if not isinstance(given_mask, torch.Tensor) or given_mask.dtype != torch.bool \
            or tuple(given_mask.shape) != (batch_size, length):
        raise ValueError(f"given_mask: expected a Bool tensor of shape {(batch_size, length)}")
    return torch.where(given_mask.to(device), given.to(device), x)


def _initial_eps(process, seeds, batch_size, length, generator, device):
    if process.labels is not None and seeds is not None \
            and (not isinstance(seeds, torch.Tensor) or tuple(seeds.shape) != (batch_size,)):
        raise ValueError(f"seeds: expected an integer tensor of shape ({batch_size},)")
    return process.draw_labels(batch_size, length, generator=generator, seeds=seeds, device=device)


def _length(denoiser, length, given):
    """The sequence length: `length`, else that of `given`, else the denoiser's own `.length`."""
    if length is None:
        length = given.shape[1] if isinstance(given, torch.Tensor) and given.dim() == 2 \
            else getattr(denoiser, "length", None)
    if length is None:
        raise ValueError("length: expected an integer >= 1 (the denoiser records no .length)")
    return check_int("length", length, 1)


def _device(denoiser, given, device):
    """`device`, else that of `given`, else that of the denoiser's parameters, else the CPU."""
    if device is not None:
        return device
    if given is not None:
        return given.device
    params = denoiser.parameters() if isinstance(denoiser, torch.nn.Module) else iter(())
    first = next(params, None)
    return first.device if first is not None else "cpu"


def _call(denoiser, x, eps, t, mask_id, check_ids, revalidate=True):
    """One network call; its output shape is checked every time (free), the ids of x on the first call
    only (a read-back): later states differ from it only by the sampler's own draws, which lie in [0, C).
    revalidate=False: after that first call the denoiser is told so (validate=False), so that it does
    not read the ids back either."""
    trusted = {} if check_ids or revalidate else {"validate": False}
    logits = denoiser(x, eps, t.to(torch.get_default_dtype()), **trusted)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape \
            or logits.shape[-1] < max(mask_id, 1):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"denoiser: expected logits of shape [{x.shape[0]}, {x.shape[1]}, C] with "
                         f"C >= mask_id = {mask_id}, got {got}")
    if check_ids:
        visible = x != mask_id
        if visible.any() and int(x[visible].max()) >= logits.shape[-1]:
            raise ValueError(f"given: expected token ids in [0, {logits.shape[-1]}) or the mask id, "
                             f"got {int(x[visible].max())}")
    return logits


class _Plan(NamedTuple):
    """What the steps read and never change. times Float64[B, k+1]: t_start times the schedule's grid;
    unmask, keep Float64[B, k]: the branch probabilities of every step (imdm_lab.posterior); resets: the
    law fresh labels are drawn from, None when no label is reset (an MDM, or fix_eps); cache: whether the
    default mode reuses the network output over a step that changes nothing."""
    times: torch.Tensor
    unmask: torch.Tensor
    keep: torch.Tensor
    mask_id: int
    resets: MaskLabels | None
    cache: bool


# Float64 numbers per (row, step) of a plan at its peak: times, alphas, the branch probabilities and
# their temporaries (measured: 6.2 [B, k+1] arrays for an MDM, 7.2 with label resets)
PLAN_ARRAYS = 8


def plan_bytes(batch_size: int, steps: int) -> int:
    """Bytes of the plan of one `sample` call of batch_size rows and `steps` steps (its [B, k+1] float64
    arrays): the memory the step count costs, allocated before the first step."""
    return PLAN_ARRAYS * 8 * batch_size * (steps + 1)


def check_steps_memory(name: str, steps: int, batch_size: int, budget: int) -> int:
    """steps, refused (naming the largest step count that fits) when the plan of a batch of batch_size
    rows exceeds `budget` bytes."""
    return check_cost(name, check_int(name, steps, 1), lambda k: plan_bytes(batch_size, k), budget,
                      f"the sampler's time grid of {batch_size} sequences")


def _plan(proc: Process, t0: torch.Tensor, steps: int, options: SamplerOptions) -> _Plan:
    """The grid t_j = t0 * (1 - j/k) of every row (the last step has alpha_s = 1) and, since they depend
    on the grid only, the branch probabilities of every step at once."""
    sched = get_schedule(proc.schedule)
    times = t0[:, None] * sched.grid(steps).to(t0.device)[None, :]  # Float64[B, k+1], grid[0] = 1
    alphas = sched.alpha(times)
    alphas[:, -1] = 1.0
    resets = proc.labels is not None and not options.fix_eps
    unmask, keep, _ = imdm_coefficients(alphas[:, :-1], alphas[:, 1:], fix_eps=not resets)
    cache = proc.cache and not options.dense if options.cache is None else options.cache
    return _Plan(times, unmask, keep, proc.mask_id, proc.labels if resets else None, cache)


@torch.no_grad()
def sample(denoiser: Callable, *, batch_size: int, steps: int, length: int | None = None,
           process: Process | None = None, given: torch.Tensor | None = None,
           given_mask: torch.Tensor | None = None, t_start: float | torch.Tensor = 1.0,
           seeds: torch.Tensor | None = None, generator: torch.Generator | None = None, device=None,
           options: SamplerOptions = SamplerOptions()) -> SampleOutput:
    """k-step ancestral sampling from a denoiser (MDLM eq. 7; IMDM keep / reset: Ugness/IMDM algo.py,
    IMDM._ancestral_update).

    denoiser(x_t Long[B, L], eps, t Float[B]) -> logits Float[B, L, C]; process: the denoiser's own
    (`denoiser.process`) unless it carries none; length: default that of `given`, else `denoiser.length`;
    given/given_mask: Long/Bool[B, L] tokens held fixed (prefix, suffix, infilling; positions equal to the
    mask id are generated); t_start: float or Float[B], the time of the (partially) masked input; seeds:
    Long[B] for reproducible labels; device: default that of `given`, else of the denoiser's parameters;
    options: how to draw (SamplerOptions: temperature, top_p, last step, fixed labels, cache, draw dtype,
    dense mode, revalidation).
    Returns tokens Long[B, L], the number of network calls and the initial / final labels."""
    proc = process_of(denoiser, process)
    length = _length(denoiser, length, given)
    check_steps(steps)
    check_int("batch_size", batch_size, 1)
    if not isinstance(options, SamplerOptions):
        raise ValueError(f"options: expected a SamplerOptions, got {type(options).__name__}")
    if options.cache and not proc.cache:
        raise ValueError("cache: expected False or None for a denoiser that reads t (process.time_conditioning)")
    device = _device(denoiser, given, device)
    x = _initial_state(batch_size, length, proc.mask_id, given, given_mask, device)
    t0 = check_times(t_start, batch_size, "t_start").to(device=device, dtype=torch.float64)
    plan = _plan(proc, t0, steps, options)
    eps = _initial_eps(proc, seeds, batch_size, length, generator, device)
    eps_init = None if eps is None else eps.clone()
    run = _dense_steps if options.dense else _steps
    x, eps, nfe = run(denoiser, x, eps, plan, seeds, generator, options)
    return SampleOutput(x, nfe, eps_init, eps)


def _steps(denoiser, x, eps, plan: _Plan, seeds, generator, options: SamplerOptions):
    """The k steps of the default mode: (x Long[B, L], eps) -> (x, eps, network calls) after the last step.

    Per step j only the masked positions (b, i) draw: r ~ U(0, 1) in float64 picks the branch, unmask if
    r < unmask_bj, keep if r < unmask_bj + keep_bj, else reset; a token is drawn from x0_hat (in
    `options.dtype`) for the unmasking rows only, and a fresh label for the resetting ones. The network
    output is reused over a step that reveals and resets nothing when plan.cache says so."""
    B, L = x.shape
    device, mask_id, steps = x.device, plan.mask_id, plan.times.shape[1] - 1
    logits, nfe, rows = None, 0, _Rows()
    for j in range(steps):
        b, pos = (x == mask_id).nonzero(as_tuple=True)
        if b.numel() == 0:
            break
        if logits is None or not plan.cache:
            logits, nfe = _call(denoiser, x, eps, plan.times[:, j], mask_id, nfe == 0, options.revalidate), nfe + 1
        unmask, keep = plan.unmask[:, j], plan.keep[:, j]
        r = generator_draw(torch.rand, (B, L), generator=generator, device=device, dtype=torch.float64)[b, pos]
        reveal = r < unmask[b]
        ub, upos = b[reveal], pos[reveal]
        if ub.numel():
            weights = token_weights_(rows.take(logits, ub * L + upos, options.dtype), mask_id, options.temperature,
                                     options.top_p)
            pick = LAST_STEPS[options.last_step] if j == steps - 1 else _draw
            x[ub, upos] = pick(weights, generator)
        reset = r >= (unmask + keep)[b] if plan.resets is not None else torch.zeros_like(reveal)
        rb, rpos = b[reset], pos[reset]
        if rb.numel():
            fresh = (plan.resets.at(seeds.to(device)[rb], j + 1, rpos, dtype=eps.dtype, length=L)
                     if seeds is not None
                     else plan.resets.draw_rows(rb.numel(), generator=generator, device=device, dtype=eps.dtype))
            eps[rb, rpos] = fresh
        if ub.numel() or rb.numel():
            logits = None
    return x, eps, nfe


def _dense_steps(denoiser, x, eps, plan: _Plan, seeds, generator, options: SamplerOptions):
    """The k steps of the dense mode: (x Long[B, L], eps) -> (x, eps, network calls = k) after the last step.

    Per step j and position (b, i): r ~ U(0, 1) in float64 picks the branch of a masked position,
    unmask if r < unmask_bj, keep if r < unmask_bj + keep_bj, else reset (only where plan.resets is a
    law); a token is drawn for every position from x0_hat (one uniform each, in `options.dtype`) and kept
    where the position unmasks; fresh labels are drawn for every position and kept where it resets."""
    B, L = x.shape
    device, mask_id, steps, labels = x.device, plan.mask_id, plan.times.shape[1] - 1, plan.resets
    for j in range(steps):
        masked = x == mask_id
        logits = _call(denoiser, x, eps, plan.times[:, j], mask_id, j == 0, options.revalidate)
        unmask, keep = plan.unmask[:, j, None], plan.keep[:, j, None]
        r = generator_draw(torch.rand, (B, L), generator=generator, device=device, dtype=torch.float64)
        weights = token_weights_(logits.reshape(B * L, -1).to(options.dtype, copy=True), mask_id,
                                 options.temperature, options.top_p)
        pick = LAST_STEPS[options.last_step] if j == steps - 1 else _draw
        x = torch.where(masked & (r < unmask), pick(weights, generator).view(B, L), x)
        if labels is not None:
            reset = masked & (r >= unmask + keep)
            fresh = (labels.from_seeds(seeds.to(device), L, stream=j + 1, dtype=eps.dtype) if seeds is not None
                     else labels.draw(B, L, generator=generator, device=device, dtype=eps.dtype))
            eps = torch.where(reset[..., None] if eps.dim() == 3 else reset, fresh, eps)
    return x, eps, steps
