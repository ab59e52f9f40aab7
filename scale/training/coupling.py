"""The perturbed coupling of ReDi / IM-ReDi (`python -m scale coupling`), written as resumable shards.

Sample i of a coupling of n (Ugness/IMDM main.py, generate_reflow_dataset; trainer_base.py,
test_step):
1. x_0^data = training block rows[i] (a fixed random subset of the teacher's training split, drawn
   without replacement while n fits, further passes otherwise);
2. seed_i = a 63-bit integer derived from (seed, i); the masking uniforms u = U(seed_i, MASK_STREAM, .)
   come from the counter-based hash, so t_i = t_min + (1 - t_min) u_0 and position l is masked when
   u_{1+l} < 1 - alpha(t_i) (the teacher's schedule; the official code masks with probability t);
3. the teacher completes x_t from time t_i down to 0 with `steps` ancestral steps (the shared sampler,
   float64 draws), its initial labels eps = hash(seed_i) (stream 0, `MaskLabels.from_seeds`) and its
   resets hashed from (seed_i, step); with --fix-eps no reset happens and the initial eps stays.
   Steps 2-3 are imdm_lab.distill.perturbed_coupling(hashed=True), the kernel the toy IM-ReDi runs;
4. stored: x_t (with mask ids), x_0 (the teacher's completion), t, seed, index i.

Storage: DIR/meta.json (the settings, META below), then shard s = samples [s S, (s+1) S) in DIR/shard-NNNNNN/
(x_t.npy, x_0.npy, t.npy, seed.npy, index.npy). A shard is written as one durable folder
(imdm_lab.durable), so after a kill every shard is either complete or absent; a rerun with the same
settings skips the complete ones and removes the temporary folders its killed writers left. Under
torchrun, rank r generates the shards s with s % world == r.
Everything a shard holds is a function of (seed, s): no duplicates, no gaps, on any number of ranks.

Reading: `read_meta` checks every entry of meta.json (the coupling command before it resumes a folder,
distill before it starts), `Coupling` then every shard (files, dtypes, shapes, values) and that the
folder holds exactly the shards of meta.json's n; an error names the file and the field.
"""
from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imdm_lab import durable
from imdm_lab.checks import SEED_LIMIT, check_cost, check_int, check_seed, check_writable
from imdm_lab.counter_rng import derive_seed
from imdm_lab.distill import perturbed_coupling
from imdm_lab.labels import LABEL_NAMES
from imdm_lab.sampling import SamplerOptions, check_steps_memory
from imdm_lab.schedules import SCHEDULES
from scale.checkpoints.checkpoint import load_model
from scale.checkpoints.hub import resolve_checkpoint
from scale.data.blocks import open_blocks, token_dtype
from scale.data.json_fields import Field, check_fields, flag, integer, is_number, is_text, one_of, read_object
from scale.model.cost import device_memory
from scale.training import distributed as D

