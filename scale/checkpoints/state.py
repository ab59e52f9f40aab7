"""A checkpoint's state.json, typed: what a checkpoint says about itself besides its weights.

    format         "imdm-lab-dit/1"
    step           optimizer steps taken (0 for an imported model)
    config         the run's config (scale.checkpoints.config.Config; its [model] section builds the DiT)
    tokenizer      the tokenizer of the model's vocabulary (a name or a folder)
    world_size     processes of the run that wrote it                 } written by the trainer,
    ema_updates    updates the EMA has seen                           } read back when a run
    rng            global generator states, base64                    } resumes (absent in imported
    data           the data order's position (scale.data.blocks.BatchStream.state_dict)   or Hub folders)
    imported_from  the file or folder an imported model came from

`CheckpointState.from_dict` checks every entry when a checkpoint is read (scale.data.json_fields), so a
bad value is refused there, naming the file and the entry, not later as a KeyError, a wrong model or a
generator state torch cannot take back on resume.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path

import torch

from scale.checkpoints.config import Config, config_from_dict
from scale.data.json_fields import Field, check_fields, integer, is_text

FORMAT = "imdm-lab-dit/1"
POSITION_KEYS = ("epoch", "offset", "seed", "global_batch", "num_blocks")


def _state_bytes(text) -> int:
    """The length of a base64 generator state, -1 when it is not base64 text."""
    try:
        return len(base64.b64decode(text, validate=True)) if isinstance(text, str) else -1
    except (binascii.Error, ValueError):
        return -1


def _rng(v) -> bool:
    """The states the trainer records: the CPU generator's (as long as this torch's, which
    torch.set_rng_state checks) and one non-empty state per CUDA device."""
    cuda = v.get("cuda", []) if isinstance(v, dict) else None
    return (isinstance(v, dict) and set(v) <= {"torch", "cuda"}
            and _state_bytes(v.get("torch")) == torch.get_rng_state().numel()
            and isinstance(cuda, list) and all(_state_bytes(s) > 0 for s in cuda))


def _position(v) -> bool:
    return isinstance(v, dict) and set(v) == set(POSITION_KEYS) and all(integer(0)(v[k]) for k in POSITION_KEYS)


# state.json key -> (attribute, its Field); `config` is read by config_from_dict
ENTRIES = {
    "step": ("step", Field(integer(0), "an integer >= 0")),
    "tokenizer": ("tokenizer", Field(is_text, "a tokenizer name or folder")),
    "world_size": ("world_size", Field(integer(1), "an integer >= 1", required=False)),
    "ema_updates": ("ema_updates", Field(integer(0), "an integer >= 0", required=False)),
    "rng": ("rng", Field(_rng, f"generator states {{'torch': base64 of {torch.get_rng_state().numel()} bytes, "
                               f"'cuda': [base64, ...]}}", required=False)),
    "data": ("position", Field(_position, f"a data position with the integers {', '.join(POSITION_KEYS)}",
                               required=False)),
    "imported_from": ("imported_from", Field(is_text, "a path", required=False)),
}


@dataclass(frozen=True)
class CheckpointState:
    """state.json of a checkpoint (the module docstring); the optional entries are None where absent."""
    step: int
    config: Config
    tokenizer: str
    world_size: int | None = None
    ema_updates: int | None = None
    rng: dict | None = None
    position: dict | None = None  # state.json's "data"
    imported_from: str | None = None

    @classmethod
    def from_dict(cls, raw, source: str | Path) -> CheckpointState:
        """The state a parsed state.json (or a Hub folder's config.json) `raw` holds; ValueError('ckpt: SOURCE:
        ENTRY: expected ..., got ...') for a missing, unknown or bad entry."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"ckpt: {source} is not an {FORMAT} checkpoint")
        unknown = sorted(set(raw) - set(ENTRIES) - {"format", "config"})
        if unknown:
            raise ValueError(f"ckpt: {source}: unknown entries {unknown}; expected "
                             f"{['format', 'config', *ENTRIES]}")
        check_fields(raw, {key: field for key, (_, field) in ENTRIES.items()}, f"ckpt: {source}")
        values = {attribute: raw[key] for key, (attribute, _) in ENTRIES.items() if key in raw}
        if not isinstance(raw.get("config"), dict):
            raise ValueError(f"ckpt: {source}: config: expected the run's config sections, got "
                             f"{raw.get('config')!r}")
        try:
            config = config_from_dict(raw["config"])
        except ValueError as err:
            raise ValueError(f"ckpt: {source}: config: {err}") from None
        return cls(config=config, **values)

    def to_dict(self) -> dict:
        """The entries of state.json (without `format`, which the writer adds); absent ones left out."""
        out = {"step": self.step, "config": self.config.to_dict(), "tokenizer": self.tokenizer}
        for key, (attribute, *_) in ENTRIES.items():
            if key not in out and getattr(self, attribute) is not None:
                out[key] = getattr(self, attribute)
        return out
