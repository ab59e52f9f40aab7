"""`python -m scale plot RUN [--out PNG]`: the panels of a run's metrics.jsonl (scale.evaluation.plot); default
output RUN/metrics.png."""
from __future__ import annotations

from imdm_lab.checks import check_figure_path
from scale.evaluation.plot import plot, read_metrics


def add_arguments(p) -> None:
    p.add_argument("run", help="run folder holding metrics.jsonl, or the metrics.jsonl file")
    p.add_argument("--out", default=None,
                   help="figure file to write, its format from its suffix (.png, .pdf, .svg, ...; default: "
                        "RUN/metrics.png)")


def run(args) -> int:
    path, records = read_metrics(args.run)
    # a file in a format matplotlib writes here, in a folder that exists and takes files (the default,
    # inside RUN, may be read-only: the run of another user, a mounted archive)
    out = check_figure_path("--out", args.out or path.with_name("metrics.png"))
    if not out.parent.is_dir():
        raise ValueError(f"--out: expected a file in an existing folder, got {str(out)!r}")
    present = plot(records, out, title=str(path.parent))
    print(f"wrote {out} ({', '.join(present)})")
    return 0
