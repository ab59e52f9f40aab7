"""`python -m toy_tasks sample`: draw sequences with the real sampler and an oracle denoiser.

    python -m toy_tasks sample --task align --V 8 --L 4 --model oracle-mdm --steps 2 --samples 10000 \
        --seed 0 --out samples.npy [--schedule NAME] [--fix-eps]

The task parameters are those of `bound` (the task's seed is --task-seed; --seed seeds the sampler).
--steps follows the grammar of `bound --steps` (imdm_lab.checks.parse_steps) and takes exactly one step
count, since one run writes one array. Writes an int64 array of shape (N, L) (atomically) and prints the
mean number of network calls per batch (toy_tasks.oracle.sample_oracle).
"""
from __future__ import annotations

import numpy as np

from imdm_lab import durable
from imdm_lab.checks import check_cost, check_int, check_seed, check_writable, parse_steps
from imdm_lab.exact import DEFAULT_BUDGET_BYTES
from imdm_lab.sampling import check_steps_memory, plan_bytes
from imdm_lab.schedules import SCHEDULES, get_schedule
from toy_tasks.distributions import TASK_OPTIONS
from toy_tasks.oracle import ORACLES, sample_oracle
from toy_tasks.task_arguments import add_task_arguments, task_dest, task_from_options


def add_arguments(parser) -> None:
    add_task_arguments(parser)
    parser.add_argument("--model", required=True, choices=tuple(ORACLES), help="the denoiser")
    parser.add_argument("--steps", required=True, help="the number of sampling steps K >= 1 (one step count)")
    parser.add_argument("--samples", type=int, required=True, help="number of sequences N >= 1")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sampler's generator and of the mask labels (default 0)")
    parser.add_argument("--out", required=True, metavar="FILE.npy", help="where to write the (N, L) int64 array")
    parser.add_argument("--schedule", default="linear", help=f"one of {', '.join(SCHEDULES)} (default linear)")
    parser.add_argument("--fix-eps", action="store_true", help="keep each mask label for the whole run")
    parser.add_argument("--batch-size", type=int, default=65536, help="sequences per sampler call")


def _one_step_count(text: str) -> int:
    """The one step count of `sample --steps`, in the grammar of every step list (parse_steps)."""
    steps = parse_steps("steps", text)
    if len(steps) != 1:
        raise ValueError(f"steps: expected one step count (sample writes one array; run it once per count), "
                         f"got {text!r}")
    return steps[0]


# The array of samples is held three times at the end (the batches, their concatenation, its int64 copy)
SAMPLE_COPIES = 3


def _check_memory(n: int, steps: int, batch: int, L: int) -> None:
    """The samples and one batch's sampler plan within the exact engine's memory budget (4 GiB), checked
    before the first draw: --samples and --steps name the largest value that fits."""
    rows = min(batch, n)
    check_cost("samples", n, lambda m: SAMPLE_COPIES * 8 * L * m + plan_bytes(min(batch, m), 1),
               DEFAULT_BUDGET_BYTES, f"{SAMPLE_COPIES} copies of the (N, {L}) int64 samples")
    check_steps_memory("steps", steps, rows, DEFAULT_BUDGET_BYTES - SAMPLE_COPIES * 8 * L * n)


def run(args) -> None:
    steps = _one_step_count(args.steps)
    n = check_int("samples", args.samples, 1)
    batch = check_int("batch_size", args.batch_size, 1)
    seed = check_seed("seed", args.seed)
    schedule = get_schedule(args.schedule).name
    out = check_writable("out", args.out)
    task = task_from_options(args.task, args.probs, {name: getattr(args, task_dest(name)) for name in TASK_OPTIONS})
    _check_memory(n, steps, batch, task.L)
    tokens, calls = sample_oracle(args.model, task.probs, steps=steps, n=n, seed=seed, schedule=schedule,
                                  fix_eps=args.fix_eps, batch_size=batch)
    out.parent.mkdir(parents=True, exist_ok=True)
    durable.write_file(out, lambda f: np.save(f, tokens))
    print(f"wrote {tokens.shape[0]} x {tokens.shape[1]} samples to {out}; "
          f"mean network calls per batch: {calls:.3f}")
