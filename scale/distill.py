"""Few-step distillation of a DiT on the training loop of scale.train (imdm-reference sec. 5).

`Distiller` is a `Trainer` whose per-micro-batch loss is a distillation objective instead of the ELBO;
batching, accumulation, DDP / FSDP, EMA, checkpoints, resumption and logging are the Trainer's.

Methods (METHODS):
- `sdtt` / `imdm-sdtt`: progressive self-distillation in rounds of `grow_every` optimizer steps. In
  round r the frozen teacher takes k = teacher_steps ancestral steps of size dt_r = k^r / N_0 from x_t
  (N_0 = start_steps), and the student matches the teacher's predictions in one step of size k dt_r,
  so after round r the student samples with N_0 / k^(r+1) steps; rounds stop at target_steps
  (1024 -> 512 -> ... -> 8 is 7 rounds). At each round boundary the teacher takes the student's raw
  weights and the student is saved to `rounds/`. IM-SDTT draws one eps per position, keeps it over the
  teacher's rollout (no resets) and gives the student the same eps.
- `redi` / `imdm-redi`: fine-tuning on a coupling of `python -m scale coupling`: the ELBO-weighted
  cross-entropy at the stored t against the teacher's x_0, eps regenerated from the stored seed with no
  reset (fresh eps with `ignore_seed`; no eps for the MDM `redi`).
- `imdm-eps-coupling`: the teacher's completions are a deterministic function of eps (the eps-driven
  coupling of imdm_lab.distill), made online for every batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import imdm_lab.distill as distill_kernels
from scale import distributed as D
from scale.checkpoint import checkpoint_folder, copy_checkpoint, read_state, read_tensors
from scale.config import Config
from scale.ema import EMA
from scale.model import EPS_PATH, DiT
from scale.train import Trainer


@dataclass(frozen=True)
class Method:
    imdm: bool  # the student reads mask labels eps
    teacher: bool  # a frozen teacher network runs during training
    coupling: bool  # trains on a coupling folder
    rounds: bool  # progressive rounds with a growing step size
    defaults: dict  # paper settings, applied under the user's config and --set


_SDTT = {"train.lr": 6e-5, "train.warmup": 500, "train.ema": 0.9999, "train.global_batch": 128,
         "train.checkpoint_every": 10_000}
_REDI = {"train.lr": 3e-4, "train.warmup": 2500, "train.ema": 0.9999, "train.global_batch": 512,
         "train.max_steps": 50_000, "train.checkpoint_every": 10_000}
METHODS: dict[str, Method] = {
    "sdtt": Method(imdm=False, teacher=True, coupling=False, rounds=True, defaults=_SDTT),
    "imdm-sdtt": Method(imdm=True, teacher=True, coupling=False, rounds=True, defaults=_SDTT),
    "redi": Method(imdm=False, teacher=False, coupling=True, rounds=False, defaults=_REDI),
    "imdm-redi": Method(imdm=True, teacher=False, coupling=True, rounds=False, defaults=_REDI),
    "imdm-eps-coupling": Method(imdm=True, teacher=True, coupling=False, rounds=False, defaults=_REDI),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"--method: expected one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def round_plan(start_steps: int, k: int, target_steps: int) -> list[float]:
    """Teacher step sizes dt_r = k^r / N_0 of the rounds (imdm_lab.distill.round_plan), with errors
    naming the config keys."""
    try:
        return distill_kernels.round_plan(start_steps, target_steps, k)
    except ValueError as err:
        raise ValueError(f"distill.{err}") from None


def _inert(tensors: dict) -> bool:
    """True when an eps path is absent or still at its zero-initialised last layer (so it is unused)."""
    return all(not bool(v.abs().max() > 0) for k, v in tensors.items()
               if k.startswith(EPS_PATH) and k.endswith(("imdm_mlp.2.weight", "mask_table")))


def adapt_weights(tensors: dict, model: torch.nn.Module, source: str) -> dict:
    """Weights of a checkpoint for `model` across eps-path changes (MDLM <-> IMDM, another label_dim).

    When the checkpoint's eps path does not fit the model's, it must be inert (last layer zero: the
    network ignores eps, imdm-reference sec. 3.3); the model then keeps its own freshly initialised,
    equally inert eps path, so the student computes exactly the checkpoint's logits."""
    own = model.state_dict()
    src = {k for k in tensors if k.startswith(EPS_PATH)}
    mine = {k for k in own if k.startswith(EPS_PATH)}
    if src == mine and all(tensors[k].shape == own[k].shape for k in src):
        return tensors
    if not _inert(tensors):
        raise ValueError(f"{source}: its trained eps path does not fit the student's "
                         f"(model.labels / label_dim differ); keep the checkpoint's model settings")
    out = {k: v for k, v in tensors.items() if k not in src}
    out.update({k: own[k].detach().cpu().clone() for k in mine})
    return out


