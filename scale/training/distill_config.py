"""A distillation run's config and sources: the config merge (the initial checkpoint's config < the
method's paper settings < a config file < overrides), the student's initial checkpoint and the
coupling folder of the ReDi methods."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from scale.checkpoints.config import Config, config_from_dict, parse_override, read_toml, resolve_config_path, set_value
from scale.checkpoints.hub import resolve_checkpoint
from scale.training.coupling import read_meta
from scale.training.distill import get_method


def build_config(base: Config, method_name: str, config_path: str | None, overrides: list[str],
                 coupling: str | None) -> Config:
    """The distillation config: base (the initial checkpoint's) < method defaults < config file <
    overrides (key by key)."""
    method = get_method(method_name)
    raw = base.to_dict()
    for key, value in method.defaults.items():
        set_value(raw, *key.split("."), value)
    if config_path:
        for section, values in read_toml(resolve_config_path(config_path)).items():
            if not isinstance(values, dict):
                raise ValueError(f"--config: {section!r} is not a section")
            for name, value in values.items():
                set_value(raw, section, name, value)
    for item in overrides:
        set_value(raw, *parse_override(item))
    set_value(raw, "distill", "method", method_name)
    if coupling:
        set_value(raw, "distill", "coupling", str(coupling))
    config = config_from_dict(raw)
    schedule = base.model.schedule
    if config.model.schedule != schedule:
        raise ValueError(f"model.schedule: expected the checkpoint's {schedule!r} (the student keeps its "
                         f"process), got {config.model.schedule!r}")
    # The method fixes whether the student reads eps: an MDLM checkpoint becomes an IMDM (rand
    # labels) for imdm-* methods, and an IMDM one an MDM for sdtt / redi.
    if method.imdm and config.model.labels == "none":
        config.model = dataclasses.replace(config.model, labels="rand")
    elif not method.imdm:
        config.model = dataclasses.replace(config.model, labels="none")
    return config


def check_overrides(config_path: str | None, overrides: list[str]) -> None:
    """The keys and values of --config and --set, each checked as build_config will take them, before the
    initial checkpoint is read: those of [model] are left to build_config, since whether they fit depends
    on the checkpoint's model (its size, heads, vocabulary)."""
    raw: dict = {}
    if config_path:
        for section, values in read_toml(resolve_config_path(config_path)).items():
            if not isinstance(values, dict):
                raise ValueError(f"--config: {section!r} is not a section")
            raw.setdefault(section, {}).update(values)
    for item in overrides:
        set_value(raw, *parse_override(item))
    raw.pop("model", None)
    config_from_dict(raw)


def coupling_folder(method_name: str, path: str) -> str:
    """`path`, refused unless it is a coupling folder (one holding meta.json)."""
    if not path:
        raise ValueError(f"--coupling: expected a coupling folder for --method {method_name}")
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        raise ValueError(f"--coupling: {path!r} holds no meta.json (expected a coupling folder)")
    return path


def check_sources(method_name: str, init: str | None, teacher: str | None, coupling: str | None) -> None:
    """Refuse a source option the method would ignore, before anything is read.

    A method's frozen teacher network (sdtt, imdm-sdtt, imdm-eps-coupling) is a copy of the student's
    initial weights: SDTT is self-distillation, the teacher of the first round is the model the student
    starts as, and each later round's teacher is the student of the round before (Ugness/IMDM algo.py,
    IMSDTT; scale.training.rounds). There is one checkpoint to name, so --teacher and --init together
    are refused rather than one of them being dropped in silence (a student started from another
    checkpoint than its teacher would match its own outputs from the first step). A method without a
    teacher network refuses --teacher (its targets come from the coupling, made by the coupling's
    teacher), and one that trains on data blocks refuses --coupling."""
    method = get_method(method_name)
    if teacher and not method.teacher:
        raise ValueError(f"--teacher: --method {method_name} runs no teacher network (its targets are the "
                         f"coupling's, made by the teacher recorded in it); drop --teacher")
    if teacher and init:
        raise ValueError(f"--teacher: the teacher of --method {method_name} is the student's own initial weights "
                         f"(self-distillation), so --teacher and --init name the same checkpoint; give one of them")
    if coupling and not method.coupling:
        raise ValueError(f"--coupling: --method {method_name} trains on data blocks, not on a coupling; "
                         f"drop --coupling")


def student_source(method_name: str, init: str | None, teacher: str | None, coupling: str | None) -> str:
    """The checkpoint folder the student starts from (and, for a method with a teacher network, the
    teacher's weights too, check_sources): `init`, else the teacher, else the teacher the coupling was made
    with (a Hub id is downloaded)."""
    method = get_method(method_name)
    check_sources(method_name, init, teacher, coupling)
    if init:
        return str(resolve_checkpoint(init, "--init"))
    if method.teacher:
        if not teacher:
            raise ValueError(f"--teacher: expected a checkpoint folder for --method {method_name}")
        return str(resolve_checkpoint(teacher, "--teacher"))
    return read_meta(coupling_folder(method_name, coupling or ""), "--coupling")["teacher"]


def check_coupling(meta: dict, length: int, mask_id: int) -> None:
    """A coupling's blocks must be the student's: the same length and mask id."""
    if (meta["length"], meta["mask_id"]) != (length, mask_id):
        raise ValueError(f"--coupling: its length / mask id {meta['length']} / {meta['mask_id']} differ from the "
                         f"student's {length} / {mask_id}")
