"""`python -m toy_tasks sample`: draw sequences with the real sampler and an oracle denoiser.

    python -m toy_tasks sample --task align --V 8 --L 4 --model oracle-mdm --steps 2 --samples 10000 \
        --seed 0 --out samples.npy [--schedule linear|loglinear|cosine] [--fix-eps]

The task parameters are those of `bound` (the task's seed is --task-seed; --seed seeds the sampler).
--steps follows the grammar of `bound --steps` (imdm_lab.checks.parse_steps) and takes exactly one step
count, since one run writes one array. Writes an int64 array of shape (N, L) and prints the mean number
of network calls per batch. oracle-imdm reads its shared uniform from U(-1, 1) mask labels; sample i's
initial labels are hashed from the seed (--seed * 2^32 + i), so they do not depend on --batch-size.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from imdm_lab.checks import check_int, check_seed, check_writable, parse_steps
from imdm_lab.labels import MaskLabels
from imdm_lab.sampling import SamplerOptions, sample
from imdm_lab.schedules import get_schedule
from toy_tasks.oracle import ORACLES, make_oracle
from toy_tasks.task_arguments import add_task_arguments, task_from_args

# the label law oracle-imdm reads its uniform from (one coordinate is all partition-and-map needs)
ORACLE_LABELS = {"oracle-mdm": None, "oracle-imdm": MaskLabels("rand", dim=1)}


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser)
    parser.add_argument("--model", required=True, choices=tuple(ORACLES), help="the denoiser")
    parser.add_argument("--steps", required=True, help="the number of sampling steps K >= 1 (one step count)")
    parser.add_argument("--samples", type=int, required=True, help="number of sequences N >= 1")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sampler's generator and of the mask labels (default 0)")
    parser.add_argument("--out", required=True, metavar="FILE.npy", help="where to write the (N, L) int64 array")
    parser.add_argument("--schedule", default="linear", help="linear, loglinear or cosine (default linear)")
    parser.add_argument("--fix-eps", action="store_true", help="keep each mask label for the whole run")
    parser.add_argument("--batch-size", type=int, default=65536, help="sequences per sampler call")


def one_step_count(text: str) -> int:
    """The one step count of `sample --steps`, in the grammar of every step list (parse_steps)."""
    steps = parse_steps("steps", text)
    if len(steps) != 1:
        raise ValueError(f"steps: expected one step count (sample writes one array; run it once per count), "
                         f"got {text!r}")
    return steps[0]


def run_sample(args: argparse.Namespace) -> None:
    """Sample sequences with the real ancestral sampler and an oracle denoiser; write them as .npy."""
    steps = one_step_count(args.steps)
    n = check_int("samples", args.samples, 1)
    batch = check_int("batch_size", args.batch_size, 1)
    seed = check_seed("seed", args.seed)
    schedule = get_schedule(args.schedule).name
    out = check_writable("out", args.out)
    options = SamplerOptions(fix_eps=args.fix_eps)
    task = task_from_args(args)
    denoiser = make_oracle(args.model, task.probs, ORACLE_LABELS[args.model], schedule)
    generator = torch.Generator().manual_seed(seed)
    chunks, calls = [], []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        seeds = seed * 2**32 + torch.arange(start, start + size)
        res = sample(denoiser, batch_size=size, steps=steps, seeds=seeds, generator=generator, options=options)
        chunks.append(res.tokens.numpy())
        calls.append(res.nfe)
    tokens = np.concatenate(chunks).astype(np.int64)
    # atomic write: a killed run never leaves a truncated file behind
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, tokens)
        os.replace(tmp, out)
    finally:  # a failed write (a full disk) leaves no stray temporary file either
        tmp.unlink(missing_ok=True)
    print(f"wrote {tokens.shape[0]} x {tokens.shape[1]} samples to {out}; "
          f"mean network calls per batch: {np.mean(calls):.3f}")
