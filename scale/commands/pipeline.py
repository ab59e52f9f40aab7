"""`python -m scale pipeline --preset NAME --out DIR [--mdlm CKPT] [--judge NAME_OR_DIR]
[--launcher "torchrun --nproc_per_node 8"] [--args STAGE="..."] [--seeds 0,1,2] [--dry-run]`: the paper's
chains stage by stage (scale.pipeline: the plan, the seeds, resumption; scale.presets: the stages and
presets). --dry-run prints the commands.

The stages are other commands of `python -m scale`; this module runs them through `args.run_command`, the
registry's entry point that imdm_lab.dispatch hands every command, and checks all of them first through
`args.check_command` (each stage's own parser and cheap checks); it imports neither the registry nor
another command module.
"""
from __future__ import annotations

from imdm_lab.checks import check_writable
from scale.pipeline import PRESETS, parse_seeds, plan, run_stages, shell_lines, split_words


def add_arguments(p) -> None:
    p.add_argument("--preset", default="tiny-cpu", help=f"one of {sorted(PRESETS)} (default tiny-cpu)")
    p.add_argument("--out", required=True, help="folder of all stages")
    p.add_argument("--mdlm", default=None, help="an MDLM checkpoint to start from (skips the mdlm stage)")
    p.add_argument("--judge", default=None, help="judge for evaluate (default: gpt2-large; tiny-cpu trains "
                                                 "a proxy judge)")
    p.add_argument("--launcher", default="", help='e.g. "torchrun --nproc_per_node 8" (default: in-process)')
    p.add_argument("--args", action="append", default=[], metavar='STAGE="ARGS"',
                   help='extra arguments of one stage, e.g. --args imsdtt="--set train.micro_batch=8"')
    p.add_argument("--seeds", default=None, metavar="0,1,2",
                   help="seeds of the distillation and coupling stages, each run once per seed in FOLDER-sSEED "
                        "(default: the preset's)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")


def run(args) -> int:
    check_writable("--out", args.out, folder=True)
    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    stages = plan(args.preset, args.out, mdlm=args.mdlm, judge=args.judge, extra=args.args, seeds=seeds)
    launcher = split_words("--launcher", args.launcher)
    if args.dry_run:
        print("\n".join(shell_lines(stages, launcher)))
        return 0
    # every stage's arguments are parsed and checked by its own command before the first one runs
    run_stages(stages, args.out, args.preset, launcher, call=args.run_command, check=args.check_command)
    return 0
