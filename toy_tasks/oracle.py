"""Oracle denoisers: the exact answers a trained network aims at, of an enumerable joint p (shape (V,)*L)
or of `align` in closed form.

All follow the Denoiser protocol of imdm_lab (x_t Long[B, L], eps, t Float[B]) -> logits Float[B, L, V]
with V classes and mask id V, and carry their process and length as the toy networks do. Zero
probabilities become the finite NEG_INF logit.

oracle-mdm   p(x_i | visible tokens) at every position: the ELBO-optimal denoiser of MDM and of IMDM
             (eps is independent of x_0 under the forward process, so the optimum ignores it).
oracle-imdm  partition-and-map: one shared u in [0, 1) is read from the mask labels and every position
             outputs the one-hot of g(u) = exact.partition_and_map(p)(u). A one-step denoiser: a single
             step from the all-mask state samples exactly p, with every position factorised given eps.
oracle-align p(x_i | visible tokens) of `align` in closed form at any V, L (no enumerated joint): one-hot on
             the visible token where the visible tokens agree, uniform where none is visible (or, off the
             support, where they disagree); the same law at every position of a row (at visible
             positions too: SUBS carries the visible tokens over, so only masked positions are read).
"""
from __future__ import annotations

import numpy as np
import torch

from imdm_lab.distill.eps_coupling import Reading, eps_coupled_completion, inverse_cdf
from imdm_lab.exact import Marginals, conditional_marginals, partition_and_map
from imdm_lab.labels import BELOW_ONE, MaskLabels
from imdm_lab.losses import NEG_INF
from imdm_lab.process import Process
from imdm_lab.sampling import SamplerOptions, sample


def _log(probs: np.ndarray) -> np.ndarray:
    out = np.full(probs.shape, NEG_INF)
    np.log(probs, out=out, where=probs > 0)
    return out


class OracleMDM:
    """Exact conditional marginals p(x_i | x_visible); uniform where the visible context has p = 0.

    It reads no labels (the optimum ignores eps), so `labels` is accepted and ignored, and its process
    is an MDM's (labels None)."""

    def __init__(self, p, labels: MaskLabels | None = None, schedule: str = "linear"):
        self.tables = p if isinstance(p, Marginals) else Marginals(p)
        self.V, self.L = self.tables.V, self.tables.L
        self.mask_id, self.length = self.V, self.L
        self.process = Process(mask_id=self.V, schedule=schedule)

    def __call__(self, x_t: torch.Tensor, eps, t) -> torch.Tensor:
        x = x_t.cpu().numpy()
        probs = conditional_marginals(self.tables, x, x != self.mask_id)
        return torch.from_numpy(_log(probs)).to(x_t.device)


def _u_from_continuous(eps, labels):
    """The label of position 0, coordinate 0 -> its CDF, uniform (`MaskLabels.to_uniform`)."""
    return labels.to_uniform(eps[:, 0, 0])


def _u_from_finite(eps, labels):
    """K-state labels of all L positions read as the base-K digits of u: uniform on the K^L grid
    {0, 1/K^L, ...}, so the push-forward is p quantised to K^L cells (the finite-K capacity limit)."""
    K, L = labels.K, eps.shape[1]
    weights = torch.tensor([float(K) ** -(i + 1) for i in range(L)], dtype=torch.float64, device=eps.device)
    return eps.double() @ weights


# label kind -> how one shared uniform u is read from the labels eps
U_FROM_EPS = {"rand": _u_from_continuous, "randn": _u_from_continuous, "learnable": _u_from_continuous,
              "finite": _u_from_finite}


class OracleIMDM:
    """Partition-and-map: every position outputs the one-hot of g(u(eps)); ignores x_t and t."""

    def __init__(self, p, labels: MaskLabels | None = None, schedule: str = "linear"):
        if not isinstance(labels, MaskLabels):
            raise ValueError(f"labels: expected a MaskLabels for oracle-imdm, got {labels!r}")
        self.tables = p if isinstance(p, Marginals) else Marginals(p)
        self.V, self.L = self.tables.V, self.tables.L
        self.mask_id, self.length = self.V, self.L
        self.process = Process(mask_id=self.V, schedule=schedule, labels=labels)
        self.g = partition_and_map(self.tables)

    def __call__(self, x_t: torch.Tensor, eps, t) -> torch.Tensor:
        if x_t.dim() != 2 or x_t.shape[1] != self.L:
            raise ValueError(f"x_t: expected a Long[B, {self.L}] tensor, got shape {tuple(x_t.shape)}")
        labels = self.process.labels
        labels.check(eps, *x_t.shape)
        u = U_FROM_EPS[labels.kind](eps, labels).clamp(0.0, BELOW_ONE)
        seq = torch.from_numpy(self.g(u.cpu().numpy())).to(x_t.device)  # Long[B, L]
        logits = torch.full((*x_t.shape, self.V), NEG_INF, dtype=torch.float64, device=x_t.device)
        return logits.scatter_(-1, seq[..., None], 0.0)


