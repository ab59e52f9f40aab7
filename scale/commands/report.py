"""`python -m scale report --eval DIR/eval.json --judge DIR/judge --out DIR/report.json [--n-boot 1000]`:
bootstrap intervals, real-text references and the PPL-entropy frontier of an evaluation (scale.evaluation.report),
written as OUT (JSON), OUT with .md (a table) and OUT with .png (the frontier).

`python -m scale report --replot REPORT.json --out FIGURE.png` redraws the frontier of a report already made
(no judge, no scoring): how the committed figures are regenerated from the committed JSON."""
from __future__ import annotations

import json
from pathlib import Path

from imdm_lab import durable
from imdm_lab.checks import check_int, check_seed, check_writable
from scale.evaluation.report import plot, report, table


def add_arguments(p) -> None:
    p.add_argument("--eval", help="JSON file of python -m scale evaluate")
    p.add_argument("--judge", help="the judge the evaluation used (scores the references)")
    p.add_argument("--out", required=True, help="JSON file to write (the .png and .md go next to it); with "
                                                "--replot, the PNG to write")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--replot", metavar="REPORT.json", help="redraw the frontier of this report JSON only")


def _replot(args) -> int:
    out = Path(args.out)
    if out.suffix != ".png":
        raise ValueError(f"--out: expected a .png path with --replot, got {args.out!r}")
    try:
        rep = json.loads(Path(args.replot).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--replot: expected a report JSON of python -m scale report, got {args.replot!r} "
                         f"({type(err).__name__})") from None
    if not isinstance(rep, dict) or not {"rows", "references", "judge"} <= set(rep):
        raise ValueError(f"--replot: {args.replot} is not a report of python -m scale report (no rows / references)")
    if not out.parent.is_dir():
        raise ValueError(f"--out: folder {str(out.parent)!r} does not exist")
    plot(rep, out)
    print(f"wrote {out}")
    return 0


def check(args) -> Path:
    """--out as a writable .json path next to which the .md and .png can be written, and --n-boot a
    count (its memory is checked against the evaluation's sample count when the file is read)."""
    if not args.eval or not args.judge:
        raise ValueError("--eval and --judge: both expected (or --replot REPORT.json to redraw a report)")
    check_int("--n-boot", args.n_boot, 10)
    check_seed("--seed", args.seed)
    if Path(args.out).suffix != ".json":
        raise ValueError(f"--out: expected a .json path, got {args.out!r}")
    return check_writable("--out", args.out)  # the .md and .png go to the same folder


def run(args) -> int:
    if args.replot:
        return _replot(args)
    out = check(args)
    if not Path(args.eval).is_file():
        raise ValueError(f"--eval: expected a JSON file of python -m scale evaluate, got {args.eval!r}")
    rep = report(args.eval, args.judge, n_boot=args.n_boot, seed=args.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    durable.write_text(out, json.dumps(rep, indent=1, allow_nan=False))
    durable.write_text(out.with_suffix(".md"), table(rep))
    plot(rep, out.with_suffix(".png"))
    print(table(rep), end="")
    print(f"wrote {out}, {out.with_suffix('.png')}, {out.with_suffix('.md')}")
    return 0
