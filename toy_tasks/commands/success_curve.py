"""`python -m toy_tasks success-curve [--V 50000] [--L 10] [--steps 1,2,4,8,16] [--schedule NAME] [--json]`:
P(all tokens equal) of the k-step exact MDM on `align` in closed form (imdm_lab.exact.align_success)."""
from __future__ import annotations

import json

from imdm_lab.checks import check_int, parse_steps
from imdm_lab.exact import align_success, check_steps_cost
from imdm_lab.schedules import SCHEDULES, get_schedule


def add_arguments(parser) -> None:
    parser.add_argument("--V", type=int, default=50000, help="vocabulary size (default 50000)")
    parser.add_argument("--L", type=int, default=10, help="sequence length (default 10)")
    parser.add_argument("--steps", default="1,2,4,8,16", help="comma-separated step counts (default 1,2,4,8,16)")
    parser.add_argument("--schedule", default="linear", help=f"one of {', '.join(SCHEDULES)} (default linear)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> None:
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
