"""The task options of the `bound` and `sample` commands: --task NAME or --probs FILE.npy, and the task
parameters (--V, --L, ...; a task refuses the ones it does not take)."""
from __future__ import annotations

import argparse

from toy_tasks.distributions import TASK_OPTIONS, TASKS, ToyTask, make_task


def add_task_arguments(parser: argparse.ArgumentParser, renamed: dict[str, str] | None = None) -> None:
    """renamed: parameter -> option name where the command uses the usual one for something else."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help=f"a named task: {', '.join(TASKS)}")
    source.add_argument("--probs", metavar="FILE.npy", help="a joint saved with numpy.save, shape (V,)*L")
    for name, kind in TASK_OPTIONS.items():
        flag = (renamed or {}).get(name, name)
        parser.add_argument(f"--{flag}", dest=f"task_{name}", type=kind,
                            help="task parameter (default: the task's own)")


def task_from_args(args: argparse.Namespace) -> ToyTask:
    """The task named by --task (or read from --probs) with the parameters given on the command line."""
    params = {name: getattr(args, f"task_{name}") for name in TASK_OPTIONS
              if getattr(args, f"task_{name}") is not None}
    return make_task("file", path=args.probs, **params) if args.probs else make_task(args.task, **params)
