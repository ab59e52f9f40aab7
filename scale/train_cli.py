"""`python -m scale train --config FILE.toml --out DIR [--max-steps N] [--resume] [--set key=value ...]`.

Runs as one process, or as `torchrun --nproc_per_node N -m scale train ...` (DDP, or FSDP with
train.strategy = "fsdp"); the data cache is built by local rank 0 while the others wait.
"""
from __future__ import annotations

import sys
from pathlib import Path

from imdm_lab.checks import check_writable
from scale import distributed as D
from scale.checkpoint import find_checkpoint, read_state
from scale.config import load_config
from scale.data import load_blocks
from scale.tokenizers import load_tokenizer
from scale.train import Trainer


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


def open_data(data, progress: bool):
    """(train blocks, validation blocks, tokenizer) of a config's [data] section."""
    kwargs = dict(tokenizer=data.tokenizer, length=data.length, hf_config=data.hf_config or None,
                  text_column=data.text_column, progress=progress, revision=data.revision)
    train = load_blocks(data.dataset, "train", **kwargs)
    val = load_blocks(data.dataset, "validation", **kwargs)
    return train, val, load_tokenizer(data.tokenizer)


def check_run(out: Path, resume: bool, max_steps: int | None) -> None:
    """A step limit >= 1 (None: the run's own), a writable run folder and, unless resuming, one without a
    checkpoint."""
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps: expected an integer >= 1, got {max_steps}")
    check_writable("--out", out, folder=True)
    if not resume and find_checkpoint(out) is not None:
        raise ValueError(f"--out: {out} already holds a checkpoint; pass --resume to continue it")


def no_checkpoint_note(out: Path) -> str:
    return f"--resume: {out} holds no complete checkpoint; starting from step 0"


def check_resume_step(step: int, max_steps: int, out: Path) -> None:
    """Resuming to a step the run has already passed would do nothing: refuse it (the same step is a
    finished run, and resuming it again is a no-op)."""
    if max_steps < step:
        raise ValueError(f"--max-steps: expected a step >= the checkpoint's step {step} in {out}, got {max_steps}")


def check_same_model(saved: dict, wanted: dict, out: Path) -> None:
    """Resuming needs the model the checkpoint holds; say which [model] keys differ."""
    diff = [f"model.{k}: {saved.get(k)!r} in the checkpoint, {wanted[k]!r} here" for k in wanted
            if saved.get(k) != wanted[k]]
    if diff:
        raise ValueError(f"--resume: the checkpoint in {out} is of another model ({'; '.join(diff)})")


def run(args) -> int:
    config = load_config(args.config, args.set)
    if args.data_revision is not None:
        config.data.revision = args.data_revision
    max_steps = config.train.max_steps if args.max_steps is None else args.max_steps
    out = Path(args.out)
    check_run(out, args.resume, max_steps)
    folder = find_checkpoint(out) if args.resume else None
    if folder is not None:
        state = read_state(folder)
        check_same_model(state["config"]["model"], config.to_dict()["model"], out)
        check_resume_step(state["step"], max_steps, out)
    runtime = D.init_runtime()
    if args.resume and folder is None and runtime.main:
        print(no_checkpoint_note(out), file=sys.stderr)
    try:
        train, val, tok = open_data(config.data, progress=runtime.main)
        trainer = Trainer(config, out, train, val, train.num_classes, train.mask_id,
                          decode=tok.decode, runtime=runtime)
        if folder is not None:
            trainer.resume()
        result = trainer.run(max_steps)
        if runtime.main and "val_ppl" in result:
            print(f"step {result['step']}: loss {result['loss']:.4f}, validation ELBO perplexity "
                  f"{result['val_ppl']:.2f}")
    finally:
        D.shutdown()
    return 0
