"""`python -m scale train --config FILE.toml --out DIR [--max-steps N] [--resume] [--set key=value ...]`.

Runs as one process, or as `torchrun --nproc_per_node N -m scale train ...` (DDP, or FSDP with
train.strategy = "fsdp"); the data cache is built by local rank 0 while the others wait.
"""
from __future__ import annotations

from pathlib import Path

from scale.checkpoints.config import Config, load_config
from scale.model.cost import check_fits, device_memory
from scale.training.runs import check_run, launch
from scale.training.trainer import elbo_trainer


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="a TOML file or a name of scale/configs (e.g. tiny-cpu)")
    p.add_argument("--out", required=True, help="run folder: checkpoints and metrics.jsonl")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this step (default: train.max_steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest complete checkpoint in --out (step 0 when there is none)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set train.lr=1e-4")
    p.add_argument("--data-revision", default=None,
                   help="pin the hub dataset's revision (data.revision), e.g. refs/convert/parquet")


def check(args) -> tuple[Config, int]:
    """(the config, the step limit): config values, a model that fits this machine, the step limit and a
    writable --out (one without a checkpoint, unless --resume), before any data is read."""
    config = load_config(args.config, args.set)
    if args.data_revision is not None:
        config.data.revision = args.data_revision
    max_steps = config.train.max_steps if args.max_steps is None else args.max_steps
    check_fits(config.model, device_memory("cpu"))
    check_run(Path(args.out), args.resume, max_steps)
    return config, max_steps


def run(args) -> int:
    config, max_steps = check(args)
    out = Path(args.out)

    def build(config, data, runtime):
        train, val, tok = data
        config.model = config.model.with_vocabulary(train.num_classes, train.mask_id)
        return elbo_trainer(config, out, train, val, decode=tok.decode, runtime=runtime)

    result = launch(config, out, args.resume, max_steps, build)
    if result is not None and "val_ppl" in result:
        print(f"step {result['step']}: loss {result['loss']:.4f}, validation ELBO perplexity "
              f"{result['val_ppl']:.2f}")
    return 0
