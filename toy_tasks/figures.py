"""Redraw the committed toy figures from the committed results, without training anything:

    python -m toy_tasks.figures [--results docs/results] [--out docs/figures]

Each figure is the one its experiment writes with `--plot`; `headline.png` (the README's figure) is drawn
from the demo's run over training seeds. A results file that is missing is skipped and named.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from toy_tasks.plot import plot_headline, plot_results

# figure -> (results file it is drawn from, the function that draws it)
FIGURES = {
    "headline.png": ("demo-seeds.json", plot_headline),
    "demo.png": ("demo.json", plot_results),
    "demo-seeds.png": ("demo-seeds.json", plot_results),
    "readers.png": ("readers.json", plot_results),
    "paper-synthetic.png": ("paper-synthetic.json", plot_results),
    "redi-epochs.png": ("redi-epochs.json", plot_results),
}


def redraw(results: Path, out: Path) -> list[str]:
    """Draw every figure whose results file exists; returns the lines to print."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, (source, draw) in FIGURES.items():
        if not (results / source).is_file():
            lines.append(f"skipped {name}: no {results / source}")
            continue
        tmp = out / f".{name}.tmp.png"  # written whole, then moved into place
        draw(json.loads((results / source).read_text()), str(tmp))
        os.replace(tmp, out / name)
        lines.append(f"wrote {out / name} from {results / source}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toy_tasks.figures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="docs/results", help="folder of results JSON (default docs/results)")
    parser.add_argument("--out", default="docs/figures", help="folder of the figures (default docs/figures)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not Path(args.results).is_dir():
        print(f"--results: expected a folder of results JSON, got {args.results!r}", file=sys.stderr)
        return 2
    print("\n".join(redraw(Path(args.results), Path(args.out))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
