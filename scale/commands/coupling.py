"""`python -m scale coupling --teacher CKPT --n N --out DIR [--steps 1024] [--fix-eps] ...`: teacher
completions of masked training blocks, written as resumable shards (scale.training.coupling.generate). Runs as one
process or under torchrun (rank r writes the shards s with s % world == r)."""
from __future__ import annotations

import torch

from imdm_lab.checks import check_writable
from scale.model.cost import device_memory
from scale.training import distributed as D
from scale.training.coupling import CouplingSettings, check_costs, generate


def add_arguments(p) -> None:
    p.add_argument("--teacher", required=True, help="checkpoint folder or Hub id of the teacher")
    # --num-samples: under torchrun, whose parser also sees the script's options, "--n" is ambiguous.
    p.add_argument("--n", "--num-samples", dest="n", type=int, required=True,
                   help="number of (x_t, x_0, t, seed) samples (write --num-samples under torchrun)")
    p.add_argument("--steps", type=int, default=1024, help="teacher sampling steps from t to 0 (default 1024)")
    p.add_argument("--out", required=True, help="coupling folder (rerun the same command to resume)")
    p.add_argument("--fix-eps", action="store_true", help="no label resets: eps(seed) stays the whole path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="sequences per sampler call")
    p.add_argument("--shard-size", type=int, default=1024, help="samples per shard (the unit of resumption)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="teacher weights (default ema)")
    p.add_argument("--t-min", type=float, default=1e-3, help="smallest time t (default 1e-3)")


def check(args) -> CouplingSettings:
    """The settings, their costs on this machine and a writable --out, before any process group or model."""
    settings = CouplingSettings(n=args.n, steps=args.steps, fix_eps=args.fix_eps, seed=args.seed,
                                batch_size=args.batch_size, shard_size=args.shard_size, weights=args.weights,
                                t_min=args.t_min)
    check_costs(settings, device_memory("cpu"), device_memory("cuda" if torch.cuda.is_available() else "cpu"))
    check_writable("--out", args.out, folder=True)
    return settings


def run(args) -> int:
    settings = check(args)
    runtime = D.init_runtime()
    try:
        out = generate(args.teacher, args.out, settings, runtime=runtime)
        if runtime.main:
            print(f"coupling of {args.n} samples in {out}")
    finally:
        D.shutdown()
    return 0
