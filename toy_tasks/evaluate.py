"""Sample laws of trained toy models measured against the task's exact law p.

For one model and a step count: samples from the shared ancestral sampler give success (align: all
tokens equal), unigram entropy (of all generated tokens pooled: a collapse onto few values lowers it),
coverage (fraction of the support of p hit at least once) and the number of network calls; KL(p || q)
comes from the most exact estimator available (KL_ESTIMATORS):

- `exact`: one step with a finite label set (an MDM: one label; a K-state mask: K^L label configurations).
  A one-step sampler is a mixture of product laws, q(x) = mean_z prod_i q_i(x_i | z), enumerated over z.
- `labels-mc`: one step with continuous labels (or too many finite ones): the same mixture averaged over
  n label draws (an unbiased estimate of q(x) for every x in the support); CI by bootstrap over the draws.
- `paths`: several steps of a model without labels: q(x) estimated without bias for every x in the
  support by forcing the sampler's paths onto x (see kl_paths); CI by bootstrap over the paths. Unlike
  a histogram it is finite when p has cells far below 1 / n.
- `histogram`: several steps of a model with labels, whose law given eps is close to deterministic, so
  forced paths are as noisy as a histogram (and several steps with a greedy last step, which forced
  paths do not follow): plug-in KL of the counts of the >= 20 |support| samples;
  CI by bootstrap of the counts; null (+inf) when a sequence of the support was never drawn.
- `none`: fewer than 20 |support| draws (a support too large to resolve, the paper's align at
  V = 50 000) and no exact formula: KL is not reported (null). On `align` the one-step product law of an
  MDM is still exact, and -ln(success) is a lower bound on KL(p || q) for any q: by Jensen,
  KL = -ln V - mean_c ln q(c) >= -ln(sum_c q(c)) = -ln P_q(all equal).
Only q on the support of p enters KL(p || q) = sum_{p(x) > 0} p(x) ln(p(x) / q(x)).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from imdm_lab.losses import subs_log_probs
from imdm_lab.posterior import imdm_coefficients
from imdm_lab.sampling import SamplerOptions, sample
from imdm_lab.schedules import get_schedule
from toy_tasks.label_slices import support_index
from toy_tasks.models import ToyDenoiser

BOOTSTRAP = 200
ENUMERATION_LIMIT = 2**12  # label configurations K^L enumerated by `exact` (more: `labels-mc`)
CHUNK = 8192  # rows per network call when sampling, enumerating or averaging over labels
SAMPLE_NUMBERS = 2**24  # a sampling call's logits stay near this many numbers (V = 50 000: 33 rows)
GROUPS = 50  # groups of label draws resampled by the bootstrap of `labels-mc`


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        return float(np.sum(p * (np.log(p) - np.log(q))))


def _ci(values: np.ndarray) -> list[float] | None:
    """95% percentile interval; None when a resample missed a support sequence (KL = +inf there)."""
    if not np.all(np.isfinite(values)):
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _bootstrap_rng(gen: torch.Generator) -> np.random.Generator:
    """A numpy generator for the bootstrap, seeded from the run's torch generator."""
    return np.random.default_rng(int(torch.randint(0, 2**31, (), generator=gen)))


@torch.no_grad()
def _support_log_weights(model: ToyDenoiser, eps, support: torch.Tensor, greedy: bool) -> torch.Tensor:
    """log prod_i q_i(x_i | eps_n) for every label draw n and support row s: Float64[N, S]."""
    N, L = eps.shape[0] if eps is not None else 1, model.L
    x = torch.full((N, L), model.mask_id, dtype=torch.int64)
    logp = subs_log_probs(model(x, eps, torch.ones(N)), x, model.mask_id).double()
    if greedy:  # the greedy last step puts all mass on the argmax
        logp = torch.where(logp == logp.max(-1, keepdim=True).values, torch.zeros_like(logp),
                           torch.full_like(logp, -math.inf))
    pos = torch.arange(L)
    return logp[:, pos[None, :], support].sum(-1)  # [N, S, L] -> [N, S]


