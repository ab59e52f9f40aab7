"""Samples of a checkpoint: `draw`, the one seed recipe of scale, and the decoded samples that
`python -m scale sample` prints.

`draw` is what `scale sample`, the training-time samples (scale.evaluation.validation.sample_texts) and `scale
evaluate` call, so the same seed, tag, step count and batch size give the same tokens in all three.
Draws go through the shared ancestral sampler (imdm_lab.sampling.sample, float64 categorical draws)
with the model's own process. With a prefix, the block starts like the training blocks ([bos] + the
prefix's tokens) and those positions are held fixed while the rest is generated.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch

from imdm_lab.counter_rng import derive_seed
from imdm_lab.sampling import sample
from scale.data.tokenizers import wrap_specials

UNCOND, COND = "uncond", "cond"  # the tags of unconditional and prefix-conditioned samples
BATCH = 32  # sequences per sampler call unless told: `scale sample` and `scale evaluate` default to it


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def draw(model, n: int, steps: int, *, seed: int, length: int, batch_size: int = BATCH, device,
         given: torch.Tensor | None = None, given_mask: torch.Tensor | None = None, tag: str = UNCOND,
         progress: bool = False) -> tuple[torch.Tensor, float, float]:
    """n samples with `steps` steps: (tokens Long[n, L], mean network calls per sample, seconds of sampling).

    The seed recipe: sample i (0 <= i < n) takes its labels from the counter seed
    derive_seed(seed, tag, "eps") % 2**40 + i, whatever the step count; samples are drawn in batches of
    `batch_size`, and batch b's sampler draws come from a generator seeded derive_seed(seed, tag, steps, b).
    A sample thus depends on (seed, tag, steps, batch_size, i), not on which other step counts are drawn.
    given Long[n, L] / given_mask Bool[n, L]: tokens held fixed (e.g. a prefix), sliced with the batches."""
    from tqdm.auto import tqdm

    tokens, calls, seconds = [], 0.0, 0.0
    base = derive_seed(seed, tag, "eps") % 2**40
    starts = range(0, n, batch_size)
    for b, lo in enumerate(tqdm(starts, desc=f"sampling {n} x {steps} steps ({tag})", unit="batch", leave=False,
                                disable=not progress)):
        size = min(batch_size, n - lo)
        seeds = torch.arange(lo, lo + size, dtype=torch.int64, device=device) + base
        gen = torch.Generator(device).manual_seed(derive_seed(seed, tag, steps, b))
        part = {} if given is None else {"given": given[lo:lo + size].to(device),
                                         "given_mask": given_mask[lo:lo + size].to(device)}
        _sync(device)
        tic = time.perf_counter()
        res = sample(model, batch_size=size, length=length, steps=steps, seeds=seeds, generator=gen,
                     device=device, **part)
        _sync(device)
        seconds += time.perf_counter() - tic
        calls += res.nfe * size
        tokens.append(res.tokens.cpu())
    return torch.cat(tokens), calls / n, seconds


def prefix_tokens(tokenizer, prefix: str) -> list[int]:
    """[bos] + the prefix's tokens, the start of a training block (scale.data.blocks wrapping)."""
    bos, _ = wrap_specials(tokenizer)
    return [bos] + tokenizer.encode(prefix, add_special_tokens=False)


def decoded_samples(model, tok, steps: Sequence[int], n: int, *, seed: int, length: int, prefix: str | None,
                    batch_size: int = BATCH, device) -> Iterator[tuple[int, list[str], float]]:
    """(k, n texts, mean network calls per sample) for each step count k of `steps`, in order, drawn by
    `draw` with tag UNCOND, or COND when a prefix is held fixed."""
    given = given_mask = None
    if prefix:
        ids = prefix_tokens(tok, prefix)
        if len(ids) >= length:
            raise ValueError(f"--prefix: {len(ids)} tokens leave nothing to generate in length {length}")
        given = torch.full((n, length), model.process.mask_id, dtype=torch.int64)
        given[:, :len(ids)] = torch.tensor(ids)
        given_mask = given != model.process.mask_id
    for k in steps:
        tokens, nfe, _ = draw(model, n, k, seed=seed, length=length, batch_size=batch_size, device=device,
                              given=given, given_mask=given_mask, tag=COND if prefix else UNCOND)
        yield k, [tok.decode(row) for row in tokens.tolist()], nfe
