"""Periodic evaluation during training: validation ELBO perplexity and a few samples per step count.

Every process computes the same fixed validation batches and samples (seeded by the run's seed), so
the numbers are identical on all ranks and also work when the weights are sharded (FSDP).
"""
from __future__ import annotations

import math

import torch

from imdm_lab.counter_rng import derive_seed
from imdm_lab.losses import elbo
from imdm_lab.schedules import sample_times
from scale.evaluation.samples import draw


@torch.no_grad()
def validation_elbo(denoiser, blocks: torch.Tensor, batch_size: int, n_batches: int, t_min: float, seed: int,
                    device) -> float:
    """ELBO upper bound on the NLL per token (nats), averaged over up to n_batches fixed batches of
    `blocks` (Long[N, L]); exp() of it is the validation ELBO perplexity. The process (schedule, mask
    id, labels) is the denoiser's own.

    Batch i uses antithetic times and masks/labels seeded by (seed, i), the same at every evaluation."""
    n = scored_batches(len(blocks), batch_size, n_batches)
    total = 0.0
    for i in range(n):
        x0 = blocks[i * batch_size:(i + 1) * batch_size].to(device)
        gen = torch.Generator(device).manual_seed(derive_seed(seed, "val", i))
        t = sample_times(len(x0), t_min, antithetic=True, generator=torch.Generator().manual_seed(
            derive_seed(seed, "val-time", i))).to(device)
        total += float(elbo(denoiser, x0, t, generator=gen).mean)
    return total / n


def scored_batches(num_blocks: int, batch_size: int, n_batches: int) -> int:
    """How many batches validation_elbo scores: its first n of `batch_size` blocks, at least one, at most
    n_batches and as many as the blocks fill."""
    return max(1, min(n_batches, num_blocks // batch_size))


def bits_per_char(nats_per_token: float, blocks, tokenizer) -> float:
    """Bits per character of blocks whose ELBO is `nats_per_token` (validation_elbo of exactly these blocks):

        bpc = (nats_per_token * T) / (ln 2 * C),

    T = N * L the tokens of the blocks (Long[N, L]; the ELBO averages over all of them), C the characters
    of the blocks decoded by `tokenizer` with special tokens skipped (an eos between documents is no
    character). The total ELBO in nats, over the characters it encodes, in bits: comparable across
    tokenizers, unlike a perplexity per token."""
    rows = torch.as_tensor(blocks)
    if rows.ndim != 2 or rows.numel() == 0:
        raise ValueError(f"blocks: expected a non-empty Long[N, L], got shape {tuple(rows.shape)}")
    texts = tokenizer.batch_decode(rows.tolist(), skip_special_tokens=True)
    chars = sum(len(t) for t in texts)
    if chars == 0:
        raise ValueError("blocks: their decoded text has no character (only special tokens?)")
    return nats_per_token * rows.numel() / (math.log(2) * chars)


def sample_texts(denoiser, length: int, steps: list[int], n: int, seed: int, device, decode=None) -> dict:
    """{str(k): n unconditional samples drawn with k steps}, by scale.evaluation.samples.draw (the seed recipe of
    `scale sample` and `scale evaluate`: the same seed gives the same tokens), decoded to text by
    `decode(list of ids)` when given, else lists of token ids."""
    out = {}
    for k in steps:
        tokens, _, _ = draw(denoiser, n, k, seed=seed, length=length, device=device)
        rows = tokens.tolist()
        out[str(k)] = [decode(r) for r in rows] if decode is not None else rows
    return out
