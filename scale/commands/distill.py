"""`python -m scale distill --method METHOD --out DIR [--teacher CKPT] [--coupling DIR] [--init CKPT]
[--config FILE] [--set section.key=value ...] [--max-steps N] [--resume]`; METHOD is a name of
scale.training.distill.METHODS.

The run's config is the initial checkpoint's config (its [model] section, schedule included, and
data), then the method's paper settings (its METHODS entry), then --config (a TOML file: only the keys
it sets), then --set. The student starts from --init (default: the teacher, or the coupling's teacher),
EMA weights by default (the paper's load_ema). A method's frozen teacher network is a copy of the
student's initial weights (self-distillation), so --teacher and --init are never given together, and
a source option the method does not read is refused (scale.training.distill_config.check_sources). Runs
as one process or under torchrun, like `python -m scale train`.
"""
from __future__ import annotations

from pathlib import Path

from scale.checkpoints.checkpoint import checkpoint_folder, read_state, read_tensors, weights_path
from scale.training.coupling import Coupling
from scale.training.distill import METHODS, distill_trainer, get_method
from scale.training.distill_config import (
    build_config,
    check_coupling,
    check_overrides,
    check_sources,
    coupling_folder,
    student_source,
)
from scale.training.runs import check_run, launch
from scale.training.trainer import loss_text


def add_arguments(p) -> None:
    p.add_argument("--method", required=True, choices=sorted(METHODS),
                   help="the distillation method (scale.training.distill.METHODS)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, rounds/, metrics.jsonl")
    p.add_argument("--teacher", default=None, help="teacher checkpoint folder or Hub id "
                   f"({', '.join(name for name, m in METHODS.items() if m.teacher)})")
    p.add_argument("--coupling", default=None, help="a folder of `python -m scale coupling` "
                   f"({', '.join(name for name, m in METHODS.items() if m.coupling)})")
    p.add_argument("--init", default=None, help="student's initial checkpoint or Hub id (default: the teacher)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="weights of --init (default ema)")
    p.add_argument("--config", default=None, help="TOML file or name of scale/configs with the keys to change")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this step (default: all rounds, or train.max_steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest complete checkpoint in --out (step 0 when there is none)")


def check(args) -> None:
    """The method, its source options (distill_config.check_sources), the --config and --set values, the
    step limit and a writable --out, before any checkpoint is read."""
    get_method(args.method)
    check_sources(args.method, args.init, args.teacher, args.coupling)
    check_overrides(args.config, args.set)
    check_run(Path(args.out), args.resume, args.max_steps)


def run(args) -> int:
    check(args)
    method = get_method(args.method)
    source = student_source(args.method, args.init, args.teacher, args.coupling)
    folder = checkpoint_folder(source)  # a run folder means its latest commit
    state = read_state(folder)
    init = read_tensors(weights_path(folder, args.weights), state.step)
    config = build_config(state.config, args.method, args.config, args.set, args.coupling)
    out = Path(args.out)
    coupling = None
    if method.coupling:  # read and checked whole before any data is opened
        coupling = Coupling(coupling_folder(args.method, args.coupling or config.distill.coupling))
        check_coupling(coupling.meta, config.data.length, config.model.mask_id)

    def build(config, data, runtime):
        train, val, tok = data
        if coupling is not None:
            train = coupling
        return distill_trainer(config, out, init, train, val, source=f"--init: {source}", decode=tok.decode,
                               runtime=runtime)

    result = launch(config, out, args.resume, args.max_steps, build)
    if result is not None and "loss" in result:
        print(f"step {result['step']}: {args.method} loss {loss_text(result['loss'])}"
              + (f", validation ELBO perplexity {result['val_ppl']:.2f}" if "val_ppl" in result else ""))
    return 0