FORMAT = "imdm-lab-coupling/1"
ARRAYS = ("x_t", "x_0", "t", "seed", "index")
SHARD = re.compile(r"shard-\d{6}")
# meta.json: every entry `generate` writes (mask_id is also checked to lie below num_classes)
META = {
    "format": Field(one_of(FORMAT), repr(FORMAT)),
    "teacher": Field(is_text, "the teacher's checkpoint folder"),
    "teacher_step": Field(integer(0), "an integer >= 0"),
    "weights": Field(one_of("ema", "model"), "'ema' or 'model'"),
    "n": Field(integer(1), "an integer >= 1"),
    "steps": Field(integer(1), "an integer >= 1"),
    "fix_eps": Field(flag, "true or false"),
    "seed": Field(integer(0, SEED_LIMIT), "an integer in [0, 2^31)"),
    "shard_size": Field(integer(1), "an integer >= 1"),
    "t_min": Field(lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "length": Field(integer(1), "an integer >= 1"),
    "num_classes": Field(integer(2), "an integer >= 2"),
    "mask_id": Field(integer(0), "an integer >= 0"),
    "schedule": Field(one_of(*SCHEDULES), f"one of {sorted(SCHEDULES)}"),
    "labels": Field(one_of(*LABEL_NAMES), f"one of {list(LABEL_NAMES)}"),
    "tokenizer": Field(is_text, "a tokenizer name or folder"),
    "dataset": Field(is_text, "a corpus name"),
    "num_blocks": Field(integer(1), "an integer >= 1"),
}


def read_meta(folder: str | Path, name: str = "coupling") -> dict:
    """meta.json of a coupling folder, every entry of META checked (no other entry allowed);
    ValueError('NAME: FOLDER/meta.json: ENTRY: expected ..., got ...')."""
    path = Path(folder) / "meta.json"
    where = f"{name}: {path}"
    meta = check_fields(read_object(path, name, "the settings of a coupling folder"), META, where, unknown=False)
    if meta["mask_id"] >= meta["num_classes"]:
        raise ValueError(f"{where}: mask_id: expected an id below num_classes = {meta['num_classes']}, got "
                         f"{meta['mask_id']}")
    return meta


def sample_seeds(seed: int, indices: np.ndarray) -> np.ndarray:
    """Int64[n]: the per-sample seed of each global sample index (63-bit, from imdm_lab.counter_rng)."""
    return np.array([derive_seed(seed, "redi-sample", int(i)) for i in indices], dtype=np.int64)


def training_rows(num_blocks: int, n: int, seed: int) -> np.ndarray:
    """Int64[n]: block indices of samples 0..n-1, consecutive permutations of the training blocks."""
    passes = -(-n // num_blocks)
    perms = [np.random.default_rng([derive_seed(seed, "redi-rows"), p]).permutation(num_blocks)
             for p in range(passes)]
    return np.concatenate(perms)[:n].astype(np.int64)


def _check_meta(out: Path, old: dict | None, meta: dict) -> None:
    """The settings `meta` of this run against those `old` of the folder being resumed (None: a new one)."""
    if old is None:
        return
    diff = sorted(k for k in meta if old.get(k) != meta[k])
    if diff:
        raise ValueError(f"--out: {out} holds a coupling made with other settings "
                         f"({', '.join(f'{k}: {old.get(k)!r} != {meta[k]!r}' for k in diff)}); "
                         f"use another folder")


@dataclass(frozen=True)
class CouplingSettings:
    """How a coupling is made (the options of `python -m scale coupling`; all but batch_size are recorded in
    meta.json): n samples, each completed by the teacher's `weights` with `steps` ancestral steps from
    t ~ U[t_min, 1] (fix_eps: no label reset along the completion), every draw derived from `seed`;
    `shard_size` samples per shard, `batch_size` per sampler call. Refused on construction unless every
    count is an integer >= 1, t_min a number in (0, 1), fix_eps a bool and the seed a valid seed."""
    n: int
    steps: int
    fix_eps: bool = False
    seed: int = 0
    batch_size: int = 32
    shard_size: int = 1024
    weights: str = "ema"
    t_min: float = 1e-3

    def __post_init__(self):
        # stored as plain ints: meta.json records them
        for name in ("n", "steps", "batch_size", "shard_size"):
            object.__setattr__(self, name, check_int(f"--{name.replace('_', '-')}", getattr(self, name), 1))
        if isinstance(self.t_min, bool) or not isinstance(self.t_min, (int, float)) or not 0.0 < self.t_min < 1.0:
            raise ValueError(f"--t-min: expected a number in (0, 1), got {self.t_min!r}")
        if not isinstance(self.fix_eps, bool):
            raise ValueError(f"--fix-eps: expected a bool, got {self.fix_eps!r}")
        object.__setattr__(self, "seed", check_seed("--seed", self.seed))

    @property
    def rollout(self) -> SamplerOptions:
        """How the teacher samples each completion."""
        return SamplerOptions(fix_eps=self.fix_eps)


# Bytes per sample held before the first shard: the training rows (one permutation per pass over the
# blocks, then their concatenation, int64 each), and per shard an entry of the list still to write
ROW_BYTES, SHARD_BYTES = 16, 64


def check_costs(settings: CouplingSettings, host: int, device: int) -> None:
    """Refuse, before any work and naming the largest value that fits: an --n whose training rows and
    shard list exceed `host` bytes, a --steps whose sampler plan of one batch exceeds `device` bytes."""
    check_cost("--n", settings.n, lambda n: ROW_BYTES * n + SHARD_BYTES * -(-n // settings.shard_size), host,
               "the training rows of N samples")
    check_steps_memory("--steps", settings.steps, min(settings.batch_size, settings.n), device)


@torch.no_grad()
def generate(teacher: str | Path, out: str | Path, settings: CouplingSettings, *,
             runtime: D.Runtime | None = None, progress: bool = True) -> Path:
    """Write the coupling of `settings.n` samples of `teacher` into `out` (see the module docstring); returns out.
    Refused before the teacher is loaded: settings whose costs do not fit (check_costs); before anything
    is written: an `out` holding a coupling of other settings, or one another process is writing."""
    if not isinstance(settings, CouplingSettings):
        raise ValueError(f"settings: expected a CouplingSettings, got {type(settings).__name__}")
    rt = runtime or D.init_runtime()
    out = check_writable("--out", out, folder=True)
    check_costs(settings, device_memory("cpu"), device_memory(rt.device))
    old = read_meta(out, "--out") if (out / "meta.json").is_file() else None  # before the teacher and data
    teacher = resolve_checkpoint(teacher, "--teacher")
    model, state = load_model(teacher, settings.weights, rt.device)
    cfg, data = model.config, state.config.data
    blocks = open_blocks(data, "train", progress=rt.main and progress)
    meta = {"format": FORMAT, "teacher": str(Path(teacher).resolve()), "teacher_step": state.step,
            "weights": settings.weights, "n": settings.n, "steps": settings.steps, "fix_eps": settings.fix_eps,
            "seed": settings.seed, "shard_size": settings.shard_size, "t_min": settings.t_min, "length": blocks.length,
            "num_classes": cfg.vocab_size, "mask_id": cfg.mask_id, "schedule": cfg.schedule,
            "labels": cfg.labels, "tokenizer": state.tokenizer, "dataset": data.dataset,
            "num_blocks": len(blocks)}
    _check_meta(out, old, meta)
    # the main process is the folder's one writer (a second run into it is refused before it writes)
    with durable.writer(out, "--out") if rt.main else contextlib.nullcontext():
        if rt.main:  # atomically: the other ranks may be reading it (read_meta) right now
            durable.write_text(out / "meta.json", json.dumps(meta, indent=1))
        D.barrier()
        try:
            _write_shards(model, blocks, out, settings, rt, progress)
        except OSError as err:  # a full disk: what survives (imdm_lab.dispatch prints it on the line)
            err.add_note(f"the complete shards in {out} stay; the same command finishes the rest")
            raise
        D.barrier()
    return out


def _write_shards(model, blocks, out: Path, settings: CouplingSettings, rt: D.Runtime, progress: bool) -> None:
    """The shards s of this rank (s % world == rank) that `out` does not hold yet, in order."""
    from tqdm.auto import tqdm

    cfg = model.config
    n, seed, shard_size, batch_size = settings.n, settings.seed, settings.shard_size, settings.batch_size
    rows = training_rows(len(blocks), n, seed)
    num_shards = -(-n // shard_size)
    todo = [s for s in range(rt.rank, num_shards, rt.world) if not (out / f"shard-{s:06d}").is_dir()]
    dtype = token_dtype(cfg.vocab_size)
    # counts this process's samples (not shards: one shard of teacher rollouts can take hours)
    bar = tqdm(total=sum(min(shard_size, n - s * shard_size) for s in todo), desc="coupling samples",
               unit="sample", disable=not (rt.main and progress))
    try:
        for s in todo:
            index = np.arange(s * shard_size, min((s + 1) * shard_size, n), dtype=np.int64)
            arrays = {k: [] for k in ARRAYS}
            gen = torch.Generator(rt.device).manual_seed(derive_seed(seed, "redi-draw", s))
            for lo in range(0, len(index), batch_size):
                idx = index[lo:lo + batch_size]
                seeds = torch.from_numpy(sample_seeds(seed, idx))
                x0 = blocks.get_batch(rows[idx]).to(rt.device)
                # masked under the teacher's own schedule (the official code masks with probability t)
                pairs = perturbed_coupling(model, x0, steps=settings.steps, mask_schedule=cfg.schedule,
                                           t_min=settings.t_min, seeds=seeds.to(rt.device), hashed=True, generator=gen,
                                           rollout=settings.rollout)
                for key, value in (("x_t", pairs.x_t), ("x_0", pairs.x_0), ("t", pairs.t), ("seed", seeds),
                                   ("index", torch.from_numpy(idx))):
                    arrays[key].append(value.cpu().numpy())
                bar.update(len(idx))
            _write_shard(out, s, {k: np.concatenate(v) for k, v in arrays.items()}, dtype)
    finally:  # the bar's line ends before any message that follows it
        bar.close()


def _write_shard(out: Path, s: int, arrays: dict, token_dtype: np.dtype) -> None:
    """Write the arrays of shard s as one durable folder (imdm_lab.durable.folder: staged as
    `.shard-NNNNNN.tmp-PID`, whose leftovers of a killed writer of the same shard go first)."""
    with durable.folder(out / f"shard-{s:06d}") as staged:
        for key, value in arrays.items():
            if key in ("x_t", "x_0"):
                value = value.astype(token_dtype)
            with open(staged / f"{key}.npy", "wb") as f:
                np.save(f, value)


# field -> (what its dtype must be, the test of it, number of dimensions); t is stored as float64, as drawn
FIELDS = {"x_t": ("integer", lambda d: d.kind in "iu", 2), "x_0": ("integer", lambda d: d.kind in "iu", 2),
          "t": ("float64", lambda d: d == np.float64, 1), "seed": ("signed integer", lambda d: d.kind == "i", 1),
          "index": ("integer", lambda d: d.kind in "iu", 1)}


def _load_field(shard: Path, key: str, rows: int, length: int) -> np.ndarray:
    """One array of a shard, refused unless it is a plain .npy (no pickles) of the field's kind and shape;
    the header is checked before any data is read (mapped, so a header claiming a huge shape costs nothing)."""
    path = shard / f"{key}.npy"
    if not path.is_file():
        raise ValueError(f"coupling: {shard.name} lacks {key}.npy; rerun `python -m scale coupling` after "
                         f"removing {shard}")
    try:
        value = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # a truncated file cannot be mapped
        raise ValueError(f"coupling: {shard.name}/{key}.npy is not a plain .npy array ({err})") from None
    what, test, ndim = FIELDS[key]
    shape = (rows, length)[:ndim]
    if not test(value.dtype) or value.shape != shape:
        raise ValueError(f"coupling: {shard.name}/{key}.npy: expected {what} values of shape {shape}, got "
                         f"{value.dtype} of shape {value.shape}")
    return np.array(value)


def _check_shard(shard: Path, a: dict, meta: dict) -> None:
    """The values of one shard: times in (0, 1], tokens in the vocabulary, no mask in x_0, the kept tokens
    unchanged."""
    vocab, mask_id = meta["num_classes"], meta["mask_id"]
    if not np.all((a["t"] > 0) & (a["t"] <= 1)):  # NaN fails both
        bad = a["t"][~((a["t"] > 0) & (a["t"] <= 1))][0]
        raise ValueError(f"coupling: {shard.name}/t.npy: expected times in (0, 1], got {bad!r}")
    if a["x_0"].size and not (0 <= a["x_0"].min() and a["x_0"].max() < vocab):
        raise ValueError(f"coupling: {shard.name}/x_0.npy: expected token ids in [0, {vocab}), got "
                         f"[{a['x_0'].min()}, {a['x_0'].max()}]")
    if (a["x_0"] == mask_id).any():  # a completion reveals every position
        raise ValueError(f"coupling: {shard.name}/x_0.npy: expected no mask id {mask_id} in a completion, got "
                         f"{int((a['x_0'] == mask_id).sum())}")
    masked = a["x_t"] == mask_id
    bad = ~masked & ((a["x_t"] < 0) | (a["x_t"] >= vocab) | (a["x_t"] != a["x_0"]))
    if bad.any():
        raise ValueError(f"coupling: {shard.name}/x_t.npy: expected the mask id {mask_id} or the token of x_0 "
                         f"at every position, got {a['x_t'][bad][0]} at a position where x_0 has {a['x_0'][bad][0]}")


class Coupling:
    """A finished coupling folder in memory: x_t, x_0 Long, t Float64, seed Long, each [n, ...] in
    sample-index order; `meta` holds the settings it was made with (read_meta). Every shard is validated
    on open (files, dtypes, shapes, values), and an error names the shard and the field; a shard beyond
    those of meta.json's n is refused, so that n cannot drop samples silently."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not (folder / "meta.json").is_file():
            raise ValueError(f"coupling: {str(folder)!r} holds no meta.json; expected a folder written by "
                             f"`python -m scale coupling`")
        self.meta = read_meta(folder)
        n, size, length = self.meta["n"], self.meta["shard_size"], self.meta["length"]
        shards = [folder / f"shard-{s:06d}" for s in range(-(-n // size))]
        missing = [p.name for p in shards if not p.is_dir()]
        if missing:
            raise ValueError(f"coupling: {folder} is incomplete ({len(missing)} of {len(shards)} shards "
                             f"missing, e.g. {missing[0]}); rerun the same coupling command to finish it")
        extra = sorted(p.name for p in folder.iterdir() if SHARD.fullmatch(p.name))[len(shards):]
        if extra:
            raise ValueError(f"coupling: {folder / 'meta.json'}: n: expected the samples of every shard, got {n} "
                             f"({len(shards)} shards of {size}) while the folder also holds {extra[0]}")
        loaded = []
        for s, shard in enumerate(shards):
            rows = min(size, n - s * size)
            arrays = {k: _load_field(shard, k, rows, length) for k in ARRAYS}
            _check_shard(shard, arrays, self.meta)
            loaded.append(arrays)
        parts = {k: np.concatenate([a[k] for a in loaded]) for k in ARRAYS}
        if not np.array_equal(parts["index"], np.arange(n)):
            raise ValueError(f"coupling: {folder} does not hold samples 0..{n - 1} exactly once")
        self.x_t = torch.from_numpy(parts["x_t"].astype(np.int64))
        self.x_0 = torch.from_numpy(parts["x_0"].astype(np.int64))
        self.t = torch.from_numpy(parts["t"].astype(np.float64))
        self.seed = torch.from_numpy(parts["seed"].astype(np.int64))

    def __len__(self) -> int:
        return len(self.seed)

    @property
    def length(self) -> int:
        return self.x_t.shape[1]

