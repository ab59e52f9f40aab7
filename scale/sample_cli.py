"""`python -m scale sample --ckpt DIR --steps 1,2,4 --n 8 [--prefix TEXT] [--seed N]`: decoded samples.

Draws through the shared ancestral sampler (imdm_lab.sampling.sample, float64 categorical draws) with
the checkpoint's EMA weights. With --prefix, the block starts like the training blocks ([bos] + the
prefix's tokens) and those positions are held fixed while the rest is generated.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from imdm_lab.checks import check_int, check_seed, check_writable, parse_steps
from imdm_lab.sampling import sample
from scale.checkpoint import load_model
from scale.hub import resolve_checkpoint
from scale.seeds import derive_seed
from scale.tokenizers import load_tokenizer, wrap_specials


def add_arguments(p) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint folder (train or import-mdlm output) or Hub id user/name")
    p.add_argument("--steps", default="1,2,4", help="comma-separated step counts (default 1,2,4)")
    p.add_argument("--n", type=int, default=8, help="samples per step count (default 8)")
    p.add_argument("--prefix", default=None, help="text the samples continue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--length", type=int, default=None, help="sequence length (default: the training length)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument("--out", default=None, help="also write {steps: [texts]} to this JSON file")


def prefix_tokens(tokenizer, prefix: str) -> list[int]:
    """[bos] + the prefix's tokens, the start of a training block (scale.data wrapping)."""
    bos, _ = wrap_specials(tokenizer)
    return [bos] + tokenizer.encode(prefix, add_special_tokens=False)


def run(args) -> int:
    steps = parse_steps("--steps", args.steps)
    check_int("--n", args.n, 1)
    check_seed("--seed", args.seed)
    if args.length is not None:
        check_int("--length", args.length, 1)
    if args.out:
        check_writable("--out", args.out)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, state = load_model(resolve_checkpoint(args.ckpt), args.weights, device)
    tok = load_tokenizer(state["tokenizer"])
    cfg = model.config
    length = state["config"]["data"]["length"] if args.length is None else args.length
    given = given_mask = None
    if args.prefix:
        ids = prefix_tokens(tok, args.prefix)
        if len(ids) >= length:
            raise ValueError(f"--prefix: {len(ids)} tokens leave nothing to generate in length {length}")
        given = torch.full((args.n, length), cfg.mask_id, dtype=torch.int64)
        given[:, :len(ids)] = torch.tensor(ids)
        given_mask = given != cfg.mask_id
    seeds = torch.arange(args.n, dtype=torch.int64) + derive_seed(args.seed, "eps") % 2**40
    results = {}
    for k in steps:
        gen = torch.Generator(device).manual_seed(derive_seed(args.seed, "sample", k))
        with torch.no_grad():
            out = sample(model, batch_size=args.n, length=length, steps=k, given=given, given_mask=given_mask,
                         seeds=seeds, generator=gen, device=device)
        texts = [tok.decode(row) for row in out.tokens.cpu().tolist()]
        results[str(k)] = texts
        print(f"=== {k} step{'s' if k > 1 else ''} ({out.nfe} network calls) ===")
        for i, text in enumerate(texts):
            print(f"[{i}] {text}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0
