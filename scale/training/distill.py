"""Few-step distillation of a DiT on the training loop of scale.training.trainer (Ugness/IMDM algo.py,
IMSDTT and IMReDi).

`distill_trainer` composes a `Trainer` with the student (the initial checkpoint's weights), the method's
objective (its METHODS entry) and, for the progressive methods, the rounds (scale.training.rounds.Rounds);
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

from collections.abc import Callable
from dataclasses import dataclass

import torch

import imdm_lab.distill as distill_kernels
from imdm_lab.process import Process
from scale.checkpoints.checkpoint import load_weights
from scale.checkpoints.config import Config
from scale.model.dit import EPS_PATH, DiT
from scale.training import distributed as D
from scale.training.rounds import Rounds
from scale.training.trainer import Trainer, Validation


@dataclass(frozen=True)
class Parts:
    """What a method's objective is built from: the run's config, its data source (blocks or a coupling),
    the student's process, the device, the frozen teacher (None without one) and the rounds (None
    outside SDTT)."""
    config: Config
    data: object
    process: Process
    device: torch.device
    teacher: torch.nn.Module | None
    rounds: Rounds | None


def sdtt_objective(p: Parts) -> Callable:
    """(IM-)SDTT on data blocks at the trainer's times t (Float[b]): imdm_lab.distill.sdtt_loss with the
    round's teacher step dt_r (eps fresh, shared by teacher and student, fixed over the teacher's k steps)."""
    dc = p.config.distill

    def loss(forward, idx, t, generator) -> torch.Tensor:
        return distill_kernels.sdtt_loss(forward, p.teacher, p.data[idx].to(p.device), p.rounds.dt,
                                         k=dc.teacher_steps, process=p.process, divergence_kind=dc.divergence,
                                         t=t.to(p.device), generator=generator)
    return loss


def coupling_objective(p: Parts) -> Callable:
    """(IM-)ReDi on stored coupling rows: imdm_lab.distill.coupling_loss (eps regenerated from the seed;
    the coupling's own times, not the trainer's)."""
    c, dev = p.data, p.device

    def loss(forward, idx, _t, generator) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.int64)
        batch = distill_kernels.Coupling(c.x_t[idx].to(dev), c.x_0[idx].to(dev), c.t[idx].to(dev),
                                         c.seed[idx].to(dev))
        return distill_kernels.coupling_loss(forward, batch, process=p.process,
                                             ignore_seed=p.config.distill.ignore_seed, generator=generator)
    return loss


def eps_coupling_objective(p: Parts) -> Callable:
    """The eps-driven coupling at the trainer's times t: cross-entropy against the teacher's completion
    F(x_t, eps), made online (imdm_lab.distill.eps_coupling_loss; L teacher calls per batch)."""
    def loss(forward, idx, t, generator) -> torch.Tensor:
        return distill_kernels.eps_coupling_loss(forward, p.teacher, p.data[idx].to(p.device),
                                                 reader=p.config.distill.reader, process=p.process,
                                                 t=t.to(p.device), generator=generator)
    return loss


@dataclass(frozen=True)
class Method:
    imdm: bool  # the student reads mask labels eps
    teacher: bool  # a frozen teacher network runs during training
    coupling: bool  # trains on a coupling folder
    rounds: bool  # progressive rounds with a growing step size
    defaults: dict  # paper settings, applied under the user's config and --set
    # Parts -> loss(forward, idx, t, generator) of one micro-batch (scale.training.trainer.Trainer's objective)
    objective: Callable[[Parts], Callable]


_SDTT = {"train.lr": 6e-5, "train.warmup": 500, "train.ema": 0.9999, "train.global_batch": 128,
         "train.checkpoint_every": 10_000}
_REDI = {"train.lr": 3e-4, "train.warmup": 2500, "train.ema": 0.9999, "train.global_batch": 512,
         "train.max_steps": 50_000, "train.checkpoint_every": 10_000}
METHODS: dict[str, Method] = {
    "sdtt": Method(imdm=False, teacher=True, coupling=False, rounds=True, defaults=_SDTT,
                   objective=sdtt_objective),
    "imdm-sdtt": Method(imdm=True, teacher=True, coupling=False, rounds=True, defaults=_SDTT,
                        objective=sdtt_objective),
    "redi": Method(imdm=False, teacher=False, coupling=True, rounds=False, defaults=_REDI,
                   objective=coupling_objective),
    "imdm-redi": Method(imdm=True, teacher=False, coupling=True, rounds=False, defaults=_REDI,
                        objective=coupling_objective),
    "imdm-eps-coupling": Method(imdm=True, teacher=True, coupling=False, rounds=False, defaults=_REDI,
                                objective=eps_coupling_objective),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"--method: expected one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def _inert(tensors: dict) -> bool:
    """True when an eps path is absent or still at its zero-initialised last layer (so it is unused)."""
    return all(not bool(v.abs().max() > 0) for k, v in tensors.items()
               if k.startswith(EPS_PATH) and k.endswith(("imdm_mlp.2.weight", "mask_table")))


def adapt_weights(tensors: dict, model: torch.nn.Module, source: str) -> dict:
    """Weights of a checkpoint for `model` across eps-path changes (MDLM <-> IMDM, another label_dim).

    When the checkpoint's eps path does not fit the model's, it must be inert (last layer zero: the
    network ignores eps, Ugness/IMDM models/dit.py); the model then keeps its own freshly initialised,
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


def distill_trainer(config: Config, out, init: dict, train_data, val_blocks, *, source: str = "init",
                    decode=None, runtime: D.Runtime | None = None) -> Trainer:
    """The Trainer of `config.distill.method`: the student DiT of config.model with the weights `init`
    (adapt_weights; its own eps path drawn from train.seed, as a fresh model's), a frozen teacher
    replica of `init` when the method has one, the rounds when it has them, and the method's objective
    on `train_data` (data blocks, or a scale.training.coupling.Coupling), seeded in the "distill" namespace."""
    rt = runtime or D.init_runtime()
    method = get_method(config.distill.method)
    torch.manual_seed(config.train.seed)  # the student's own initial eps path, as a fresh model's
    student = DiT(config.model)
    init = adapt_weights(init, student, source)
    load_weights(student, init, source)
    teacher = rounds = None
    if method.teacher:
        # A plain replica on every process (never sharded): it only runs forward passes.
        teacher = DiT(config.model).to(rt.device).eval().requires_grad_(False)
        teacher.load_state_dict(init)
    if method.rounds:
        rounds = Rounds(teacher, config.distill)
    loss = method.objective(Parts(config, train_data, student.process, rt.device, teacher, rounds))
    return Trainer(out, student, loss, len(train_data), train=config.train, length=config.data.length,
                   validation=Validation(config.eval, val_blocks, decode), record=config, seeds="distill",
                   hooks=(rounds,) if rounds else (), max_steps=rounds.max_steps if rounds else None, runtime=rt)