class AlignOracle:
    """The exact MDM denoiser of align (V classes, length L), in closed form: OracleMDM's answer without
    the (V,)*L joint. It reads no labels; its process is an MDM's (labels None).

    The conditional is the same at every position of a row, so the logits are one Float[B, V] row per
    sequence expanded (stride 0) to Float[B, L, V]: B * V floats, not B * L * V, at V = 50 000."""

    def __init__(self, V: int, L: int, schedule: str = "linear"):
        for name, value in (("V", V), ("L", L)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        self.V, self.L = V, L
        self.mask_id, self.length = V, L
        self.process = Process(mask_id=V, schedule=schedule)

    def _visible_token(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per row of x_t Long[B, L]: a visible token (V if none), whether every visible token equals it,
        and whether any is visible: (Long[B], Bool[B], Bool[B])."""
        visible = x_t != self.mask_id
        first = torch.where(visible, x_t, self.V).min(1).values
        return first, (~visible | (x_t == first[:, None])).all(1), visible.any(1)

    def __call__(self, x_t: torch.Tensor, eps, t) -> torch.Tensor:
        if x_t.dim() != 2 or x_t.shape[1] != self.L:
            raise ValueError(f"x_t: expected a Long[B, {self.L}] tensor, got shape {tuple(x_t.shape)}")
        first, consistent, seen = self._visible_token(x_t)
        agree = consistent & seen
        row = torch.zeros(x_t.shape[0], self.V, device=x_t.device)  # uniform
        row[agree] = NEG_INF
        row[agree, first[agree]] = 0.0  # one-hot on the visible token
        return row[:, None].expand(-1, self.L, -1)

    def eps_coupled_completion(self, x_t: torch.Tensor, eps, reading: Reading, *, mask_id: int,
                               t: torch.Tensor | None = None) -> torch.Tensor:
        """imdm_lab.distill.eps_coupled_completion(self, ...) in closed form: Long[B, L] -> Long[B, L].

        A row with visible tokens that agree is completed by copying them (one-hot conditionals: the
        inverse CDF returns the token and hands u on unchanged); a row with none visible draws its first
        position in the reading's order by the inverse CDF of the uniform law at its u, the same call
        the generic loop makes, and the others copy it. Rows whose visible tokens disagree (off the
        support) take the generic loop. One [n, V] CDF instead of L teacher calls of B * V logits each."""
        if mask_id != self.mask_id:
            raise ValueError(f"mask_id: expected the oracle's mask id {self.mask_id}, got {mask_id!r}")
        first, agree, seen = self._visible_token(x_t)
        rows = (~seen).nonzero()[:, 0]
        u = reading.u[rows, 0] if reading.chained else reading.u[rows, reading.order[rows, 0]]
        uniform = torch.full((rows.numel(), self.V), 1.0 / self.V, dtype=torch.float64, device=x_t.device)
        first[rows] = inverse_cdf(uniform, u)[0]
        out = torch.where(agree[:, None], first[:, None].expand_as(x_t), x_t)
        if not agree.all():
            off = ~agree
            out[off] = eps_coupled_completion(self, x_t[off], eps[off], Reading(*(v[off] for v in reading[:2]),
                                              reading.chained), mask_id=mask_id,
                                              t=None if t is None else t[off])
        return out


ORACLES = {"oracle-mdm": OracleMDM, "oracle-imdm": OracleIMDM}
# the label law oracle-imdm reads its uniform from (one coordinate is all partition-and-map needs)
ORACLE_LABELS = {"oracle-mdm": None, "oracle-imdm": MaskLabels("rand", dim=1)}


def make_oracle(model: str, p, labels: MaskLabels | None = None, schedule: str = "linear"):
    """An oracle denoiser by name; p: a joint Float64[(V,)*L] or its Marginals; schedule: the process it is
    sampled under (an oracle is exact at every t, so any schedule)."""
    if model not in ORACLES:
        raise ValueError(f"model: expected one of {sorted(ORACLES)}, got {model!r}")
    return ORACLES[model](p, labels, schedule)


def sample_oracle(model: str, p, *, steps: int, n: int, seed: int, schedule: str = "linear", fix_eps: bool = False,
                  batch_size: int = 65536) -> tuple[np.ndarray, float]:
    """n sequences Int64[n, L] of the oracle `model` (a name of ORACLES, labels ORACLE_LABELS) of the joint
    p, drawn by the ancestral sampler (imdm_lab.sampling.sample) in `steps` steps and batches of
    `batch_size`, and the mean number of network calls per batch. The sampler's generator is seeded with
    `seed`; sample i's initial labels are hashed from seed * 2^32 + i, so they do not depend on batch_size."""
    denoiser = make_oracle(model, p, ORACLE_LABELS[model], schedule)
    generator = torch.Generator().manual_seed(seed)
    options = SamplerOptions(fix_eps=fix_eps)
    chunks, calls = [], []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        seeds = seed * 2**32 + torch.arange(start, start + size)
        res = sample(denoiser, batch_size=size, steps=steps, seeds=seeds, generator=generator, options=options)
        chunks.append(res.tokens.numpy())
        calls.append(res.nfe)
    return np.concatenate(chunks).astype(np.int64), float(np.mean(calls))
