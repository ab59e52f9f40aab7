"""Run folders of `python -m scale train` and `distill`: the checks made before a run starts or resumes,
so that a bad step limit or an occupied folder is refused before any data is read."""
from __future__ import annotations

from pathlib import Path

from imdm_lab.checks import check_writable
from scale.checkpoint import find_checkpoint


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
