"""`python -m toy_tasks figures [--results docs/results] [--out docs/figures]`: redraw the committed toy
figures from the committed results, training nothing (toy_tasks.redraw.FIGURES: which results file each
figure comes from). A results file that is missing is skipped and named."""
from __future__ import annotations

from pathlib import Path

from imdm_lab.checks import check_writable
from toy_tasks.redraw import redraw


def add_arguments(parser) -> None:
    parser.add_argument("--results", default="docs/results", help="folder of results JSON (default docs/results)")
    parser.add_argument("--out", default="docs/figures", help="folder of the figures (default docs/figures)")


def run(args) -> None:
    if not Path(args.results).is_dir():
        raise ValueError(f"--results: expected a folder of results JSON, got {args.results!r}")
    out = check_writable("--out", args.out, folder=True)
    print("\n".join(redraw(Path(args.results), out)))
