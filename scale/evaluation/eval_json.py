"""The JSON file of `python -m scale evaluate` (scale.evaluation.evaluate), read back by `python -m scale report`.

    judge, eos_rule, n, seed, weights, device    how it was measured (n samples per entry)
    checkpoints   one per checkpoint: checkpoint, label, method, seed, step, val_ppl, bits_per_char,
                  zero_shot {corpus: perplexity or null}
    entries       one per checkpoint x step count: checkpoint, label, method, seed, steps, gen_ppl, entropy,
                  nfe, seconds_per_sample, mauve (null without --mauve), judge, val_ppl, bits_per_char,
                  sample, and per sample
                  per_sample_nll (judge NLL, nats), per_sample_tokens (judge tokens counted) and
                  per_sample_entropy (nats), each a list of n values

`read_evaluation` is its one reader: every field is checked when the file is opened, the per-sample lists
value by value (finite NLL >= 0, integer token counts >= 0 with at least one token, no NLL on a sample
without tokens, finite entropies >= 0), so that a damaged file is refused naming the entry and the field,
not turned into a report of Infinity, NaN or 0.0. method, seed and bits_per_char are optional: files
written before evaluate recorded them are read as one seed per label (`identity`).
"""
from __future__ import annotations

from pathlib import Path

from imdm_lab.checks import SEED_LIMIT
from scale.data.json_fields import (
    Field,
    check_fields,
    check_numbers,
    integer,
    is_number,
    is_text,
    number,
    one_of,
    read_object,
    shown,
)
from scale.evaluation.metrics import EOS_RULES

PERPLEXITY = Field(number(1.0), "a finite perplexity >= 1")
IDENTITY = {  # which method and which training seed a checkpoint is (scale.evaluation.evaluate.method_and_seed)
    "method": Field(is_text, "the checkpoint's method (its folder name less -s<seed>)", required=False),
    "seed": Field(integer(0, SEED_LIMIT), "an integer in [0, 2^31)", required=False),
    "bits_per_char": Field(number(0.0), "a finite number >= 0", required=False),
}
TOP = {
    "judge": Field(is_text, "the judge's name or folder"),
    "eos_rule": Field(one_of(*EOS_RULES), f"one of {sorted(EOS_RULES)}"),
    "n": Field(integer(1), "an integer >= 1"),
    "seed": Field(integer(0, SEED_LIMIT), "an integer in [0, 2^31)"),
    "weights": Field(one_of("ema", "model"), "'ema' or 'model'"),
    "checkpoints": Field(lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of checkpoints"),
    "entries": Field(lambda v: isinstance(v, list) and len(v) > 0, "a non-empty list of entries"),
}
CHECKPOINT = {
    "checkpoint": Field(is_text, "a checkpoint folder or Hub id"),
    "label": Field(is_text, "a label"),
    "step": Field(integer(0), "an integer >= 0"),
    "val_ppl": PERPLEXITY,
    **IDENTITY,
    "zero_shot": Field(lambda v: isinstance(v, dict) and all(x is None or is_number(x, 1.0) for x in v.values()),
                       "{corpus: perplexity >= 1 or null}"),
}
ENTRY = {
    "checkpoint": Field(is_text, "a checkpoint folder or Hub id"),
    "label": Field(is_text, "a label"),
    "steps": Field(integer(1), "an integer >= 1"),
    "gen_ppl": PERPLEXITY,
    "entropy": Field(number(0.0), "a finite number >= 0"),
    "nfe": Field(number(0.0), "a finite number >= 0"),
    "val_ppl": PERPLEXITY,
    **IDENTITY,
    "mauve": Field(lambda v: v is None or is_number(v, 0.0, 1.0), "null or a number in [0, 1]"),
    "sample": Field(lambda v: isinstance(v, str), "the text of the first sample"),
}
# per-sample list -> (test of one value, what a value must be)
PER_SAMPLE = {
    "per_sample_nll": (number(0.0), "a finite NLL >= 0"),
    "per_sample_tokens": (integer(0), "an integer >= 0"),
    "per_sample_entropy": (number(0.0), "a finite entropy >= 0"),
}


def _check_samples(entry: dict, n: int, where: str) -> None:
    """The per-sample lists of one entry: n values each, every value checked, at least one token, and no
    NLL on a sample whose tokens were not counted."""
    for key, (test, expected) in PER_SAMPLE.items():
        values = entry.get(key)
        if not isinstance(values, list) or len(values) != n:
            got = f"{len(values)} values" if isinstance(values, list) else shown(values)
            raise ValueError(f"{where}: {key}: expected a list of the n = {n} samples' values, got {got}")
        bad = next((i for i, v in enumerate(values) if not test(v)), None)
        if bad is not None:
            raise ValueError(f"{where}: {key}[{bad}]: expected {expected}, got {shown(values[bad])}")
    tokens, nll = entry["per_sample_tokens"], entry["per_sample_nll"]
    if sum(tokens) == 0:
        raise ValueError(f"{where}: per_sample_tokens: expected at least one scored token, got 0 in every sample")
    bad = next((i for i, (c, v) in enumerate(zip(tokens, nll, strict=True)) if c == 0 and v != 0), None)
    if bad is not None:
        raise ValueError(f"{where}: per_sample_nll[{bad}]: expected 0 for a sample of 0 tokens, got {nll[bad]!r}")


def identity(entry: dict) -> tuple[str, int | None]:
    """(method, seed) of an entry: as recorded, else its label and no seed (a file of one seed per label)."""
    return entry.get("method", entry["label"]), entry.get("seed")


def read_evaluation(path: str | Path, name: str = "--eval") -> dict:
    """The evaluation JSON `path`, every field checked (module docstring); ValueError('NAME: PATH: FIELD:
    expected ..., got ...'), FIELD naming the entry, e.g. entries[3].per_sample_nll[17]."""
    path = Path(path)
    where = f"{name}: {path}"
    result = check_fields(read_object(path, name, "a file of `python -m scale evaluate`"), TOP, where)
    for i, ckpt in enumerate(result["checkpoints"]):
        if not isinstance(ckpt, dict):
            raise ValueError(f"{where}: checkpoints[{i}]: expected a JSON object, got {shown(ckpt)}")
        check_fields(ckpt, CHECKPOINT, f"{where}: checkpoints[{i}]")
    labels = {c["label"] for c in result["checkpoints"]}
    for i, entry in enumerate(result["entries"]):
        at = f"{where}: entries[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{at}: expected a JSON object, got {shown(entry)}")
        check_fields(entry, ENTRY, at)
        if entry["label"] not in labels:
            raise ValueError(f"{at}: label: expected one of the checkpoints' labels {sorted(labels)}, got "
                             f"{entry['label']!r}")
        _check_samples(entry, result["n"], at)
    check_numbers(result, where)  # the optional fields too (MAUVE per seed, conditional gen PPL, ...)
    return result
