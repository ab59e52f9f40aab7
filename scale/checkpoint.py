"""Checkpoints of a DiT run: one folder with

    model.safetensors   weights (names of scale.model.DiT)
    ema.safetensors     exponential moving average of the weights
    optimizer.pt        AdamW state, tensors and numbers only (read back with weights_only=True)
    state.json          step, config, vocabulary, RNG states, data position

Each file is written under a temporary name and renamed into place, state.json last; every file carries
the step it belongs to, so a folder whose files disagree (a kill inside the final renames) is reported
instead of being resumed silently. Nothing here unpickles code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from scale.config import Config, config_from_dict
from scale.model import DiT, DiTConfig

FORMAT = "imdm-lab-dit/1"


def _replace_atomically(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def save_checkpoint(folder: str | Path, model_state: dict, ema_state: dict | None, optimizer_state: dict | None,
                    state: dict) -> None:
    """Write the four files of a checkpoint into `folder` (created if needed). state must hold 'step'."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    step = str(state["step"])
    staged = []
    for name, tensors in (("model.safetensors", model_state), ("ema.safetensors", ema_state)):
        if tensors is None:
            continue
        tmp = folder / f".{name}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp,
                  metadata={"step": step, "format": FORMAT})
        staged.append((tmp, folder / name))
    if optimizer_state is not None:
        tmp = folder / ".optimizer.pt.tmp"
        torch.save({"step": state["step"], "optimizer": optimizer_state}, tmp)
        staged.append((tmp, folder / "optimizer.pt"))
    tmp = folder / ".state.json.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, **state}, indent=1))
    staged.append((tmp, folder / "state.json"))
    for tmp, final in staged:
        _replace_atomically(tmp, final)


def read_state(folder: str | Path) -> dict:
    """state.json of a checkpoint folder, checked for format; ValueError('ckpt: ...') otherwise."""
    folder = Path(folder)
    path = folder / "state.json"
    if not folder.is_dir():
        raise ValueError(f"ckpt: {str(folder)!r} is not a checkpoint folder (no such directory)")
    if not path.is_file():
        raise ValueError(f"ckpt: {str(folder)!r} holds no state.json; expected a folder written by "
                         f"`python -m scale train` or `import-mdlm`")
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"ckpt: {path} is corrupted (not JSON: {err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"ckpt: {path} is not an {FORMAT} checkpoint")
    return state


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
                         f"the run was killed while saving, start again from an earlier copy")
    return tensors


def read_optimizer(folder: Path, step: int) -> dict:
    path = folder / "optimizer.pt"
    if not path.is_file():
        raise ValueError(f"ckpt: missing file {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged zip / pickle
        raise ValueError(f"ckpt: {path} is corrupted ({type(err).__name__}: {err})") from None
    if blob.get("step") != step:
        raise ValueError(f"ckpt: {path} belongs to step {blob.get('step')} but state.json says {step}")
    return blob["optimizer"]


def dit_config(state: dict) -> DiTConfig:
    """The DiTConfig recorded in a checkpoint's state.json."""
    return make_dit_config(config_from_dict(state["config"]), state["vocab_size"], state["mask_id"])


def make_dit_config(config: Config, vocab_size: int, mask_id: int) -> DiTConfig:
    m = config.model
    return DiTConfig(vocab_size=vocab_size, mask_id=mask_id, size=m.size, hidden=m.hidden, blocks=m.blocks,
                     heads=m.heads, cond=m.cond,
                     dropout=None if m.dropout < 0 else m.dropout, noise=m.noise, noise_dim=m.noise_dim,
                     noise_scale=m.noise_scale, num_mask=m.num_mask, softcap=m.softcap, qk_norm=m.qk_norm,
                     time_conditioning=m.time_conditioning, schedule=config.train.schedule,
                     bf16=config.train.bf16)


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
    """The file of a checkpoint's EMA (default) or raw weights; the raw ones when there is no EMA."""
    if weights not in ("ema", "model"):
        raise ValueError(f"weights: expected 'ema' or 'model', got {weights!r}")
    path = Path(folder) / f"{weights}.safetensors"
    if weights == "ema" and not path.is_file():
        path = path.with_name("model.safetensors")  # imported weights come without an EMA
    return path


def load_model(folder: str | Path, weights: str = "ema", device="cpu") -> tuple[DiT, dict]:
    """A DiT in eval mode with the checkpoint's EMA (default) or raw weights, and its state.json."""
    path = weights_path(folder, weights)
    state = read_state(folder)
    model = DiT(dit_config(state))
    load_weights(model, read_tensors(path, state["step"]), f"ckpt: {path}")
    return model.to(device).eval(), state