def _rows_per_call(model: ToyDenoiser, support: torch.Tensor) -> int:
    """Label draws per network call, so that the [rows, S, L] gather stays near 2^22 numbers."""
    return max(1, min(CHUNK, 2**22 // (model.L * max(len(support), model.V))))


def kl_exact(model: ToyDenoiser, view, greedy: bool, n: int, gen) -> tuple[float, None]:
    """One step, finite labels: enumerate every label configuration (a single one for an MDM)."""
    support = torch.from_numpy(view.support)
    if model.process.labels is None:
        chunks = [None]
    else:
        K, L = model.process.labels.K, model.L
        codes = torch.arange(K**L)
        labels = torch.stack([(codes // K ** (L - 1 - i)) % K for i in range(L)], dim=1)
        chunks = labels.split(_rows_per_call(model, support))
    total = sum(_support_log_weights(model, e, support, greedy).exp().sum(0) for e in chunks)
    count = 1 if model.process.labels is None else model.process.labels.K ** model.L
    return _kl(view.support_probs, (total / count).numpy()), None


def kl_labels_mc(model: ToyDenoiser, view, greedy: bool, n: int, gen) -> tuple[float, list | None]:
    """One step: q(x) averaged over n label draws; CI by bootstrap over GROUPS groups of draws (draw j
    belongs to group j mod GROUPS), which keeps memory at GROUPS x S however large n is."""
    support = torch.from_numpy(view.support)
    sums = torch.zeros(GROUPS, len(support), dtype=torch.float64)
    rows = _rows_per_call(model, support)
    for start in range(0, n, rows):
        m = min(rows, n - start)
        w = _support_log_weights(model, model.process.labels.draw(m, model.L, generator=gen), support, greedy).exp()
        sums.index_add_(0, torch.arange(start, start + m) % GROUPS, w)
    sizes = np.bincount(np.arange(n) % GROUPS, minlength=GROUPS)
    rng = _bootstrap_rng(gen)
    pick = rng.multinomial(GROUPS, np.full(GROUPS, 1.0 / GROUPS), size=BOOTSTRAP)
    boot = (pick @ sums.numpy()) / (pick @ sizes)[:, None]
    p = view.support_probs
    return _kl(p, sums.sum(0).numpy() / n), _ci(np.array([_kl(p, q) for q in boot]))


@torch.no_grad()
def kl_paths(model: ToyDenoiser, view, steps: int, n: int, gen) -> tuple[float, list | None]:
    """Several steps: an unbiased estimate of q(x) for every support sequence x by forcing the sampler's
    paths onto x. Which positions unmask (and which labels reset) at a step does not depend on the
    tokens, so q(x) = E_branches[ prod over reveals of q_theta(x_i | state, eps) ]: draw the branches as
    the sampler does, write x's tokens where positions unmask, multiply the model's probabilities.
    n // |S| paths per sequence (at least 16); CI by bootstrap over each sequence's paths."""
    S, L = view.support.shape
    R = max(16, n // S)
    target = torch.from_numpy(view.support).repeat_interleave(R, dim=0)  # [S R, L]
    N = target.shape[0]
    x = torch.full((N, L), model.mask_id, dtype=torch.int64)
    eps = model.process.draw_labels(N, L, generator=gen)
    sched = get_schedule("linear")
    times = sched.grid(steps)
    alphas = sched.alpha(times)
    alphas[-1] = 1.0
    logw = torch.zeros(N, dtype=torch.float64)
    for j in range(steps):
        masked = x == model.mask_id
        if not masked.any():
            break
        unmask, keep, _ = imdm_coefficients(alphas[j], alphas[j + 1], fix_eps=model.process.labels is None)
        r = torch.rand((N, L), generator=gen, dtype=torch.float64)
        reveal = masked & (r < unmask)
        rows = reveal.any(1).nonzero()[:, 0]  # the network is only needed where a token is revealed
        t = torch.full((CHUNK,), float(times[j]))
        for i in range(0, len(rows), CHUNK):
            b = rows[i:i + CHUNK]
            logp = subs_log_probs(model(x[b], None if eps is None else eps[b], t[:len(b)]), x[b], model.mask_id)
            hit = logp.gather(-1, target[b][..., None])[..., 0].double()
            logw[b] += torch.where(reveal[b], hit, torch.zeros_like(hit)).sum(1)
        x = torch.where(reveal, target, x)
        reset = masked & (r >= unmask + keep)
        if model.process.labels is not None and reset.any():
            eps[reset] = model.process.labels.draw_rows(int(reset.sum()), generator=gen)
    w = logw.exp().reshape(S, R).numpy()
    rng = _bootstrap_rng(gen)
    p = view.support_probs
    boot = [(rng.multinomial(R, np.full(R, 1.0 / R), size=S) * w).sum(1) / R for _ in range(BOOTSTRAP)]
    return _kl(p, w.mean(1)), _ci(np.array([_kl(p, q) for q in boot]))


def kl_histogram(counts: np.ndarray, n: int, view, gen) -> tuple[float | None, list | None]:
    """Plug-in KL of the sample histogram on the support, bootstrap CI of the multinomial counts."""
    if np.any(counts == 0):
        return None, None
    cells = np.append(counts, n - counts.sum()) / n  # the support cells and "anything else"
    rng = _bootstrap_rng(gen)
    boot = rng.multinomial(n, cells, size=BOOTSTRAP)[:, :-1] / n
    p = view.support_probs
    return _kl(p, counts / n), _ci(np.array([_kl(p, q) for q in boot]))


@torch.no_grad()
def left_to_right_kl(model: ToyDenoiser, view) -> float:
    """Exact KL(p || q_lr) of the law q_lr(x) = prod_i q(x_i | x_<i) of revealing one token at a time,
    left to right: the law of the `kr` eps-driven coupling of this model as a teacher."""
    X = torch.from_numpy(view.support)
    S, L = X.shape
    logq = torch.zeros(S, dtype=torch.float64)
    for i in range(L):
        x = torch.where(torch.arange(L) < i, X, torch.full_like(X, model.mask_id))
        eps = model.process.draw_labels(S, L)
        logp = subs_log_probs(model(x, eps, torch.ones(S)), x, model.mask_id).double()
        logq += logp[torch.arange(S), i, X[:, i]]
    return _kl(view.support_probs, logq.exp().numpy())


def support_counts(samples: np.ndarray, support: np.ndarray) -> np.ndarray:
    """How often each support row occurs among the samples: Long[S]."""
    rows, counts = np.unique(samples, axis=0, return_counts=True)
    ids = support_index(rows, support)
    out = np.zeros(len(support), dtype=np.int64)
    out[ids[ids >= 0]] = counts[ids >= 0]  # the rows are distinct, so each support index occurs once
    return out


def pooled_entropy(samples: np.ndarray, V: int) -> float:
    """Entropy (nats) of the token frequencies of all samples pooled (scale.evaluation.metrics.unigram_entropy is
    another statistic: the mean over samples of each sample's own token entropy)."""
    f = np.bincount(samples.ravel(), minlength=V) / samples.size
    f = f[f > 0]
    return float(-(f * np.log(f)).sum()) + 0.0  # + 0.0: no "-0.000" for a constant sample


def kl_method(model: ToyDenoiser, steps: int, greedy: bool = False, resolved: bool = True) -> str:
    """The estimator of KL(p || q) for this sampler (see the module docstring). The forced paths follow
    ancestral draws only, so a greedy last step after others is measured by its histogram; `resolved`:
    the draws number at least 20 |support|, else only `exact` is used."""
    labels = model.process.labels
    if steps == 1 and (labels is None or (not labels.continuous and labels.K ** model.L <= ENUMERATION_LIMIT)):
        return "exact"
    if not resolved:
        return "none"
    if steps > 1:
        return "paths" if labels is None and not greedy else "histogram"
    return "labels-mc"


class Draws(NamedTuple):
    """What an estimator may use besides the model and the task: the sampler's step count and last-step
    rule, the number of draws, their counts on the support and the run's generator."""
    steps: int
    greedy: bool
    n: int
    counts: np.ndarray
    gen: torch.Generator


# estimator -> (model, view, draws) -> (KL, its 95% interval or None)
KL_ESTIMATORS = {
    "exact": lambda model, view, d: kl_exact(model, view, d.greedy, d.n, d.gen),
    "labels-mc": lambda model, view, d: kl_labels_mc(model, view, d.greedy, d.n, d.gen),
    "paths": lambda model, view, d: kl_paths(model, view, d.steps, d.n, d.gen),
    "histogram": lambda model, view, d: kl_histogram(d.counts, d.n, view, d.gen),
    "none": lambda model, view, d: (None, None),  # too few draws to resolve the support
}


def evaluate(model: ToyDenoiser, view, steps: int, n: int, seed: int, last_step: str = "ancestral") -> dict:
    """One result row: kl, kl_ci, success, entropy, coverage, distinct (support sequences drawn at least
    once), nfe (and the estimator used)."""
    gen = torch.Generator().manual_seed(seed)
    rows = max(1, min(CHUNK, SAMPLE_NUMBERS // (model.L * model.V)))
    options = SamplerOptions(last_step=last_step)
    chunks = [sample(model, batch_size=min(rows, n - start), steps=steps, generator=gen, options=options)
              for start in range(0, n, rows)]
    samples = torch.cat([c.tokens for c in chunks]).numpy()
    nfe = float(np.mean([c.nfe for c in chunks]))
    counts = support_counts(samples, view.support)
    how = kl_method(model, steps, last_step == "greedy", resolved=n >= 20 * len(view.support))
    kl, ci = KL_ESTIMATORS[how](model, view, Draws(steps, last_step == "greedy", n, counts, gen))
    success = float((samples == samples[:, :1]).all(1).mean()) if view.name == "align" else None
    return {"kl": kl, "kl_ci": ci, "success": success, "entropy": pooled_entropy(samples, view.V),
            "coverage": float((counts > 0).mean()), "distinct": int((counts > 0).sum()), "nfe": nfe,
            "kl_estimator": how}
