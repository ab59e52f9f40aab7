"""Decoded samples of a checkpoint at several step counts (what `python -m scale sample` prints).

Draws through the shared ancestral sampler (imdm_lab.sampling.sample, float64 categorical draws). With
a prefix, the block starts like the training blocks ([bos] + the prefix's tokens) and those positions
are held fixed while the rest is generated.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from imdm_lab.sampling import sample
from scale.seeds import derive_seed
from scale.tokenizers import wrap_specials


def prefix_tokens(tokenizer, prefix: str) -> list[int]:
    """[bos] + the prefix's tokens, the start of a training block (scale.data wrapping)."""
    bos, _ = wrap_specials(tokenizer)
    return [bos] + tokenizer.encode(prefix, add_special_tokens=False)


def decoded_samples(model, tok, steps: Sequence[int], n: int, length: int, seed: int, prefix: str | None,
                    device: torch.device) -> Iterator[tuple[int, list[str], int]]:
    """(k, n texts, network calls) for each step count k of `steps`, in order. Sample i's labels come
    from seed derive_seed(seed, "eps") + i at every k, the draws of step count k from (seed, "sample", k)."""
    cfg = model.config
    given = given_mask = None
    if prefix:
        ids = prefix_tokens(tok, prefix)
        if len(ids) >= length:
            raise ValueError(f"--prefix: {len(ids)} tokens leave nothing to generate in length {length}")
        given = torch.full((n, length), cfg.mask_id, dtype=torch.int64)
        given[:, :len(ids)] = torch.tensor(ids)
        given_mask = given != cfg.mask_id
    seeds = torch.arange(n, dtype=torch.int64) + derive_seed(seed, "eps") % 2**40
    for k in steps:
        gen = torch.Generator(device).manual_seed(derive_seed(seed, "sample", k))
        with torch.no_grad():
            out = sample(model, batch_size=n, length=length, steps=k, given=given, given_mask=given_mask,
                         seeds=seeds, generator=gen, device=device)
        yield k, [tok.decode(row) for row in out.tokens.cpu().tolist()], out.nfe
