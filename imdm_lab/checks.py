"""Argument checks shared by the kernels, the exact engine and the command lines.

A bad argument raises ValueError("<name>: expected ..., got ...") naming the argument, so that a command
line can print that one line and exit with code 2.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def check_int(name: str, value, minimum: int) -> int:
    """value as an int; a Python or numpy integer >= minimum (bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


# Seeds of every command: non-negative, and small enough that seed * 2^32 + i stays an int64 counter
SEED_LIMIT = 2**31


def check_seed(name: str, value) -> int:
    """value as an int in [0, 2^31): the one range of seeds the command lines accept."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < SEED_LIMIT:
        raise ValueError(f"{name}: expected an integer in [0, 2^31), got {value!r}")
    return int(value)


def check_writable(name: str, path, folder: bool = False) -> Path:
    """path as a Path that a command can write at its end: a file (folder=False) or a folder.

    Checked by doing, not by permission bits (which say nothing for root, read-only mounts or /proc): a
    probe file is created and removed in the deepest folder that exists on the way to path, the one in
    which the missing folders or the file will be created. Nothing is left behind."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{name}: expected a path, got {path!r}")
    p = Path(path)
    what = "folder" if folder else "file path"
    if p.exists() and p.is_dir() != folder:
        got = "a folder" if p.is_dir() else "a file"
        raise ValueError(f"{name}: expected a {what}, got {got} {str(p)!r}")
    base = p if folder and p.exists() else p.absolute().parent
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise ValueError(f"{name}: expected a {what} under a folder, got {str(p)!r} ({str(base)!r} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{name}: expected a writable {what}, got {str(p)!r} (cannot create a file in "
                         f"{str(base)!r}: {e.strerror})") from None
    return p


def check_text(name: str, value: str) -> str:
    """value as text that encodes to UTF-8: a command-line argument holding bytes that are not UTF-8
    arrives with lone surrogates in it (Python's surrogateescape), which no tokenizer takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = os.fsencode(value[err.start:err.end])
        raise ValueError(f"{name}: expected UTF-8 text, got bytes that are not UTF-8 ({bad!r} at character "
                         f"{err.start})") from None
    return value


def parse_steps(name: str, text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]: a comma-separated list of distinct integers >= 1 (no empty item), the one rule
    of every command line that takes step counts."""
    try:
        steps = [int(part) for part in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated integers >= 1 (e.g. 1,2,4), got {text!r}") from None
    for k in steps:
        check_int(name, k, 1)
    if len(set(steps)) != len(steps):
        raise ValueError(f"{name}: expected distinct step counts, got {text!r}")
    return steps


def check_device(name: str, value):
    """value ('cpu', 'cuda', 'cuda:1', 'mps' or None) as a torch.device that this machine has; None: cuda
    when available, else cpu."""
    import torch

    if value is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: expected cpu, cuda, cuda:N or mps, got {value!r}") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        have = ", ".join(k for k, v in available.items() if v)
        raise ValueError(f"{name}: expected a device this machine has ({have}), got {value!r}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"{name}: expected a CUDA index below {torch.cuda.device_count()}, got {value!r}")
    return device


def host_memory() -> int:
    """Bytes of this machine's physical memory, the budget of what a command holds in host memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def largest_fitting(cost: Callable[[int], int], budget: int, low: int = 1) -> int:
    """The largest integer v >= low - 1 with cost(v) <= budget, for a cost that grows with v (binary
    search; low - 1 when even `low` does not fit)."""
    lo, hi = low - 1, low
    while cost(hi) <= budget:  # doubling finds a value that does not fit
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid)
    return lo


def check_cost(name: str, value: int, cost: Callable[[int], int], budget: int, what: str) -> int:
    """value, refused when cost(value) bytes exceed `budget` bytes, with a ValueError naming the largest
    value that fits: "NAME: expected at most M (WHAT: V would need X GiB of the B GiB budget), got V".
    cost grows with value."""
    need = cost(value)
    if need > budget:
        most = largest_fitting(cost, budget)
        raise ValueError(f"{name}: expected at most {most} ({what}: {value} would need {need / 2**30:.3g} GiB "
                         f"of the {budget / 2**30:.3g} GiB budget), got {value}")
    return value


def check_figure(name: str, path, formats, render: Callable[[str], object]) -> Path:
    """path as a writable file path (check_writable) whose suffix is a figure format of `formats` that
    render(format) can write (the caller's plotting library draws a small figure in it to memory; a
    format may need more than its name, e.g. a LaTeX installation), so that a figure written at the end
    of a long run cannot fail on its name."""
    p = check_writable(name, path)
    suffix = p.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise ValueError(f"{name}: expected a file name ending in a figure format ({', '.join(sorted(formats))}), "
                         f"got {str(path)!r}")
    try:
        render(suffix)
    except Exception as err:  # whatever the library raises for a format it cannot write here
        reason = " ".join(str(err).split())
        raise ValueError(f"{name}: expected a figure format this machine can write, got {suffix} in {str(path)!r} "
                         f"({reason})") from None
    return p


def _render_matplotlib(fmt: str) -> None:
    """A small figure with text (some formats need a text system: pgf, LaTeX) drawn in `fmt` to memory."""
    from matplotlib.figure import Figure  # only a figure check needs the plotting library

    fig = Figure(figsize=(1, 1))
    fig.add_subplot().set_title("x")
    fig.savefig(io.BytesIO(), format=fmt)


def check_figure_path(name: str, path) -> Path:
    """path as a writable figure file in a format matplotlib writes on this machine (check_figure: a small
    figure is drawn in it to memory first): every figure of toy_tasks and scale is checked through this
    before the work that ends in it."""
    from matplotlib.backend_bases import FigureCanvasBase

    return check_figure(name, path, FigureCanvasBase.get_supported_filetypes(), _render_matplotlib)
