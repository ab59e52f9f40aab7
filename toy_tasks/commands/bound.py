"""`python -m toy_tasks bound --task NAME [--V V --L L ...] --steps 1,2,4 [--schedule NAME] [--json]
[--plot FILE]` (or --probs FILE.npy instead of --task): entropy, total correlation, KL(p || p_k) of the
k-step exact MDM (imdm_lab.exact.mdm_law) and the stepwise bound, in nats; --plot also draws them, with the
one-step IMDM, as toy_tasks.figures.plot_bound does (the file's format is checked before any law)."""
from __future__ import annotations

import json

from imdm_lab.checks import check_figure_path, parse_steps
from imdm_lab.exact import Marginals, check_steps_cost, entropy, kl, mdm_law, stepwise_bound, total_correlation
from imdm_lab.schedules import SCHEDULES, get_schedule
from toy_tasks.distributions import TASK_OPTIONS
from toy_tasks.figures import save_bound_plot
from toy_tasks.task_arguments import add_task_arguments, task_dest, task_from_options


def add_arguments(parser) -> None:
    add_task_arguments(parser)
    parser.add_argument("--steps", required=True, help="comma-separated step counts, e.g. 1,2,4")
    parser.add_argument("--schedule", default="linear", help=f"one of {', '.join(SCHEDULES)} (default linear)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--plot", default=None, metavar="FILE",
                        help="also draw the curves to FILE (.png, .pdf, .svg, ...; toy_tasks.figures.plot_bound)")


def run(args) -> None:
    steps = parse_steps("steps", args.steps)
    schedule = get_schedule(args.schedule).name
    task = task_from_options(args.task, args.probs, {name: getattr(args, task_dest(name)) for name in TASK_OPTIONS})
    if args.plot is not None:
        check_figure_path("--plot", args.plot)
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
    if args.plot is not None:
        save_bound_plot(args.plot, task, steps, schedule)
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
