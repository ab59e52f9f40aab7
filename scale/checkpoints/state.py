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

`CheckpointState.from_dict` checks every entry when a checkpoint is read, so a bad value is refused
there, naming the file and the entry, not later as a KeyError or a wrong model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scale.checkpoints.config import Config, config_from_dict

FORMAT = "imdm-lab-dit/1"
POSITION_KEYS = ("epoch", "offset", "seed", "global_batch", "num_blocks")


def _int(low: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _text(v) -> bool:
    return isinstance(v, str) and v != ""


def _rng(v) -> bool:
    cuda = v.get("cuda", []) if isinstance(v, dict) else None
    return (isinstance(v, dict) and set(v) <= {"torch", "cuda"} and isinstance(v.get("torch"), str)
            and isinstance(cuda, list) and all(isinstance(s, str) for s in cuda))


def _position(v) -> bool:
    return isinstance(v, dict) and set(v) == set(POSITION_KEYS) and all(_int(0)(v[k]) for k in POSITION_KEYS)


# state.json key -> (attribute, required, test, what is expected); `config` is read by config_from_dict
ENTRIES = {
    "step": ("step", True, _int(0), "an integer >= 0"),
    "tokenizer": ("tokenizer", True, _text, "a tokenizer name or folder"),
    "world_size": ("world_size", False, _int(1), "an integer >= 1"),
    "ema_updates": ("ema_updates", False, _int(0), "an integer >= 0"),
    "rng": ("rng", False, _rng, "generator states {'torch': text, 'cuda': [text, ...]}"),
    "data": ("position", False, _position, f"a data position with the integers {', '.join(POSITION_KEYS)}"),
    "imported_from": ("imported_from", False, _text, "a path"),
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
        values = {}
        for key, (attribute, required, test, expected) in ENTRIES.items():
            if key not in raw:
                if required:
                    raise ValueError(f"ckpt: {source}: {key}: expected {expected}, but it is missing")
                continue
            if not test(raw[key]):
                raise ValueError(f"ckpt: {source}: {key}: expected {expected}, got {raw[key]!r}")
            values[attribute] = raw[key]
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
