"""The rounds of progressive distillation (SDTT / IM-SDTT), a component the distillation Trainer is
composed with (scale.training.trainer.Hooks).

Round r lasts `grow_every` optimizer steps, in which the frozen teacher takes steps of size
dt_r = k^r / N_0. When a round ends its student is checkpointed, copied to `rounds/` and becomes the
teacher of the next round (its raw weights). A resumed run gets the teacher of its round back, and a
run killed between a round's commit and its copy to rounds/ makes the copy when it is opened again.
"""
from __future__ import annotations

from pathlib import Path

import torch

import imdm_lab.distill as distill_kernels
from scale.checkpoints.checkpoint import checkpoint_folder, copy_checkpoint, read_state, read_tensors
from scale.checkpoints.config import DistillSection
from scale.training import distributed as D
from scale.training.trainer import Hooks


def round_plan(start_steps: int, k: int, target_steps: int) -> list[float]:
    """Teacher step sizes dt_r = k^r / N_0 of the rounds (imdm_lab.distill.round_plan), with errors
    naming the config keys."""
    try:
        return distill_kernels.round_plan(start_steps, target_steps, k)
    except ValueError as err:
        raise ValueError(f"distill.{err}") from None


class Rounds(Hooks):
    """The round schedule of `settings` and the teacher it reloads in place at round boundaries."""

    def __init__(self, teacher: torch.nn.Module, settings: DistillSection):
        self.teacher, self.settings = teacher, settings
        self.dts = round_plan(settings.start_steps, settings.teacher_steps, settings.target_steps)
        self.round = 0

    @property
    def dt(self) -> float:
        """The teacher's step size in the current round (the last round's after the plan ends)."""
        return self.dts[min(self.round, len(self.dts) - 1)]

    @property
    def max_steps(self) -> int:
        """The optimizer steps of all rounds."""
        return len(self.dts) * self.settings.grow_every

    def folder(self, out: Path, r: int) -> Path:
        """The student after round r (1-based), which samples with N_0 / k^r steps."""
        s = self.settings
        return out / "rounds" / f"round-{r}-{s.start_steps // s.teacher_steps ** r}-steps"

    def due(self, step: int) -> bool:
        """A round ends: its student is checkpointed."""
        return step % self.settings.grow_every == 0

    def record(self, step: int) -> dict:
        return {"round": step // self.settings.grow_every} if self.due(step) else {}

    def on_open(self, trainer) -> None:
        self.round = trainer.step // self.settings.grow_every
        if self.round > 0:
            if self.due(trainer.step):
                self._snapshot(trainer)
            self._load_teacher(trainer.out)

    def after_save(self, trainer) -> None:
        if self.due(trainer.step):
            self.round = trainer.step // self.settings.grow_every
            self._snapshot(trainer)
            self._load_teacher(trainer.out)  # teacher <- the student's raw weights

    def _snapshot(self, trainer) -> None:
        """Copy the checkpoint just committed in `out` (weights, EMA, state) to rounds/, atomically (a
        complete folder or none; every process calls this)."""
        final = self.folder(trainer.out, self.round)
        if trainer.rt.main and not final.is_dir():
            copy_checkpoint(checkpoint_folder(trainer.out), final)
        D.barrier()

    def _load_teacher(self, out: Path) -> None:
        folder = self.folder(out, self.round)
        self.teacher.load_state_dict(read_tensors(folder / "model.safetensors", read_state(folder).step))
