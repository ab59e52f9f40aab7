"""Two-dimensional slices of label space: what a one-step IMDM outputs as two label coordinates vary.

    eps, (a, b) = label_slice(labels, L, axes=((0, 0), (1, 0)), n=101, base=labels.draw(1, L, generator=g)[0])
    seqs, logp = one_step_modes(model, eps, mask_id=V)  # Long[n*n, L] row-major over (a, b), Float[n*n]
    ids = support_index(seqs, support)                  # index of each row in the support, -1 elsewhere

Partition-and-map made visible: a denoiser that learned a map g(eps) -> sequence cuts the slice into
regions, one per output sequence, each output with probability close to 1; a model that ignores eps
(an MDM, or an IMDM trained with the ELBO only) has no region where one sequence is likely.
"""
from __future__ import annotations

import numpy as np
import torch

from imdm_lab.checks import check_int
from imdm_lab.labels import MaskLabels
from imdm_lab.losses import subs_log_probs

# Half-width of the plotted range of one label coordinate, in units of labels.scale, per label kind.
HALF_WIDTH = {"rand": 1.0, "randn": 3.0, "learnable": 3.0}


def label_slice(labels: MaskLabels, length: int, axes, n: int, base: torch.Tensor):
    """Labels on an n x n grid over two coordinates, every other coordinate fixed to `base`.

    axes: ((position, coordinate), (position, coordinate)), the two varied entries of eps; base:
    Float[L, D]. The grid takes the midpoints of n equal cells of [-h, h] (h = HALF_WIDTH * scale), so
    no point lies on a cell edge. Returns (eps Float[n*n, L, D] with the first axis varying slowest,
    (a, b) the Float64[n] coordinate values of each axis)."""
    if labels.kind not in HALF_WIDTH:
        raise ValueError(f"labels: expected continuous labels ({', '.join(HALF_WIDTH)}), got {labels.kind!r}")
    n = check_int("n", n, 2)
    labels.check(base[None], 1, length)
    try:
        (p0, d0), (p1, d1) = axes
    except (TypeError, ValueError):
        raise ValueError(f"axes: expected two (position, coordinate) pairs, got {axes!r}") from None
    for p, d in ((p0, d0), (p1, d1)):
        if not (0 <= p < length and 0 <= d < labels.dim):
            raise ValueError(f"axes: expected positions in [0, {length}) and coordinates in [0, {labels.dim}), "
                             f"got {axes!r}")
    if (p0, d0) == (p1, d1):
        raise ValueError(f"axes: expected two different entries, got {axes!r}")
    h = HALF_WIDTH[labels.kind] * labels.scale
    values = -h + h * (2 * np.arange(n) + 1) / n
    eps = base.expand(n * n, *base.shape).clone()
    grid = torch.tensor(values, dtype=eps.dtype)
    eps[:, p0, d0] = grid.repeat_interleave(n)
    eps[:, p1, d1] = grid.repeat(n)
    return eps, (values, values.copy())


@torch.no_grad()
def one_step_modes(denoiser, eps: torch.Tensor, mask_id: int, chunk: int = 4096):
    """The most likely one-step output given eps, and its probability under the one-step sampler.

    eps: Float[N, L, D] -> (Long[N, L], Float64[N]): m^i = argmax_v p(x^i = v | all masked, eps) after
    SUBS, and log prod_i p(x^i = m^i | all masked, eps), the log-probability that one step from the
    all-mask state with these labels outputs exactly m (positions are drawn independently given eps)."""
    N, L = eps.shape[:2]
    modes, logps = [], []
    for e in eps.split(chunk):
        x = torch.full((len(e), L), mask_id, dtype=torch.int64)
        best = subs_log_probs(denoiser(x, e, torch.ones(len(e))), x, mask_id).double().max(-1)
        modes.append(best.indices)
        logps.append(best.values.sum(-1))
    return torch.cat(modes), torch.cat(logps)


def support_index(seqs, support: np.ndarray) -> np.ndarray:
    """Row index of each sequence in `support` (Long[S, L]), -1 for a sequence outside it: Long[N]."""
    seqs = np.asarray(seqs)
    index = {tuple(row): s for s, row in enumerate(np.asarray(support).tolist())}
    return np.array([index.get(tuple(row), -1) for row in seqs.tolist()], dtype=np.int64)
