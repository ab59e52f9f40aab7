"""Execute the notebooks top to bottom: `python -m notebooks.execute [--fast] [--only 01,04] [--out DIR]`.

Each notebook runs in a fresh Jupyter kernel (nbclient) with the working directory `--out`; the executed
copy is written to DIR/<name>.ipynb and, when nbconvert is installed, DIR/<name>.html. A notebook's
parameters live in its first code cell (tagged `parameters`); `--fast` rewrites the line `FAST = False`
there to `FAST = True` before running, the class-sized setting the test suite uses. The run times go to
DIR/timings.json: the wall time, which grows with whatever else the machine runs, and the CPU time of the
kernel and the processes it started, which depends less on it. A cell error stops that notebook; the
others still run and the exit status is 1.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = Path("results/notebooks")
DEFAULT_TIMEOUT_S = 600  # per notebook; the full-size runs take at most about 3 minutes on 2 cores


def notebook_paths() -> list[Path]:
    """The notebooks of this folder, in their numbered order."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def parameter_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The first code cell, which holds the parameters."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            return cell
    raise ValueError("notebook: expected at least one code cell (the parameters)")


def set_parameters(nb: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
    """Rewrite top-level assignments `NAME = ...` of the parameter cell to `NAME = repr(value)` in place.

    Only a one-line assignment at the start of a line is replaced, so the cell still reads as the reader
    would edit it; a name the cell does not assign is a ValueError."""
    cell = parameter_cell(nb)
    for name, value in values.items():
        pattern = re.compile(rf"^{re.escape(name)} = [^#\n]*?(\s*#.*)?$", flags=re.M)
        source, n = pattern.subn(lambda m, name=name, value=value: f"{name} = {value!r}{m.group(1) or ''}",
                                 cell.source, count=1)
        if n == 0:
            raise ValueError(f"{name}: expected a one-line assignment `{name} = ...` in the parameter cell")
        cell.source = source
    return nb


def load_notebook(path: Path, fast: bool = False) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    return set_parameters(nb, FAST=True) if fast else nb


def execute_notebook(nb: nbformat.NotebookNode, workdir: Path, timeout_s: float = DEFAULT_TIMEOUT_S,
                     kernel_name: str = "python3") -> float:
    """Run every cell in a fresh kernel started in `workdir`; returns the wall time (s).

    timeout_s bounds the whole notebook: each cell gets what is left of it. A failing cell raises
    nbclient's CellExecutionError, a cell still running at the deadline its CellTimeoutError."""
    deadline = time.monotonic() + timeout_s
    client = NotebookClient(nb, kernel_name=kernel_name, resources={"metadata": {"path": str(workdir)}},
                            coalesce_streams=True,  # one output per stream; progress bars keep their last state
                            timeout_func=lambda cell: max(1, int(deadline - time.monotonic())))
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (a notebook's kernel and the processes
    it started count once the kernel has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_html(nb: nbformat.NotebookNode, path: Path) -> bool:
    """The executed notebook as a standalone HTML page; False when nbconvert is not installed."""
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        return False
    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")
    return True


def select(only: str | None) -> list[Path]:
    paths = notebook_paths()
    if only is None:
        return paths
    wanted = [s.strip() for s in only.split(",") if s.strip()]
    chosen = [p for p in paths if any(p.name.startswith(w) for w in wanted)]
    if not wanted or len(chosen) != len(wanted):
        names = ", ".join(p.name[:2] for p in paths)
        raise ValueError(f"--only: expected comma-separated notebook numbers among {names}, got {only!r}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks.execute", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="run with FAST = True (class-sized, seconds)")
    parser.add_argument("--only", help="comma-separated notebook numbers, e.g. 01,04 (default: all)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds allowed per notebook (default {DEFAULT_TIMEOUT_S})")
    args = parser.parse_args(argv)
    try:
        paths = select(args.only)
        if args.timeout <= 0:
            raise ValueError(f"--timeout: expected a number of seconds > 0, got {args.timeout}")
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    timings, cpu, failed = {}, {}, []
    for path in paths:
        nb = load_notebook(path, args.fast)
        print(f"{path.name}: running{' (FAST)' if args.fast else ''} ...", flush=True)
        try:
            before = children_cpu_seconds()
            seconds = execute_notebook(nb, args.out.resolve(), args.timeout)
            timings[path.stem] = round(seconds, 1)
            cpu[path.stem] = round(children_cpu_seconds() - before, 1)
            print(f"{path.name}: done in {seconds:.1f} s ({cpu[path.stem]:.1f} s of CPU time)", flush=True)
        except Exception as err:  # a cell error, a timeout or a dead kernel: report it, run the others
            failed.append(path.name)
            last = str(err).strip().splitlines()[-1] if str(err).strip() else ""
            print(f"{path.name}: FAILED ({type(err).__name__}: {last})", file=sys.stderr, flush=True)
        nbformat.write(nb, args.out / path.name)
        write_html(nb, args.out / f"{path.stem}.html")
    (args.out / "timings.json").write_text(json.dumps({"fast": args.fast, "seconds": timings, "cpu_seconds": cpu},
                                                             indent=1))
    print(f"wrote {len(paths)} executed notebooks to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
