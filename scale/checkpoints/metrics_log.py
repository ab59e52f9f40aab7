"""A run's metrics.jsonl: one JSON record per line, appended by the trainer (scale.training.trainer), read by
`python -m scale plot` and cut back when a run resumes.

A record is a JSON object with `step`, an integer >= 0, and the numbers of that step: `loss`, `lr`,
`grad_norm`, `tokens_per_s`, `eta_s` (every log_every steps), `val_nll`, `val_ppl` with the decoded
`samples` (every eval.every steps), `parameters`, `world_size`, `accumulation`, `device` (step 0),
`round` (distillation rounds). `read_records` is the one reader: every line is checked when the file is
opened (UTF-8, a JSON object, the fields below, every number finite, so that no plot meets a string step
or an integer beyond float's range), and an error names the file, the line and the field. A last line
without its newline that does not parse is the record a writer is appending, or was killed appending: it
is left out, as a resumed run drops it.
"""
from __future__ import annotations

import json
from pathlib import Path

from imdm_lab import durable
from scale.data.json_fields import Field, check_fields, check_numbers, integer, number

NUMBER = Field(number(), "a finite number", required=False)
COUNT = Field(integer(1), "an integer >= 1", required=False)
FIELDS = {
    "step": Field(integer(0), "an integer >= 0"),
    **dict.fromkeys(("loss", "lr", "grad_norm", "tokens_per_s", "eta_s", "val_nll", "val_ppl", "gen_ppl",
                     "entropy"), NUMBER),
    **dict.fromkeys(("parameters", "world_size", "accumulation"), COUNT),
    "round": Field(integer(0), "an integer >= 0", required=False),
    "device": Field(lambda v: isinstance(v, str), "a device name", required=False),
    "samples": Field(lambda v: isinstance(v, dict), "{steps: samples}", required=False),
}


def check_record(record, where: str) -> dict:
    """One parsed line: a JSON object whose FIELDS hold what they should and whose other numbers are
    finite (ValueError('WHERE: FIELD: expected ..., got ...'))."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object (one record), got a {type(record).__name__}")
    check_fields(record, FIELDS, where)
    check_numbers(record, where)
    return record


def read_records(path: str | Path, name: str) -> list[dict]:
    """The records of the metrics.jsonl `path`, in file order, each checked by check_record; ValueError
    ('NAME: PATH line N: ...') for a line that is not a UTF-8 JSON record (a torn last line excepted)."""
    path = Path(path)
    lines = path.read_bytes().split(b"\n")
    records = []
    for number_, line in enumerate(lines, 1):
        where = f"{name}: {path} line {number_}"
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            if number_ == len(lines):  # no newline after it: the record being (or last) written
                break
            what = "bytes that are not UTF-8" if isinstance(err, UnicodeDecodeError) else f"no JSON ({err})"
            raise ValueError(f"{where}: expected a UTF-8 JSON record, got {what}") from None
        records.append(check_record(record, where))
    return records


def trim_metrics(path: Path, step: int | None) -> None:
    """Cut a run's metrics.jsonl back to the records of steps <= `step` (none when `step` is None: no
    checkpoint), which a resumed run computes again; a last line cut short by a kill is dropped, any
    other bad line is an error naming the file and line (read_records). Rewritten atomically."""
    if not path.is_file():
        return
    keep = [r for r in read_records(path, "--resume") if step is not None and r["step"] <= step]
    durable.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))
