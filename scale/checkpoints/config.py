"""Typed run configuration: TOML files under scale/configs/ plus `--set section.key=value` overrides.

A config has five sections, [model] (scale.model.dit.DiTConfig, which the DiT takes as it is), [data],
[train], [eval] and [distill] (read only by `python -m scale distill`); every key is a typed dataclass
field, and an unknown key or a value of the wrong type is a ValueError that lists what is accepted.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imdm_lab.checks import SEED_LIMIT
from imdm_lab.distill import READERS
from imdm_lab.losses import DIVERGENCES
from imdm_lab.optimizer import OPTIMIZER_IMPLS
from scale.model.dit import DiTConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class DataSection:
    dataset: str = "wiki"  # lm1b / openwebtext / wiki (offline Wikipedia) / HF dataset id / local path
    tokenizer: str = "bert-base-uncased"
    length: int = 128
    hf_config: str = ""  # configuration name of a Hugging Face dataset, if it needs one
    text_column: str = "text"
    revision: str = ""  # hub dataset revision to pin ("": as published, else its parquet export)


@dataclass
class TrainSection:
    seed: int = 0
    max_steps: int = 1000
    global_batch: int = 512
    micro_batch: int = 0  # at most this many sequences per forward on one process; 0: no cap
    lr: float = 3e-4
    warmup: int = 2500
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    ema: float = 0.9999
    t_min: float = 1e-3
    antithetic: bool = True
    checkpoint_every: int = 1000
    log_every: int = 10
    strategy: str = "ddp"  # ddp / fsdp (multi-process runs)
    # chunked: the head's NLL at masked rows only, in row chunks (selected with a host sync); chunked-all:
    # on every row, visible ones zeroed (no sync, ~2x the head's FLOPs); full: [B, L, C] logits
    loss: str = "chunked"
    compile: bool = False  # torch.compile the model for the training forward / backward
    optimizer_impl: str = "auto"  # AdamW kernel: auto (fused on CUDA, foreach elsewhere) / fused / foreach


@dataclass
class EvalSection:
    every: int = 1000  # 0: never
    val_batches: int = 4
    batch_size: int = 16
    sample_steps: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    samples: int = 2


@dataclass
class DistillSection:
    """Few-step distillation; the defaults are the paper's IM-SDTT settings (Ugness/IMDM
    configs/algo/im-sdtt.yaml and scripts/owt/train_owt_imsdtt.sh)."""
    method: str = "imdm-sdtt"  # a name of scale.training.distill.METHODS
    teacher_steps: int = 2  # k: teacher steps matched by one student step; dt grows k-fold per round
    start_steps: int = 1024  # N_0: the teacher's step count in round 0
    target_steps: int = 8  # the student's step count after the last round
    grow_every: int = 10_000  # optimizer steps per round
    divergence: str = "kl-bwd"  # a name of imdm_lab.losses.DIVERGENCES
    coupling: str = ""  # folder written by `python -m scale coupling` (redi / imdm-redi)
    ignore_seed: bool = False  # imdm-redi: fresh eps instead of eps(seed)
    reader: str = "kr"  # imdm-eps-coupling: how the teacher reads its randomness from eps


@dataclass
class Config:
    model: DiTConfig = field(default_factory=DiTConfig)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)
    distill: DistillSection = field(default_factory=DistillSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def valid_keys() -> list[str]:
    return [f"{name}.{f.name}" for name, cls in _section_classes().items() for f in dataclasses.fields(cls)]


def _section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


# keys that belong to another section now: the old name -> the new one
MOVED = {"train.schedule": "model.schedule", "train.bf16": "model.bf16"}


def _coerce(key: str, value, annotation):
    """Check a TOML value against a field's type; ints are accepted where floats are expected, and
    None (JSON null, as state.json records an unset value) where the type allows it."""
    origin = typing.get_origin(annotation)
    if origin is types.UnionType:
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return None if value is None else _coerce(key, value, inner)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list of {item.__name__}, got {value!r}")
        return [_coerce(key, v, item) for v in value]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, annotation):
        raise ValueError(f"{key}: expected a {annotation.__name__}, got {value!r}")
    return value


def config_from_dict(raw: dict) -> Config:
    """Build a Config from nested dicts {section: {key: value}}; unknown sections/keys are errors."""
    classes = _section_classes()
    sections = {}
    for name, values in raw.items():
        if name not in classes:
            raise ValueError(f"config: unknown section {name!r}; expected sections {sorted(classes)}")
        if not isinstance(values, dict):
            raise ValueError(f"{name}: expected a section of keys ([{name}] in TOML), got {values!r}")
        hints = typing.get_type_hints(classes[name])
        unknown = sorted(set(values) - set(hints))
        moved = [k for k in unknown if f"{name}.{k}" in MOVED]
        if moved:  # the first one, named where it belongs now
            key = f"{name}.{moved[0]}"
            raise ValueError(f"{key}: expected it as {MOVED[key]} (it belongs to the model), got {key} = "
                             f"{values[moved[0]]!r}")
        if unknown:
            raise ValueError(f"config: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; "
                             f"valid keys: {', '.join(valid_keys())}")
        sections[name] = classes[name](**{k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in values.items()})
    return check_values(Config(**sections))


def _finite(low: float, high: float = math.inf, closed: bool = True) -> Callable[[float], bool]:
    return lambda v: math.isfinite(v) and (low <= v if closed else low < v) and v < high


def _distinct_steps(v: list[int]) -> bool:
    return all(k >= 1 for k in v) and len(set(v)) == len(v)


# key -> (test, what is expected): the ranges a value must lie in, checked when the config is built, so that a
# bad value is refused before any data is read or any model is built (types are checked by _coerce)
VALUE_RULES: dict[str, tuple[Callable, str]] = {
    "data.length": (lambda v: v >= 2, "an integer >= 2"),
    "train.seed": (lambda v: 0 <= v < SEED_LIMIT, "an integer in [0, 2^31)"),
    "train.max_steps": (lambda v: v >= 1, "an integer >= 1"),
    "train.lr": (_finite(0.0, closed=False), "a finite number > 0"),
    "train.warmup": (lambda v: v >= 0, "an integer >= 0"),
    "train.weight_decay": (_finite(0.0), "a finite number >= 0"),
    "train.betas": (lambda v: len(v) == 2 and all(map(_finite(0.0, 1.0), v)), "two numbers in [0, 1)"),
    "train.adam_eps": (_finite(0.0, closed=False), "a finite number > 0"),
    "train.grad_clip": (_finite(0.0, closed=False), "a finite number > 0"),
    "train.ema": (_finite(0.0, 1.0), "a number in [0, 1)"),
    "train.t_min": (_finite(0.0, 1.0), "a number in [0, 1)"),
    "train.checkpoint_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.log_every": (lambda v: v >= 1, "an integer >= 1"),
    "train.optimizer_impl": (lambda v: v in OPTIMIZER_IMPLS, f"one of {sorted(OPTIMIZER_IMPLS)}"),
    "eval.every": (lambda v: v >= 0, "an integer >= 0 (0: never)"),
    "eval.val_batches": (lambda v: v >= 1, "an integer >= 1"),
    "eval.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "eval.samples": (lambda v: v >= 1, "an integer >= 1"),
    "eval.sample_steps": (_distinct_steps, "a list of distinct integers >= 1"),
    "distill.teacher_steps": (lambda v: v >= 2, "an integer >= 2"),
    "distill.start_steps": (lambda v: v >= 1, "an integer >= 1"),
    "distill.target_steps": (lambda v: v >= 1, "an integer >= 1"),
    "distill.grow_every": (lambda v: v >= 1, "an integer >= 1"),
    "distill.divergence": (lambda v: v in DIVERGENCES, f"one of {sorted(DIVERGENCES)}"),
    "distill.reader": (lambda v: v in READERS, f"one of {sorted(READERS)}"),
}


def check_values(config: Config) -> Config:
    """config, each value of VALUE_RULES checked: ValueError("section.key: expected ..., got ...")."""
    for key, (test, expected) in VALUE_RULES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not test(value):
            raise ValueError(f"{key}: expected {expected}, got {value!r}")
    return config


def parse_override(item: str) -> tuple[str, str, object]:
    """'section.key=value' -> (section, key, value); the value is read as TOML (1e-4, true, [1, 2]),
    or kept as a bare string when it is not TOML (lm1b, bert-base-uncased)."""
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ValueError(f"--set: expected section.key=value, got {item!r}")
    key, text = item.split("=", 1)
    section, name = key.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return section, name, value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a TOML config (a path, or a name of scale/configs/ without .toml) and apply overrides."""
    raw: dict = {}
    if path is not None:
        raw = read_toml(resolve_config_path(path))
    for item in overrides:
        set_value(raw, *parse_override(item))
    return config_from_dict(raw)


def set_value(raw: dict, section: str, name: str, value) -> None:
    """raw[section][name] = value in nested config dicts, creating the section when absent."""
    if not isinstance(raw.setdefault(section, {}), dict):
        raise ValueError(f"--set: {section!r} is not a section")
    raw[section][name] = value


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    named = CONFIG_DIR / f"{path}.toml"
    if named.is_file():
        return named
    names = sorted(f.stem for f in CONFIG_DIR.glob("*.toml"))
    raise ValueError(f"--config: no file {str(path)!r}; expected a TOML path or one of {names}")


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--config: {path} is not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"--config: {path} is not UTF-8 text, as TOML must be ({err.reason} at byte "
                         f"{err.start})") from None
