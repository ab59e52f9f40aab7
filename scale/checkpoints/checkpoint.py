"""Checkpoints: complete folders, each committed atomically as a whole.

A checkpoint folder holds

    model.safetensors   weights (names of scale.model.dit.DiT)
    ema.safetensors     exponential moving average of the weights (absent in imported folders)
    optimizer.pt        AdamW state, tensors and numbers only (read back with weights_only=True)
    state.json          step, config (its [model] section with the vocabulary), RNG states, data position

A run folder (`train` / `distill --out`) keeps its checkpoints as

    checkpoints/step-00000020/   complete checkpoint folders, the newest KEEP committed ones
    checkpoints/latest           one line: the name of the newest committed folder
    .writer.lock                 flock of the process writing the run (released when it dies)

Commit (RunFolder.commit): the files are written into a staging folder `checkpoints/.step-N.tmp-PID`,
each fsynced, the folder fsynced and renamed to `step-N`; then `latest` is written through
`.latest.tmp-PID` and os.replace'd into place (both with imdm_lab.durable). The pointer is the
commit: a folder it does not name is invisible, so a process killed at any instant leaves the previous
checkpoint or the new one, never a mixture. Older step folders are removed only after the pointer has
moved. The writer of a run takes its lock, then deletes what a dead writer left behind (staging
folders and files `.NAME.tmp-PID`, a step folder renamed but never committed).

A single checkpoint folder (`import-mdlm --out`, distillation rounds) is staged the same way as the
sibling `.NAME.tmp-PID` and renamed into place: it exists complete or not at all.

Readers (`checkpoint_folder`, `read_state`, `load_model`) accept either kind of folder, a run folder
meaning its latest committed checkpoint. Weights that are not finite are refused on load. Nothing here
unpickles code.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from imdm_lab import durable
from scale.checkpoints.state import FORMAT, CheckpointState
from scale.model.dit import DiT

KEEP = 2  # committed step folders kept in a run folder
STEP = re.compile(r"step-\d{8}")


# ---- single checkpoint folders ---------------------------------------------------------------------
def write_checkpoint_files(folder: Path, model_state: dict, ema_state: dict | None, optimizer_state: dict | None,
                           state: dict) -> None:
    """The files of one checkpoint in `folder` (a staging folder of imdm_lab.durable.folder, which
    fsyncs them and commits the folder)."""
    step = str(state["step"])
    for name, tensors in (("model.safetensors", model_state), ("ema.safetensors", ema_state)):
        if tensors is not None:
            data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                        metadata={"step": step, "format": FORMAT})
            (folder / name).write_bytes(data)  # written here: a full disk is an OSError naming the file
    if optimizer_state is not None:
        _torch_save({"step": state["step"], "optimizer": optimizer_state}, folder / "optimizer.pt")
    (folder / "state.json").write_text(json.dumps({"format": FORMAT, **state}, indent=1))


class _KeptErrors:
    """A binary file whose write errors are kept: torch.save reports a failed write of its file object
    as a RuntimeError ('unexpected pos') that no longer says why (a full disk)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        return self.f.flush()


def _torch_save(obj, path: Path) -> None:
    """torch.save(obj) to `path`, a failed write raised as the OSError it was (naming the file)."""
    with open(path, "wb") as f:
        kept = _KeptErrors(f)
        try:
            torch.save(obj, kept)
        except (OSError, RuntimeError):
            if kept.error is None:
                raise
            durable.name_path(kept.error, path)
            raise kept.error from None


def _claim(final: Path) -> None:
    """`final` may be created: refuse a non-empty one."""
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise ValueError(f"--out: {final} already exists; expected a new or empty folder")


def save_checkpoint(folder: str | Path, model_state: dict, ema_state: dict | None, optimizer_state: dict | None,
                    state: dict) -> Path:
    """Write a new checkpoint folder atomically (state must hold 'step'); returns it."""
    final = Path(folder)
    _claim(final)
    with durable.folder(final) as staged:
        write_checkpoint_files(staged, model_state, ema_state, optimizer_state, state)
    return final


def copy_checkpoint(source: Path, final: Path, names=("model.safetensors", "ema.safetensors", "state.json")) -> Path:
    """A new checkpoint folder `final` holding copies of `source`'s files `names`, atomically."""
    _claim(final)
    with durable.folder(final) as staged:
        for name in names:
            shutil.copyfile(source / name, staged / name)
    return final


