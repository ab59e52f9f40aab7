"""The task options of the `bound` and `sample` commands: --task NAME or --probs FILE.npy, and the task
parameters (--V, --L, --task-seed, ...; a task refuses the ones it does not take).

The task's own seed is --task-seed in every command, so that --seed always names a sampler or training
seed."""
from __future__ import annotations

from imdm_lab.checks import check_seed
from toy_tasks.distributions import TASK_OPTIONS, TASKS, ToyTask, make_task


def _flag(name: str) -> str:
    return "task-seed" if name == "seed" else name


def task_dest(name: str) -> str:
    """Where the parsed arguments keep the task parameter `name` (a name of TASK_OPTIONS)."""
    return f"task_{name}"


def add_task_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--task", help=f"a named task: {', '.join(TASKS)}")
    source.add_argument("--probs", metavar="FILE.npy", help="a joint saved with numpy.save, shape (V,)*L")
    for name, kind in TASK_OPTIONS.items():
        parser.add_argument(f"--{_flag(name)}", dest=task_dest(name), type=kind,
                            help="task parameter (default: the task's own)")


def task_from_options(task: str | None, probs: str | None, params: dict) -> ToyTask:
    """The task named `task` (or read from the file `probs`) with the parameters `params` (a name of
    TASK_OPTIONS -> its value, None: the task's default)."""
    params = {name: value for name, value in params.items() if value is not None}
    if "seed" in params:  # named by its option, which is not the task's parameter name
        check_seed(_flag("seed"), params["seed"])
    return make_task("file", path=probs, **params) if probs else make_task(task, **params)