class Distiller(Trainer):
    """A Trainer whose loss is `config.distill.method`'s objective; the student starts from `init`."""

    def __init__(self, config: Config, out, init: dict, train_data, val_blocks, vocab_size: int, mask_id: int,
                 decode=None, runtime=None, source: str = "init"):
        super().__init__(config, out, train_data, val_blocks, vocab_size, mask_id, decode=decode,
                         runtime=runtime)
        dc, tc = config.distill, config.train
        self.method = get_method(dc.method)
        torch.manual_seed(tc.seed)  # the student's own initial eps path, as the Trainer drew it
        init = adapt_weights(init, DiT(self.model.config), source)
        D.load_full_model_state(self.model, init, self.sharded)
        self.ema = EMA(self.model, tc.ema)  # averages from the initial weights, not the random ones
        self.dts = round_plan(dc.start_steps, dc.teacher_steps, dc.target_steps) if self.method.rounds else []
        self.teacher = None
        if self.method.teacher:
            # A plain replica on every process (never sharded): it only runs forward passes.
            self.teacher = DiT(self.model.config).to(self.rt.device).eval().requires_grad_(False)
            self.teacher.load_state_dict(init)

    # ---- rounds ------------------------------------------------------------------------------
    @property
    def round(self) -> int:
        return self.step // self.cfg.distill.grow_every

    def rounds_dir(self, r: int) -> Path:
        """The student after round r (1-based), which samples with N_0 / k^r steps."""
        dc = self.cfg.distill
        return self.out / "rounds" / f"round-{r}-{dc.start_steps // dc.teacher_steps ** r}-steps"

    def _snapshot_round(self, r: int) -> None:
        """Copy the checkpoint just committed in `out` (weights, EMA, state) to rounds/, atomically (a
        complete folder or none; every process calls this)."""
        final = self.rounds_dir(r)
        if self.rt.main and not final.is_dir():
            copy_checkpoint(checkpoint_folder(self.out), final)
        D.barrier()

    def _load_teacher_of_round(self) -> None:
        r = self.round
        if r == 0:
            return
        folder = self.rounds_dir(r)
        self.teacher.load_state_dict(read_tensors(folder / "model.safetensors", read_state(folder)["step"]))

    def must_save(self) -> bool:
        """A round ends: its student is checkpointed, copied to rounds/ and becomes the teacher."""
        return self.method.rounds and self.step % self.cfg.distill.grow_every == 0

    def after_save(self) -> None:
        if self.must_save():
            self._snapshot_round(self.round)
            self._load_teacher_of_round()  # teacher <- the student's raw weights

    def train_step(self) -> dict:
        record = super().train_step()
        if self.must_save():
            record["round"] = self.round
        return record

    def _open_run(self) -> None:
        """A resumed run gets the teacher of its round back; a run killed between a round's commit and
        its copy to rounds/ makes the copy now."""
        super()._open_run()
        if self.method.rounds and self.round > 0:
            if self.must_save():
                self._snapshot_round(self.round)
            self._load_teacher_of_round()

    def run(self, max_steps: int | None = None) -> dict:
        if max_steps is None:
            max_steps = (len(self.dts) * self.cfg.distill.grow_every if self.method.rounds
                         else self.cfg.train.max_steps)
        return super().run(max_steps)

    # ---- objectives --------------------------------------------------------------------------
    SEED_TAG = "distill"

    def loss(self, idx, t, gen) -> torch.Tensor:
        return OBJECTIVES[self.cfg.distill.method](self, idx, t, gen)


def sdtt_objective(d: Distiller, idx, t, gen) -> torch.Tensor:
    """(IM-)SDTT on data blocks at the trainer's times t (Float[b]): imdm_lab.distill.sdtt_loss with the
    round's teacher step dt_r (eps fresh, shared by teacher and student, fixed over the teacher's k steps)."""
    dc = d.cfg.distill
    return distill_kernels.sdtt_loss(d.wrapped, d.teacher, d.train_blocks[idx].to(d.rt.device),
                                     d.dts[min(d.round, len(d.dts) - 1)], k=dc.teacher_steps,
                                     process=d.model.process, divergence_kind=dc.divergence,
                                     t=t.to(d.rt.device), generator=gen)


def coupling_objective(d: Distiller, idx, _t, gen) -> torch.Tensor:
    """(IM-)ReDi on stored coupling rows: imdm_lab.distill.coupling_loss (eps regenerated from the seed)."""
    c, dev = d.train_blocks, d.rt.device
    idx = torch.as_tensor(idx, dtype=torch.int64)
    batch = distill_kernels.Coupling(c.x_t[idx].to(dev), c.x_0[idx].to(dev), c.t[idx].to(dev), c.seed[idx].to(dev))
    return distill_kernels.coupling_loss(d.wrapped, batch, process=d.model.process,
                                         ignore_seed=d.cfg.distill.ignore_seed, generator=gen)


def eps_coupling_objective(d: Distiller, idx, t, gen) -> torch.Tensor:
    """The eps-driven coupling at the trainer's times t: cross-entropy against the teacher's completion
    F(x_t, eps), made online (imdm_lab.distill.eps_coupling_loss; L teacher calls per batch)."""
    x0 = d.train_blocks[idx].to(d.rt.device)
    return distill_kernels.eps_coupling_loss(d.wrapped, d.teacher, x0, reader=d.cfg.distill.reader,
                                             process=d.model.process, t=t.to(d.rt.device), generator=gen)


# method -> loss of one micro-batch: (distiller, row indices, trainer's times Float[b], generator) -> scalar
OBJECTIVES = {
    "sdtt": sdtt_objective,
    "imdm-sdtt": sdtt_objective,
    "redi": coupling_objective,
    "imdm-redi": coupling_objective,
    "imdm-eps-coupling": eps_coupling_objective,
}
