"""`python -m scale distill --method sdtt|imdm-sdtt|redi|imdm-redi|imdm-eps-coupling --out DIR
[--teacher CKPT] [--coupling DIR] [--init CKPT] [--config FILE] [--set section.key=value ...]
[--max-steps N] [--resume]`.

The run's config is the initial checkpoint's config (its [model] section, schedule included, and
data), then the method's paper settings (scale.training.distill.METHODS), then --config (a TOML file: only the
keys it sets), then --set. The student starts from --init (default: the teacher, or the coupling's teacher),
EMA weights by default (the paper's load_ema). Runs as one process or under torchrun, like `python -m scale train`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from scale.checkpoints.checkpoint import checkpoint_folder, read_state, read_tensors, weights_path
from scale.data.blocks import open_data
from scale.training import distributed as D
from scale.training.coupling import Coupling
from scale.training.distill import METHODS, distill_trainer, get_method
from scale.training.distill_config import build_config, check_coupling, coupling_folder, student_source
from scale.training.runs import no_checkpoint_note, resume_step
from scale.training.trainer import loss_text


def add_arguments(p) -> None:
    p.add_argument("--method", required=True, choices=sorted(METHODS),
                   help="the distillation method (scale.training.distill.METHODS)")
    p.add_argument("--out", required=True, help="run folder: checkpoints, rounds/, metrics.jsonl")
    p.add_argument("--teacher", default=None,
                   help="teacher checkpoint folder or Hub id (sdtt, imdm-sdtt, imdm-eps-coupling)")
    p.add_argument("--coupling", default=None, help="a folder of `python -m scale coupling` (redi, imdm-redi)")
    p.add_argument("--init", default=None, help="student's initial checkpoint or Hub id (default: the teacher)")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="weights of --init (default ema)")
    p.add_argument("--config", default=None, help="TOML file or name of scale/configs with the keys to change")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this step (default: all rounds, or train.max_steps)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest complete checkpoint in --out (step 0 when there is none)")


def run(args) -> int:
    method = get_method(args.method)
    source = student_source(args.method, args.init, args.teacher, args.coupling)
    folder = checkpoint_folder(source)  # a run folder means its latest commit
    state = read_state(folder)
    init = read_tensors(weights_path(folder, args.weights), state["step"])
    config = build_config(state["config"], args.method, args.config, args.set, args.coupling)
    out = Path(args.out)
    start, config.model = resume_step(out, args.resume, args.max_steps, config.model)
    runtime = D.init_runtime()
    if args.resume and start is None and runtime.main:
        print(no_checkpoint_note(out), file=sys.stderr)
    try:
        blocks, val, tok = open_data(config.data, progress=runtime.main)
        train = blocks
        if method.coupling:
            train = Coupling(coupling_folder(args.method, args.coupling or config.distill.coupling))
            check_coupling(train.meta, config.data.length, config.model.mask_id)
        trainer = distill_trainer(config, out, init, train, val, source=f"--init: {source}", decode=tok.decode,
                                  runtime=runtime)
        if start is not None:
            trainer.resume()
        result = trainer.run(args.max_steps)
        if runtime.main and "loss" in result:
            print(f"step {result['step']}: {args.method} loss {loss_text(result['loss'])}"
                  + (f", validation ELBO perplexity {result['val_ppl']:.2f}" if "val_ppl" in result else ""))
    finally:
        D.shutdown()
    return 0
