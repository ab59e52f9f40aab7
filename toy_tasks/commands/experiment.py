"""`python -m toy_tasks experiment --preset NAME [--json OUT.json] [--plot OUT.png] [--seed N | --seeds 0-2]
[--compare SEEDS.json] [--methods A,B] [--tasks T] [--workers 2]`: train the toy methods of a preset
(toy_tasks.experiment.PRESETS, or a study of toy_tasks.studies.STUDIES), measure their sample laws against
p, print the table; the JSON (written atomically) and the figure (toy_tasks.plot) on request. With
--seeds every training seed is run in turn and each number reported as its mean and range over them
(toy_tasks.seeds); --compare places the run's one-step KLs against an earlier --seeds run."""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from imdm_lab import durable
from imdm_lab.checks import check_figure_path, check_int, check_seed, check_writable
from toy_tasks import seeds
from toy_tasks.experiment import ALL_METHODS, PRESETS, format_table, run_preset, summary_sentence
from toy_tasks.plot import plot_results
from toy_tasks.studies import STUDIES


def add_arguments(parser) -> None:
    parser.add_argument("--preset", required=True, help=f"one of {', '.join([*PRESETS, *STUDIES])}")
    parser.add_argument("--json", metavar="OUT.json", help="write the results here")
    parser.add_argument("--plot", metavar="OUT.png", help="write the figure here")
    parser.add_argument("--seed", type=int, default=0, help="seed of every initialisation and draw (default 0)")
    parser.add_argument("--methods", help=f"comma-separated subset of {', '.join(ALL_METHODS)}")
    parser.add_argument("--tasks", help="comma-separated subset of the preset's tasks")
    parser.add_argument("--workers", type=int, default=2, help="tasks trained in parallel processes (default 2)")
    parser.add_argument("--seeds", help="training seeds, e.g. 0,1,2 or 0-2: each is run in turn and every number "
                                        "reported as its mean and range over them (instead of --seed)")
    parser.add_argument("--compare", metavar="SEEDS.json", help="place each one-step KL of this run against the "
                                                                "seed ranges of an earlier --seeds run")


def _names(text: str | None, valid, what: str) -> list[str] | None:
    if text is None:
        return None
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ValueError(f"{what}: expected names from {', '.join(valid)}; got {text!r}")
    return names


def _workers(workers: int) -> int:
    """workers, capped at the cores this process may run on (more processes than cores only share them),
    saying so on stderr."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers > cores:
        print(f"workers: {workers} capped at the {cores} cores of this machine", file=sys.stderr)
    return min(workers, cores)


def run(args) -> None:
    methods = _names(args.methods, ALL_METHODS, "method")
    workers = _workers(check_int("workers", args.workers, 1))
    task_names = sorted({p.name for preset in PRESETS.values() for p in preset.tasks})
    tasks = _names(args.tasks, task_names, "task")
    check_seed("seed", args.seed)
    seed_list = seeds.parse_seeds(args.seeds) if args.seeds is not None else None
    if seed_list and args.preset in STUDIES:
        raise ValueError(f"seeds: preset {args.preset!r} is a study of one seed; use --seed")
    committed = seeds.read_committed(args.compare) if args.compare else None
    # outputs are checked before the training, and their folders made only once it is done
    outputs = [check_writable("json", args.json)] if args.json else []
    if args.plot:  # its format too: a figure that cannot be written would lose the training's results
        outputs.append(check_figure_path("plot", args.plot))
    # The toy networks are far too small for intra-op parallelism to pay off, and on a busy machine
    # several threads per process oversubscribe the cores (measured 7x slower): one thread per process,
    # and the cores are used by running the tasks in parallel processes instead.
    torch.set_num_threads(1)
    start = time.perf_counter()
    if seed_list is None:
        result = run_preset(args.preset, args.seed, methods, tasks, workers=workers)
    else:
        result = seeds.run_seeds(lambda s: run_preset(args.preset, s, methods, tasks, workers=workers), seed_list)
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(format_table(result))
    print(f"\ntotal time {result['seconds']:.0f} s")
    if committed is not None:
        print(f"\nagainst {args.compare}:\n" + "\n".join(seeds.compare(result, committed)))
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
    if args.json:
        durable.write_text(args.json, json.dumps(result, indent=1))
    if args.plot:
        plot_results(result, args.plot)
        print(summary_sentence(result))
