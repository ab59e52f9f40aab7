"""Command line of the toy tasks:  python -m toy_tasks <command> [options]

    python -m toy_tasks bound --task align --V 16 --L 4 --steps 1,2,4 [--schedule linear] [--json]
    python -m toy_tasks bound --probs joint.npy --steps 1,2,4 --json
    python -m toy_tasks success-curve --V 50000 --L 10 --steps 1,2,4,8,16 [--json]

A command is one line of COMMANDS: name -> (add_arguments(parser), run(args)); run prints its result on
stdout. A ValueError or a usage error ends the program with exit code 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from imdm_lab.checks import check_int, parse_steps
from imdm_lab.exact import (Marginals, align_success, check_steps_cost, entropy, kl, mdm_law, stepwise_bound,
                            total_correlation)
from imdm_lab.schedules import get_schedule
from toy_tasks.experiment import add_experiment_arguments, run_experiment
from toy_tasks.sample_command import add_sample_arguments, run_sample
from toy_tasks.task_arguments import add_task_arguments, task_from_args


class UsageError(Exception):
    """An argparse usage error, reported in one line like a ValueError."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: error: {message}")


def add_bound_arguments(parser: argparse.ArgumentParser) -> None:
    add_task_arguments(parser)
    parser.add_argument("--steps", required=True, help="comma-separated step counts, e.g. 1,2,4")
    parser.add_argument("--schedule", default="linear", help="linear, loglinear or cosine (default linear)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run_bound(args: argparse.Namespace) -> None:
    """Entropy, TC, KL(p || p_k) of the k-step exact MDM and the stepwise bound, in nats."""
    steps = parse_steps("steps", args.steps)
    schedule = get_schedule(args.schedule).name
    task = task_from_args(args)
    for k in steps:  # every step count against the work budget before the first law is computed
        check_steps_cost(task.V, task.L, k, law=True)
    m = Marginals(task.probs)
    result = {
        "V": task.V,
        "L": task.L,
        "schedule": schedule,
        "entropy": entropy(m),
        "total_correlation": total_correlation(m),
        "mdm_exact_kl": {str(k): kl(m, mdm_law(m, k, schedule)) for k in steps},
        "stepwise_bound": {str(k): stepwise_bound(m, k, schedule) for k in steps},
    }
    if args.json:
        print(json.dumps(result))
        return
    described = " ".join(f"{k}={v}" for k, v in task.params.items())
    print(f"task {task.name} ({described}), schedule {schedule}; nats")
    print(f"entropy H(p)            {result['entropy']:.6f}")
    print(f"total correlation TC(p) {result['total_correlation']:.6f}")
    print(f"{'steps':>6}  {'KL(p || p_k)':>14}  {'stepwise bound':>14}")
    for k in map(str, steps):
        print(f"{k:>6}  {result['mdm_exact_kl'][k]:>14.6f}  {result['stepwise_bound'][k]:>14.6f}")


def add_success_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--V", type=int, default=50000, help="vocabulary size (default 50000)")
    parser.add_argument("--L", type=int, default=10, help="sequence length (default 10)")
    parser.add_argument("--steps", default="1,2,4,8,16", help="comma-separated step counts (default 1,2,4,8,16)")
    parser.add_argument("--schedule", default="linear", help="linear, loglinear or cosine (default linear)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run_success(args: argparse.Namespace) -> None:
    """P(all tokens equal) of the k-step exact MDM on `align`, in closed form (no enumeration)."""
    steps = parse_steps("steps", args.steps)
    schedule = get_schedule(args.schedule).name
    for k in steps:
        check_steps_cost(check_int("V", args.V, 2), check_int("L", args.L, 1), k, law=False)
    curve = {str(k): align_success(args.V, args.L, k, schedule) for k in steps}
    if args.json:
        print(json.dumps({"V": args.V, "L": args.L, "schedule": schedule, "p_all_equal": curve}))
        return
    print(f"align V={args.V} L={args.L}, exact MDM, schedule {schedule}")
    print(f"{'steps':>6}  {'P(all equal)':>12}")
    for k, value in curve.items():
        print(f"{k:>6}  {value:>12.4f}")


COMMANDS = {
    "bound": (add_bound_arguments, run_bound),
    "success-curve": (add_success_arguments, run_success),
    "sample": (add_sample_arguments, run_sample),
    "experiment": (add_experiment_arguments, run_experiment),
}


def build_parser() -> Parser:
    parser = Parser(prog="python -m toy_tasks", description="Exact theory and experiments on toy tasks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (add_arguments, run) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=(run.__doc__ or "").split("\n")[0], description=run.__doc__))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command][1](args)
    except (ValueError, UsageError) as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        return 2
    return 0
