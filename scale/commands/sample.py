"""`python -m scale sample --ckpt DIR --steps 1,2,4 --n 8 [--prefix TEXT] [--seed N]`: decoded samples
(scale.evaluation.samples) of a checkpoint's EMA weights, drawn with the seed recipe of `scale evaluate` and of the
training-time samples (scale.evaluation.samples.draw): at the same seed and batch size they are the same samples."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from imdm_lab import durable
from imdm_lab.checks import check_int, check_seed, check_text, check_writable, parse_steps
from imdm_lab.sampling import check_steps_memory
from scale.checkpoints.checkpoint import load_model
from scale.checkpoints.hub import resolve_checkpoint
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.samples import BATCH, decoded_samples
from scale.model.cost import device_memory


def add_arguments(p) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint folder (train or import-mdlm output) or Hub id user/name")
    p.add_argument("--steps", default="1,2,4", help="comma-separated step counts (default 1,2,4)")
    p.add_argument("--n", type=int, default=8, help="samples per step count (default 8)")
    p.add_argument("--prefix", default=None, help="text the samples continue")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=BATCH,
                   help=f"sequences per sampler call (default {BATCH}, as evaluate; the samples depend on it)")
    p.add_argument("--length", type=int, default=None, help="sequence length (default: the training length)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument("--out", default=None, help="also write {steps: [texts]} to this JSON file")


def check(args) -> list[int]:
    """The step counts, after every argument is checked: counts, seed, the prefix's text, the sampler's
    memory at the largest step count, the output path; before the checkpoint is loaded."""
    steps = parse_steps("--steps", args.steps)
    check_int("--n", args.n, 1)
    check_seed("--seed", args.seed)
    check_int("--batch-size", args.batch_size, 1)
    if args.length is not None:
        check_int("--length", args.length, 1)
    if args.prefix is not None:
        check_text("--prefix", args.prefix)
    memory = device_memory("cuda" if torch.cuda.is_available() else "cpu")
    check_steps_memory("--steps", max(steps), min(args.batch_size, args.n), memory)
    if args.out:
        check_writable("--out", args.out)
    return steps


def run(args) -> int:
    steps = check(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, state = load_model(resolve_checkpoint(args.ckpt), args.weights, device)
    tok = load_tokenizer(state.tokenizer)
    length = state.config.data.length if args.length is None else args.length
    results = {}
    for k, texts, nfe in decoded_samples(model, tok, steps, args.n, seed=args.seed, length=length,
                                         prefix=args.prefix, batch_size=args.batch_size, device=device):
        results[str(k)] = texts
        print(f"=== {k} step{'s' if k > 1 else ''} ({nfe:g} network calls per sample) ===")
        for i, text in enumerate(texts):
            print(f"[{i}] {text}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        durable.write_text(args.out, json.dumps(results, indent=1))
    return 0
