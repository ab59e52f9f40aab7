"""The JSON files the project writes, read back field by field.

Every file a command writes and another reads (a checkpoint's state.json, a coupling's meta.json, a
judge's ngram.json / judge.json, an evaluation, pipeline.json, the lines of metrics.jsonl) has one reader,
and the reader checks each field against a table `{key: Field}` when the file is opened, so that a damaged
or foreign file is refused there, with one line naming the file and the field,

    NAME: PATH: FIELD: expected ..., got ...

(NAME: the option or kind of input, e.g. `--eval`, `judge`), instead of failing later as a KeyError, a
TypeError, an OverflowError or a silently wrong number. The tests below are plain predicates; a float is
finite, an integer fits int64, and a bool is never a number.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

INT64 = 2**63


def shown(value, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters (a state's base64 RNG text would fill a screen)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}...{text[-2:]}"


def read_json(path: str | Path, name: str, what: str):
    """The parsed JSON of `path`; ValueError('NAME: PATH: expected WHAT ..., got ...') when it is missing, is
    not UTF-8 text or is not JSON (a file cut short by a kill reads as one of these)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: {path}: expected {what}, but the file is missing")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: {path}: expected {what} (UTF-8 JSON), got bytes that are not UTF-8 "
                         f"({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: {path}: expected {what} (JSON), got text that is not JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{name}: {path}: expected {what} (JSON), got nesting too deep to read") from None


def read_object(path: str | Path, name: str, what: str) -> dict:
    """read_json, refused unless the file holds a JSON object."""
    raw = read_json(path, name, what)
    if not isinstance(raw, dict):
        raise ValueError(f"{name}: {path}: expected {what} (a JSON object), got a {type(raw).__name__}")
    return raw


# ---- tests of one value ------------------------------------------------------------------------------
def is_int(value, low: int = -INT64, high: int = INT64) -> bool:
    """An integer in [low, high) (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < high


def is_number(value, low: float = -math.inf, high: float = math.inf) -> bool:
    """A finite number in [low, high] (an integer beyond float's range is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        value = float(value)
    except OverflowError:
        return False
    return math.isfinite(value) and low <= value <= high


def is_text(value) -> bool:
    return isinstance(value, str) and value != ""


def is_list(value, test: Callable[[object], bool], min_length: int = 0) -> bool:
    return isinstance(value, list) and len(value) >= min_length and all(test(v) for v in value)


def integer(low: int = -INT64, high: int = INT64) -> Callable[[object], bool]:
    return lambda v: is_int(v, low, high)


def number(low: float = -math.inf, high: float = math.inf) -> Callable[[object], bool]:
    return lambda v: is_number(v, low, high)


def one_of(*values) -> Callable[[object], bool]:
    return lambda v: isinstance(v, type(values[0])) and not isinstance(v, bool) and v in values


def flag(value) -> bool:
    return isinstance(value, bool)


def check_numbers(value, where: str, key: str = "") -> None:
    """Every number in `value`, at any depth, finite (a NaN or an infinity read from a file would be copied
    into the next file as a measurement); ValueError('WHERE: KEY.PATH: expected a finite number, got ...')."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_numbers(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_numbers(v, where, f"{key}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and not is_number(value):
        raise ValueError(f"{where}: {key}: expected a finite number, got {shown(value)}")


@dataclass(frozen=True)
class Field:
    """One key of a file: its test, what the error says was expected, and whether it must be there."""
    test: Callable[[object], bool]
    expected: str
    required: bool = True


def check_fields(raw: dict, fields: dict[str, Field], where: str, unknown: bool = True) -> dict:
    """`raw`, every key of `fields` in it checked (ValueError('WHERE: KEY: expected ..., got ...') for a bad
    value, '..., but it is missing' for a required key that is absent); with unknown=False a key outside
    `fields` is refused too. WHERE is 'NAME: PATH' (plus ' line N' in a JSON-lines file)."""
    if not unknown:
        extra = sorted(set(raw) - set(fields))
        if extra:
            raise ValueError(f"{where}: unknown entries {extra}; expected {list(fields)}")
    for key, field in fields.items():
        if key not in raw:
            if field.required:
                raise ValueError(f"{where}: {key}: expected {field.expected}, but it is missing")
            continue
        if not field.test(raw[key]):
            raise ValueError(f"{where}: {key}: expected {field.expected}, got {shown(raw[key])}")
    return raw
