"""Runs of `python -m scale train` and `distill`: the checks made before a run starts or resumes, so
that a bad step limit or an occupied folder is refused before any data is read, and `launch`, which
starts or resumes a run the same way for both."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from imdm_lab.checks import check_writable
from scale.checkpoints.checkpoint import find_checkpoint, read_state
from scale.checkpoints.config import Config
from scale.data.blocks import open_data
from scale.model.cost import check_fits, device_memory
from scale.model.dit import DiTConfig
from scale.training import distributed as D


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


def check_same_model(saved: DiTConfig, wanted: DiTConfig, out: Path) -> None:
    """Resuming needs the model the checkpoint holds: every [model] key equal but bf16 (autocast is a
    runtime choice, not part of the weights); say which keys differ."""
    keys = [f.name for f in dataclasses.fields(DiTConfig) if f.name != "bf16"]
    diff = [f"model.{k}: {getattr(saved, k)!r} in the checkpoint, {getattr(wanted, k)!r} here" for k in keys
            if getattr(saved, k) != getattr(wanted, k)]
    if diff:
        raise ValueError(f"--resume: the checkpoint in {out} is of another model ({'; '.join(diff)})")


def resume_step(out: Path, resume: bool, max_steps: int | None,
                model: DiTConfig) -> tuple[int | None, DiTConfig]:
    """The step a run continues from (None: it starts at step 0) and its model config, after the checks
    of check_run: the checkpoint's model is `model` and its step not beyond max_steps (None: the run's
    own limit). Where `model` leaves the vocabulary to the data, the checkpoint's is filled in, so that
    the data's (DiTConfig.with_vocabulary, once the data is open) must agree with it."""
    check_run(out, resume, max_steps)
    folder = find_checkpoint(out) if resume else None
    if folder is None:
        return None, model
    state = read_state(folder)
    saved = state.config.model
    model = dataclasses.replace(model, **{k: getattr(saved, k) for k in ("vocab_size", "mask_id")
                                          if getattr(model, k) is None})
    check_same_model(saved, model, out)
    if max_steps is not None:
        check_resume_step(state.step, max_steps, out)
    return state.step, model


def launch(config: Config, out: Path, resume: bool, max_steps: int | None, build: Callable) -> dict | None:
    """Start a run in `out`, or with `resume` continue its latest checkpoint, and train to `max_steps`
    (None: the trainer's own limit).

    The checks of resume_step come first (config.model gets the checkpoint's vocabulary where it leaves
    it open); then the process joins torchrun's group, says on stderr when --resume finds nothing to
    continue, opens config.data (scale.data.blocks.open_data: train blocks, validation blocks, tokenizer)
    and calls build(config, data, runtime) -> scale.training.trainer.Trainer, which is resumed when there
    is a checkpoint. Returns the last log record on the main process (None on the others); the process
    group is shut down on return or error. A model whose training state cannot fit in this machine's
    memory is refused first, before any data is read or tensor allocated."""
    check_fits(config.model, device_memory("cpu"))
    start, config.model = resume_step(out, resume, max_steps, config.model)
    runtime = D.init_runtime()
    if resume and start is None and runtime.main:
        print(no_checkpoint_note(out), file=sys.stderr)
    try:
        trainer = build(config, open_data(config.data, progress=runtime.main), runtime)
        if start is not None:
            trainer.resume()
        result = trainer.run(max_steps)
    finally:
        D.shutdown()
    return result if runtime.main else None
