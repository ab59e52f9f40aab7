"""Files written by `torch.save` elsewhere (Lightning .ckpt, pytorch_model.bin), read with torch's
weights-only unpickler and nothing else: a file from elsewhere is hostile until proven inert.

- `load_weights_only(path, arg)`: `torch.load(weights_only=True)`; any other content is refused.
- `load_skipping_objects(path, arg)`: the same unpickler for files that also pickle Python objects
  (Lightning's hyper-parameters: configs, tokenizers). The globals the file's pickles name are listed by
  disassembly (torch's static scanner for zip files, `pickletools.genops` for the legacy format; neither
  runs anything) and each is allow-listed as `Inert`, which keeps nothing and runs nothing. torch's
  unpickler looks its own allow-list up first, so tensors are rebuilt by torch's functions only, and the
  modules it blocks (os, sys, posix, nt) stay blocked. Objects torch's unpickler cannot build even then
  (a list or dict subclass with items) make the file refused.

Every refusal is a ValueError naming the argument and the file.
"""
from __future__ import annotations

import pickletools
import re
import warnings
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from pathlib import Path

import torch

# Pickles of a legacy (non-zip) torch file: magic number, protocol version, system info, the object, the
# storage keys; the raw storage bytes follow.
LEGACY_RECORDS = 5


class Inert:
    """What every non-allow-listed object of a file becomes: built from any arguments (REDUCE, NEWOBJ)
    and given any state (BUILD), it keeps nothing and runs nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _name(arg: str) -> str:
    """'module name' of a GLOBAL opcode as torch's unpickler spells it (Python 2 names mapped)."""
    module, name = arg.split(" ", 1)
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def pickle_globals(path: Path) -> set[str]:
    """module.name of every global the file's pickles name, found by disassembly only."""
    if zipfile.is_zipfile(path):
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    names: set[str] = set()
    with open(path, "rb") as f:
        for _ in range(LEGACY_RECORDS):
            try:
                names.update(_name(arg) for op, arg, _ in pickletools.genops(f) if op.name == "GLOBAL")
            except ValueError:  # not (or no longer) a pickle: torch's unpickler refuses what is left
                break
    return names


def _refusal(path: Path, arg: str, err: Exception) -> ValueError:
    # torch's refusal is several lines of advice around one line naming what it refused
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    text = text.split("WeightsUnpickler error:", 1)[-1]
    detail = next((ln.strip() for ln in text.splitlines() if ln.strip()), "").split(" Please use")[0][:200]
    return ValueError(f"{arg}: {path} cannot be loaded safely ({type(err).__name__}: {detail}); expected "
                      f"tensors in plain containers (what torch.load(weights_only=True) reads)")


def load_weights_only(path: str | Path, arg: str):
    """torch.load(path, weights_only=True) on the CPU; anything it refuses is a ValueError('arg: ...')."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the load below decides, in one line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign globals and damaged files
        raise _refusal(path, arg, err) from None


def load_skipping_objects(path: str | Path, arg: str):
    """Like load_weights_only, with every Python object of the file replaced by an `Inert`."""
    path = Path(path)
    try:
        names = pickle_globals(path)
    except Exception as err:  # a damaged zip surfaces as several exception types
        raise _refusal(path, arg, err) from None
    with torch.serialization.safe_globals([(Inert, name) for name in sorted(names)]):
        return load_weights_only(path, arg)
