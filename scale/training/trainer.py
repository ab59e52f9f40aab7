"""The training loop of scale, single-process or under torchrun: a generic `Trainer` composed with a
model, an objective and a data source (ELBO pre-training, `elbo_trainer`, is one objective; the
distillation methods of scale.training.distill are others).

Batching. A step consumes `global_batch` sequences, split over `world` processes and, inside each,
into micro-batches of `micro_batch` sequences accumulated before one AdamW step; the accumulation count
is global_batch / (world * micro_batch). Every random draw of micro-batch g (its global index, the same
whatever the number of processes) comes from seeds derived from (seed, step, g): the masks, the labels
eps and dropout; the times t are drawn antithetically over the whole global batch from (seed, step). A run on 2
processes therefore computes the same losses as one process accumulating 2 micro-batches, and a run
resumed from a checkpoint continues exactly as if it had not stopped. The data order is
scale.data.blocks.BatchStream's (a permutation per epoch; its position is saved with each checkpoint).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from imdm_lab import durable
from imdm_lab.counter_rng import derive_seed
from imdm_lab.losses import elbo
from imdm_lab.lr_schedule import learning_rate
from imdm_lab.optimizer import make_optimizer
from imdm_lab.schedules import sample_times
from scale.checkpoints.checkpoint import (
    RunFolder,
    check_weights,
    checkpoint_folder,
    read_optimizer,
    read_state,
    read_tensors,
)
from scale.checkpoints.config import Config, EvalSection, TrainSection
from scale.checkpoints.metrics_log import trim_metrics
from scale.checkpoints.state import CheckpointState
from scale.data.blocks import BatchStream
from scale.evaluation.validation import sample_texts, validation_elbo
from scale.model.dit import DiT, parameter_count
from scale.training import distributed as D
from scale.training.ema import EMA

# Fields of a metrics.jsonl record measured on the wall clock: the only ones in which a resumed run's
# log may differ from an uninterrupted one.
WALL_CLOCK_KEYS = ("tokens_per_s", "eta_s")


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    micro_batch: int
    world: int

    @classmethod
    def make(cls, global_batch: int, micro_batch: int, world: int) -> BatchPlan:
        """micro_batch caps the sequences per forward (0: no cap); the plan uses the largest divisor of
        the per-process batch global_batch / world that fits under the cap."""
        if global_batch < 1 or global_batch % world:
            raise ValueError(f"train.global_batch: expected a positive multiple of the world size {world}, "
                             f"got {global_batch}")
        if micro_batch < 0:
            raise ValueError(f"train.micro_batch: expected an integer >= 0 (0 = no cap), got {micro_batch}")
        per_rank = global_batch // world
        cap = micro_batch or per_rank
        micro = max(d for d in range(1, min(cap, per_rank) + 1) if per_rank % d == 0)
        return cls(global_batch, micro, world)

    @property
    def accumulation(self) -> int:
        return self.global_batch // (self.world * self.micro_batch)

    def micro_batches(self, rank: int) -> range:
        """Global indices g of the micro-batches that process `rank` computes at every step."""
        return range(rank * self.accumulation, (rank + 1) * self.accumulation)


def _duration(seconds: float) -> str:
    """12345.6 -> '3h25m46s' (a log line's ETA)."""
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def loss_text(loss: float) -> str:
    """A loss for a log line: 4 decimals, or 3 significant digits below 1e-3, where 4 decimals would print
    a distillation divergence at its floor as "-0.0000" (float32 rounding of a KL that is >= 0 in exact
    arithmetic can land a hair below zero) or as a bare 0.0000 that hides its size."""
    return f"{loss:.4f}" if abs(loss) >= 1e-3 or loss == 0 else f"{loss:.2e}"


def _encode(state: torch.Tensor) -> str:
    return base64.b64encode(state.numpy().tobytes()).decode()


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _rng_states() -> dict:
    """Global generator states (base64), restored on resume for anything that draws outside the
    derived seeds (the training draws themselves never depend on them)."""
    states = {"torch": _encode(torch.get_rng_state())}
    if torch.cuda.is_available():
        states["cuda"] = [_encode(s) for s in torch.cuda.get_rng_state_all()]
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(_decode(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode(s) for s in states["cuda"]])


# train.loss -> the rows the DiT's chunked head NLL (imdm_lab.head_nll) runs on; None: full logits
LOSSES = {"chunked": "masked", "chunked-all": "all", "full": None}


def check_block_ids(blocks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Blocks Long[b, L] read from the cache, ids checked in [0, C) on the host before they go to the device."""
    ids = blocks.numpy()
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(f"data: expected token ids in [0, {num_classes}), got range [{ids.min()}, {ids.max()}]")
    return blocks


class Hooks:
    """What a component composed into a run adds to the Trainer's loop (the default: nothing)."""

    def on_open(self, trainer: Trainer) -> None:
        """The trainer has become the run folder's writer, at its first or its resumed step."""

    def due(self, step: int) -> bool:
        """A checkpoint due at this step beyond train.checkpoint_every."""
        return False

    def after_save(self, trainer: Trainer) -> None:
        """Work that needs the checkpoint of this step committed."""

    def record(self, step: int) -> dict:
        """Fields added to the log record of this step."""
        return {}


class ELBO:
    """The pre-training objective: the mean ELBO of the training blocks at row indices idx (Int[b]) at the
    trainer's times t (Float[b]), masks and labels eps drawn from `generator`.

    The ids are checked on the host copy before it moves; the kernel then trusts x0 and t
    (validate=False), so nothing is read back from the device during the step."""

    def __init__(self, blocks, model: DiT, loss: str, device: torch.device):
        if loss not in LOSSES:
            raise ValueError(f"train.loss: expected one of {sorted(LOSSES)}, got {loss!r}")
        self.blocks, self.process, self.rows, self.device = blocks, model.process, LOSSES[loss], device
        self.num_classes = model.config.vocab_size

    def __call__(self, forward, idx: np.ndarray, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        x0 = check_block_ids(self.blocks[idx], self.num_classes).to(self.device)
        if self.rows is not None:
            forward = functools.partial(forward, head_rows=self.rows)
        return elbo(forward, x0, t.to(self.device), process=self.process, generator=generator,
                    efficient=self.rows is not None, validate=False).mean


@dataclasses.dataclass(frozen=True)
class Validation:
    """What the trainer's evaluation reads: the [eval] settings, the validation blocks (Long[N, L] by row
    indices) and decode(ids) -> text for the samples (None: the samples stay token ids)."""
    settings: EvalSection
    blocks: object
    decode: Callable | None = None


class Trainer:
    """Trains `model` on `loss` to `max_steps`: the batching, accumulation, DDP / FSDP, optimizer, EMA, data
    order, checkpoints, resumption, evaluation and log of one run.

    out: the run folder; model: the network with its initial weights; loss(forward, idx, t, generator) ->
    scalar: the objective of one micro-batch (forward: the module to train through; idx: Int[b] rows of the
    data source; t: Float[b] the micro-batch's times; generator: seeded by (train.seed, seeds, step,
    micro-batch)); num_rows: the data source's length (the batch order permutes it); train: the [train]
    settings; length: tokens per sequence (the log's throughput, the samples' length); validation: what
    the evaluation every eval.every steps reads; record: the run's config, written into every checkpoint
    (scale.checkpoints.state.CheckpointState) and not read by the loop; hooks: components of the run (e.g.
    scale.training.rounds.Rounds); max_steps: the default of run() (None: train.max_steps)."""

    def __init__(self, out: str | Path, model: DiT, loss, num_rows: int, *, train: TrainSection, length: int,
                 validation: Validation, record: Config, seeds: str, hooks: tuple[Hooks, ...] = (),
                 max_steps: int | None = None, runtime: D.Runtime | None = None):
        self.out, self.settings, self.length, self.validation = Path(out), train, length, validation
        self.record, self.loss, self.seeds, self.hooks = record, loss, seeds, hooks
        self.rt = runtime or D.init_runtime()
        self.max_steps = train.max_steps if max_steps is None else max_steps
        tc = train
        self.plan = BatchPlan.make(tc.global_batch, tc.micro_batch, self.rt.world)
        self.model = model.to(self.rt.device)
        self.wrapped = D.wrap(self.model, self.rt, tc.strategy)
        self.sharded = D.is_sharded(self.rt, tc.strategy)
        self.optimizer = make_optimizer(self.model, tc, self.rt.device.type)
        # the compiled module shares the model's parameters; evaluation and sampling stay eager
        self.train_forward = torch.compile(self.wrapped) if tc.compile else self.wrapped
        self.ema = EMA(self.model, tc.ema)
        # The global batch order; each process takes its micro-batches' rows out of it.
        self.stream = BatchStream(num_rows, tc.global_batch, seed=tc.seed)
        self.step = 0
        self.run_folder = RunFolder(self.out)
        self.resumed, self.saved_step = False, None

    # ---- checkpoints -------------------------------------------------------------------------
    def resume(self) -> None:
        """Load the latest checkpoint of `out` (scale.training.runs.resume_step has checked that it holds
        this model)."""
        folder = checkpoint_folder(self.out)
        state = read_state(folder)
        step = state.step
        weights = read_tensors(folder / "model.safetensors", step)
        check_weights(self.model, weights, f"ckpt: {folder / 'model.safetensors'}")
        D.load_full_state(self.model, self.optimizer, weights, read_optimizer(folder, step), self.sharded)
        if None in (state.ema_updates, state.rng, state.position):
            raise ValueError(f"ckpt: {folder / 'state.json'} holds no training state (ema_updates, rng, data); "
                             f"expected a checkpoint written by `python -m scale train` or `distill`")
        self.ema.load_state_dict(read_tensors(folder / "ema.safetensors", step), state.ema_updates)
        self.stream.load_state_dict(state.position)
        _set_rng_states(state.rng)
        self.step = self.saved_step = step
        self.resumed = True

    def save(self) -> None:
        """Commit the current step to the run folder (once per step; rank 0 writes)."""
        if self.saved_step == self.step:
            return
        self.saved_step = self.step
        model_state, optim_state = D.full_state(self.model, self.optimizer, self.sharded)
        ema_state = self.ema.state_dict()
        if not self.rt.main:
            return
        state = CheckpointState(step=self.step, config=self.record, tokenizer=self.record.data.tokenizer,
                                world_size=self.rt.world, ema_updates=self.ema.updates, rng=_rng_states(),
                                position=self.stream.state_dict())
        self.run_folder.commit(model_state, ema_state, optim_state, state.to_dict())

    # ---- logging -----------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self.rt.main:
            path = self.out / "metrics.jsonl"
            try:
                with open(path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            except OSError as err:  # a full disk fails the write to an open file, which names no path
                durable.name_path(err, path)
                raise

    def _open_run(self) -> None:
        """Become the run folder's writer (rank 0): lock, clean a dead writer's leftovers, align the log;
        then the hooks' on_open (every process)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rt.main:
            self.run_folder.acquire()
            trim_metrics(self.out / "metrics.jsonl", self.step if self.resumed else None)
        for hook in self.hooks:
            hook.on_open(self)

    # ---- one optimizer step ------------------------------------------------------------------
    def _micro_batch_loss(self, g: int, rows: np.ndarray, t_all: torch.Tensor) -> torch.Tensor:
        """Loss of global micro-batch g: its rows and times, dropout and generator seeded by (step, g)."""
        tc, mb = self.settings, self.plan.micro_batch
        torch.manual_seed(derive_seed(tc.seed, "dropout", self.step, g))
        gen = torch.Generator(self.rt.device).manual_seed(derive_seed(tc.seed, self.seeds, self.step, g))
        return self.loss(self.train_forward, rows[g * mb:(g + 1) * mb], t_all[g * mb:(g + 1) * mb], gen)

    def update(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Forward, ELBO, backward and the optimizer / EMA step of one global batch, queued without any
        read-back from the device: (this process's loss, gradient norm) as device scalars, and the
        learning rate of the step (train.lr warmed up linearly over train.warmup steps, then constant)."""
        tc, plan = self.settings, self.plan
        self.model.train()
        lr = learning_rate(self.step, tc.lr, tc.warmup, kind="constant")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        gen = torch.Generator().manual_seed(derive_seed(tc.seed, "time", self.step))
        t_all = sample_times(plan.global_batch, tc.t_min, tc.antithetic, generator=gen)
        rows = self.stream.next_global_indices()
        total = torch.zeros((), device=self.rt.device)
        micro = plan.micro_batches(self.rt.rank)
        for j, g in enumerate(micro):
            last = j == len(micro) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.wrapped, "no_sync") \
                else self.wrapped.no_sync()
            with sync:
                loss = self._micro_batch_loss(g, rows, t_all) / plan.accumulation
                loss.backward()
            total += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        self.step += 1
        return total, grad_norm, lr

    def train_step(self) -> dict:
        total, grad_norm, lr = self.update()
        loss = float(D.all_mean(total))
        if not math.isfinite(loss):
            raise ValueError(f"train: the loss became {loss} at step {self.step}; lower train.lr")
        record = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": float(grad_norm)}
        for hook in self.hooks:
            record.update(hook.record(self.step))
        return record

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self) -> dict:
        v, ec, tc = self.validation, self.validation.settings, self.settings
        with self.ema.applied(self.model):
            self.model.eval()
            nll = validation_elbo(self.wrapped, v.blocks, ec.batch_size, ec.val_batches, tc.t_min,
                                  seed=tc.seed, device=self.rt.device)
            samples = sample_texts(self.wrapped, self.length, ec.sample_steps, ec.samples,
                                   seed=tc.seed, device=self.rt.device, decode=v.decode)
        return {"step": self.step, "val_nll": nll, "val_ppl": math.exp(nll), "samples": samples}

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> dict:
        """Train to `max_steps` (None: the trainer's) as the run folder's writer; the lock goes with the
        return or the error."""
        self._open_run()
        try:
            return self._loop(self.max_steps if max_steps is None else max_steps)
        except OSError as err:  # a full or read-only disk: say what survives (imdm_lab.dispatch prints it)
            if self.rt.main:
                err.add_note(self._survivor())
            raise
        finally:
            self.run_folder.release()

    def _survivor(self) -> str:
        """What a run that stops on a failed write leaves: its last complete checkpoint (a commit is all or
        nothing, scale.checkpoints.checkpoint), from which --resume continues."""
        latest = self.run_folder.latest()
        if latest is None:
            return f"{self.out} holds no complete checkpoint; the run starts again from step 0"
        return (f"the last complete checkpoint is step {int(latest.name.removeprefix('step-'))} ({latest}); "
                f"--resume continues from it")

    def _loop(self, max_steps: int) -> dict:
        tc, ec = self.settings, self.validation.settings
        if self.rt.main and self.step == 0:
            self._log({"step": 0, "parameters": parameter_count(self.model), "world_size": self.rt.world,
                       "accumulation": self.plan.accumulation, "device": str(self.rt.device)})
        bar = tqdm(total=max_steps, initial=self.step, disable=not self.rt.main, desc="train", unit="step")
        last, tic, since, start = {}, time.perf_counter(), 0, self.step
        started = tic
        try:
            while self.step < max_steps:
                last = self.train_step()
                since += 1
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}")
                if self.step % tc.log_every == 0 or self.step == max_steps:
                    now = time.perf_counter()
                    tokens = since * self.plan.global_batch * self.length
                    last["tokens_per_s"] = tokens / (now - tic)
                    # ETA from the mean step time since this process started (evaluation and saving included)
                    last["eta_s"] = (max_steps - self.step) * (now - started) / (self.step - start)
                    tic, since = now, 0
                    self._log(last)
                    if self.rt.main:
                        bar.write(f"step {self.step}/{max_steps}  loss {loss_text(last['loss'])}  lr {last['lr']:.2e}  "
                                  f"{last['tokens_per_s']:,.0f} tokens/s  ETA {_duration(last['eta_s'])}",
                                  file=sys.stderr)
                if ec.every and (self.step % ec.every == 0 or self.step == max_steps):
                    last = {**last, **self.evaluate()}
                    self._log({k: last[k] for k in ("step", "val_nll", "val_ppl", "samples")})
                if (self.step % tc.checkpoint_every == 0 or self.step == max_steps
                        or any(hook.due(self.step) for hook in self.hooks)):
                    self.save()
                    D.barrier()
                    for hook in self.hooks:
                        hook.after_save(self)
        finally:  # the bar's line ends before any message that follows it
            bar.close()
        return last


def elbo_trainer(config: Config, out: str | Path, train_blocks, val_blocks, *, decode=None,
                 runtime: D.Runtime | None = None) -> Trainer:
    """Pre-training: a fresh DiT of config.model (its vocabulary filled in), seeded by train.seed so that
    every process starts from the same weights, trained on the ELBO of `train_blocks`."""
    rt = runtime or D.init_runtime()
    torch.manual_seed(config.train.seed)
    model = DiT(config.model)
    loss = ELBO(train_blocks, model, config.train.loss, rt.device)
    return Trainer(out, model, loss, len(train_blocks), train=config.train, length=config.data.length,
                   validation=Validation(config.eval, val_blocks, decode), record=config, seeds="mask", runtime=rt)
