"""`python -m scale plot RUN [--out PNG]`: the panels of a run's metrics.jsonl (scale.evaluation.plot); default
output RUN/metrics.png."""
from __future__ import annotations

from pathlib import Path

from scale.evaluation.plot import plot, read_metrics


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder holding metrics.jsonl, or the metrics.jsonl file")
    p.add_argument("--out", default=None, help="PNG to write (default: RUN/metrics.png)")


def run(args) -> int:
    path, records = read_metrics(args.run)
    out = Path(args.out) if args.out else path.with_name("metrics.png")
    if not out.parent.is_dir():
        raise ValueError(f"--out: folder {str(out.parent)!r} does not exist")
    present = plot(records, out, title=str(path.parent))
    print(f"wrote {out} ({', '.join(present)})")
    return 0