# ---- run folders -----------------------------------------------------------------------------------
class RunFolder:
    """The committed checkpoints of a run folder, and (for its one writer) the lock and the commits."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.dir = self.root / "checkpoints"
        self._lock = None

    def latest(self) -> Path | None:
        """The newest committed checkpoint folder, None when there is none."""
        pointer = self.dir / "latest"
        if not pointer.is_file():
            return None
        name = pointer.read_text().strip()
        folder = self.dir / name
        if not STEP.fullmatch(name) or not (folder / "state.json").is_file():
            raise ValueError(f"ckpt: {pointer} names {name!r}, which is not a checkpoint folder in {self.dir}")
        return folder

    def acquire(self) -> None:
        """Become the run's writer (idempotent): take the lock, then delete what a dead writer left in
        the run folder, checkpoints/ and rounds/."""
        if self._lock is not None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = durable.take_lock(self.root, "--out")
        latest = self.latest()
        for place in (self.root, self.dir, self.root / "rounds"):
            for path in list(place.iterdir()) if place.is_dir() else []:
                uncommitted = (place == self.dir and STEP.fullmatch(path.name) is not None
                               and (latest is None or path.name > latest.name))
                if durable.writer_of(path) is not None or uncommitted:
                    durable.remove(path)
        self._prune()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def commit(self, model_state: dict, ema_state: dict | None, optimizer_state: dict | None,
               state: dict) -> Path:
        """Write step state['step'] as a complete folder, point `latest` at it, drop old ones."""
        if self._lock is None:
            raise ValueError(f"ckpt: commit to {self.root} without holding its lock")
        final = self.dir / f"step-{state['step']:08d}"
        latest = self.latest()
        if latest == final:
            return final  # a step is committed once
        if final.exists():  # renamed into place by a writer that died before moving the pointer
            durable.remove(final)
        with durable.folder(final) as staged:
            write_checkpoint_files(staged, model_state, ema_state, optimizer_state, state)
        durable.write_text(self.dir / "latest", final.name + "\n")
        self._prune()
        return final

    def _prune(self) -> None:
        latest = self.latest()
        if latest is None:
            return
        committed = sorted(p for p in self.dir.iterdir() if STEP.fullmatch(p.name) and p.name <= latest.name)
        for path in committed[:-KEEP]:
            durable.remove(path)


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint folder a path means: a run folder's latest commit, or the folder itself when it
    holds a state.json; None when it holds neither."""
    path = Path(path)
    latest = RunFolder(path).latest()
    if latest is not None:
        return latest
    return path if (path / "state.json").is_file() else None


def checkpoint_folder(path: str | Path) -> Path:
    """find_checkpoint, or ValueError('ckpt: ...') when there is no checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"ckpt: {str(path)!r} is not a checkpoint folder (no such directory)")
    folder = find_checkpoint(path)
    if folder is None:
        raise ValueError(f"ckpt: {str(path)!r} holds no checkpoint (neither checkpoints/latest nor state.json); "
                         f"expected a folder written by `python -m scale train` or `import-mdlm`")
    return folder


def read_state(path: str | Path) -> CheckpointState:
    """state.json of a checkpoint (or of a run folder's latest), every entry checked
    (scale.checkpoints.state); ValueError naming the file and the entry otherwise."""
    path = checkpoint_folder(path) / "state.json"
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"ckpt: {path} is corrupted (not JSON: {err})") from None
    return CheckpointState.from_dict(raw, path)


def _check_finite(tensors: dict, path: Path) -> None:
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"ckpt: {path}: tensor {name!r} holds non-finite values (NaN or inf); refusing it")


def read_tensors(path: Path, step: int | None = None) -> dict[str, torch.Tensor]:
    """A safetensors file as a dict; corruption or a step other than `step` is a ValueError('ckpt: ...')."""
    if not path.is_file():
        raise ValueError(f"ckpt: missing file {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"ckpt: {path} is corrupted (not a readable safetensors file: {err})") from None
    if step is not None and meta.get("step") != str(step):
        raise ValueError(f"ckpt: {path} belongs to step {meta.get('step')} but state.json says {step}; "
                         f"the folder mixes files of different checkpoints")
    _check_finite(tensors, path)
    return tensors


def read_optimizer(folder: Path, step: int) -> dict:
    path = folder / "optimizer.pt"
    if not path.is_file():
        raise ValueError(f"ckpt: missing file {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip / pickle
        raise ValueError(f"ckpt: {path} is corrupted ({type(err).__name__}: {err})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("optimizer"), dict):
        raise ValueError(f"ckpt: {path} is corrupted (not an optimizer state)")
    if blob.get("step") != step:
        raise ValueError(f"ckpt: {path} belongs to step {blob.get('step')} but state.json says {step}")
    for i, entry in blob["optimizer"].get("state", {}).items():
        _check_finite({f"state.{i}.{k}": v for k, v in entry.items()}, path)
    return blob["optimizer"]


def weight_mismatches(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                      may_miss: str | None = None) -> str:
    """Missing / unexpected keys and shape mismatches of `tensors` against the state dict `own`, as one
    readable line ('' when they fit); keys starting with `may_miss` may be absent."""
    missing = sorted(k for k in set(own) - set(tensors) if not (may_miss and k.startswith(may_miss)))
    unexpected = sorted(set(tensors) - set(own))
    shapes = sorted(f"{k} {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(tensors) if tensors[k].shape != own[k].shape)
    return "; ".join(f"{label}: {', '.join(items)}" for label, items in
                     (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
                     if items)


def check_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Every missing / unexpected key and every shape mismatch against `model`, in one ValueError."""
    problems = weight_mismatches(model.state_dict(), tensors)
    if problems:
        raise ValueError(f"{source}: weights do not fit this model ({problems})")


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    check_weights(model, tensors, source)
    model.load_state_dict(tensors)


def weights_path(folder: str | Path, weights: str = "ema") -> Path:
    """The file of a checkpoint's (or a run folder's latest) EMA (default) or raw weights; the raw ones
    when there is no EMA."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights: expected 'ema' or 'model', got {weights!r}")
    path = checkpoint_folder(folder) / f"{weights}.safetensors"
    if weights == "ema" and not path.is_file():
        path = path.with_name("model.safetensors")  # imported weights come without an EMA
    return path


def load_model(folder: str | Path, weights: str = "ema", device="cpu") -> tuple[DiT, CheckpointState]:
    """A DiT in eval mode with the checkpoint's EMA (default) or raw weights, and its state.json;
    `folder` is a checkpoint folder or a run folder (its latest commit)."""
    folder = checkpoint_folder(folder)
    path = weights_path(folder, weights)
    state = read_state(folder)
    model = DiT(state.config.model)
    load_weights(model, read_tensors(path, state.step), f"ckpt: {path}")
    return model.to(device).eval(), state
