"""Every sample of an evaluation, stored: the file `python -m scale evaluate --samples FILE` writes and
`python -m scale memorisation --samples FILE` reads.

A gzip'ed JSON-lines file, one line per (checkpoint, step count) cell of the evaluation, in its order:

    {"checkpoint": str, "label": str, "steps": int >= 1, "seed": int in [0, 2^31),
     "ids": [[int, ...], ...],    every generated sequence's token ids as sampled, n rows of one length L
     "texts": [str, ...]}         the n decoded texts, exactly as the judge read them

`write_samples` writes the whole file atomically (imdm_lab.durable), so a killed evaluation leaves the old
file or none. `read_samples` is its one reader: every line is checked when the file is opened (JSON, the
fields, ids integers >= 0, rows of one length, as many texts as rows), and a damaged file is refused
naming the file, the line and the field.
"""
from __future__ import annotations

import gzip
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imdm_lab import durable
from imdm_lab.checks import SEED_LIMIT
from scale.data.json_fields import Field, check_fields, integer, is_text, shown

FIELDS = {
    "checkpoint": Field(is_text, "a checkpoint folder or Hub id"),
    "label": Field(is_text, "a label"),
    "steps": Field(integer(1), "an integer >= 1"),
    "seed": Field(integer(0, SEED_LIMIT), "an integer in [0, 2^31)"),
    "ids": Field(lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of token id rows"),
    "texts": Field(lambda v: isinstance(v, list), "a list of texts"),
}


@dataclass(frozen=True)
class SampleCell:
    """The samples of one (checkpoint, step count) cell: ids Int64[n, L] as sampled, the n texts the
    judge read, and the seed of the evaluation that drew them."""
    checkpoint: str
    label: str
    steps: int
    seed: int
    ids: np.ndarray
    texts: list[str]

    def __post_init__(self):
        if not isinstance(self.ids, np.ndarray) or self.ids.ndim != 2 or self.ids.dtype.kind not in "iu":
            raise ValueError(f"ids: expected an integer array [n, L], got {shown(self.ids)}")
        if len(self.texts) != len(self.ids):
            raise ValueError(f"texts: expected one text per row of ids ({len(self.ids)}), got {len(self.texts)}")

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "label": self.label, "steps": int(self.steps), "seed": int(self.seed),
                "ids": self.ids.tolist(), "texts": list(self.texts)}


def write_samples(path: str | Path, cells: list[SampleCell]) -> Path:
    """The samples file `path` holding `cells`, one JSON line each, gzip'ed, written atomically."""
    def write(f):
        # no name, mtime 0: the same samples give the same bytes (the staging name is not stored)
        with (gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz,
              io.TextIOWrapper(gz, encoding="utf-8") as text):
            for cell in cells:
                text.write(json.dumps(cell.to_json(), allow_nan=False) + "\n")
    return durable.write_file(path, write)


def _is_row(row) -> bool:
    return isinstance(row, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in row)


def _cell(raw, where: str) -> SampleCell:
    """One parsed line, every field checked; ids as Int64[n, L]."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object, got {shown(raw)}")
    check_fields(raw, FIELDS, where)
    ids, texts = raw["ids"], raw["texts"]
    bad = next((i for i, row in enumerate(ids) if not _is_row(row) or not row), None)
    if bad is not None:
        raise ValueError(f"{where}: ids[{bad}]: expected a non-empty list of integer token ids >= 0, got "
                         f"{shown(ids[bad])}")
    length = len(ids[0])
    bad = next((i for i, row in enumerate(ids) if len(row) != length), None)
    if bad is not None:
        raise ValueError(f"{where}: ids[{bad}]: expected {length} ids like ids[0], got {len(ids[bad])}")
    if len(texts) != len(ids):
        raise ValueError(f"{where}: texts: expected one text per row of ids ({len(ids)}), got {len(texts)}")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"{where}: texts[{bad}]: expected a text, got {shown(texts[bad])}")
    try:
        array = np.array(ids, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{where}: ids: expected token ids that fit int64") from None
    return SampleCell(raw["checkpoint"], raw["label"], raw["steps"], raw["seed"], array, texts)


def read_samples(path: str | Path, name: str = "--samples") -> list[SampleCell]:
    """The cells of the samples file `path`, every line checked (module docstring); ValueError('NAME: PATH:
    line K: FIELD: expected ..., got ...') for a damaged line, ('NAME: PATH: ...') for a file that is
    missing, not gzip or empty."""
    path = Path(path)
    where = f"{name}: {path}"
    if not path.is_file():
        raise ValueError(f"{where}: expected a samples file of `python -m scale evaluate --samples`, but the file "
                         f"is missing")
    cells = []
    try:
        with gzip.open(path, "rb") as f:
            for k, line in enumerate(f, start=1):
                at = f"{where}: line {k}"
                try:
                    raw = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise ValueError(f"{at}: expected one JSON object, got text that is not JSON ({err})") from None
                cell = _cell(raw, at)
                if any((c.label, c.steps) == (cell.label, cell.steps) for c in cells):
                    raise ValueError(f"{at}: steps: expected one line per (label, steps), got a second "
                                     f"{cell.label!r} at {cell.steps} steps")
                cells.append(cell)
    except (OSError, EOFError, zlib.error) as err:  # not gzip, or cut short by a kill of its copy
        raise ValueError(f"{where}: expected a gzip'ed JSON-lines file, got a damaged one ({err})") from None
    if not cells:
        raise ValueError(f"{where}: expected at least one (checkpoint, steps) line, got none")
    return cells
