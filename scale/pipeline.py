"""`python -m scale pipeline --preset tiny-cpu|lm1b|owt --out DIR [--mdlm CKPT] [--judge NAME_OR_DIR]
[--launcher "torchrun --nproc_per_node 8"] [--args STAGE="..."] [--dry-run]`: the paper's chain
MDLM -> IM-SDTT -> coupling -> IM-ReDi -> evaluation, as the sequence of `python -m scale` commands

    mdlm      train --config ... --set model.noise=none           DIR/mdlm      (or --mdlm CKPT)
    imsdtt    distill --method imdm-sdtt --teacher DIR/mdlm       DIR/imsdtt    (rounds in DIR/imsdtt/rounds)
    coupling  redi-data --teacher DIR/imsdtt --num-samples N --steps K  DIR/coupling
    imredi    distill --method imdm-redi --coupling DIR/coupling  DIR/imredi
    judge     train-judge --out DIR/judge (tiny-cpu: a proxy judge on held-out text; the paper presets
              judge with gpt2-large; --judge NAME_OR_DIR overrides both)
    evaluate  evaluate --ckpt DIR/mdlm DIR/imsdtt DIR/imredi      DIR/eval.json, DIR/eval.png

A stage that finished is recorded in DIR/pipeline.json and skipped when the command is run again; an
interrupted training stage continues with --resume and redi-data from its complete shards. Without
--launcher every stage runs in this process; with one, the training and coupling stages run as
`LAUNCHER -m scale ...` subprocesses (judge training and evaluation stay single-process).
--dry-run prints the commands.
"""
from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scale.checkpoint import find_checkpoint

STAGES = ("mdlm", "imsdtt", "coupling", "imredi", "judge", "evaluate")
IN_PROCESS = ("judge", "evaluate")  # single-process stages: never run under the launcher


@dataclass(frozen=True)
class Preset:
    mdlm: list[str] | None  # `train` arguments, or None: the MDLM comes from --mdlm (import-mdlm)
    imsdtt: list[str]
    coupling: list[str]
    imredi: list[str]
    evaluate: list[str]
    judge: list[str] | None = None  # `train-judge` arguments of a proxy judge; None: gpt2-large


PRESETS: dict[str, Preset] = {
    # Seconds on a CPU: every stage of the chain on the offline Wikipedia corpus with the tiny DiT.
    "tiny-cpu": Preset(
        mdlm=["--config", "tiny-cpu", "--set", "model.noise=none", "--set", "eval.every=0", "--max-steps", "12"],
        imsdtt=["--config", "tiny-cpu-distill"],
        coupling=["--num-samples", "32", "--steps", "16", "--batch-size", "16", "--shard-size", "16"],
        imredi=["--config", "tiny-cpu-distill"],
        evaluate=["--steps", "1,2,4,8", "--n", "8", "--batch-size", "8", "--val-batches", "2"],
        judge=["--size", "tiny", "--steps", "20", "--length", "32", "--batch-size", "4", "--lr", "3e-3",
               "--warmup", "5", "--eval-batches", "8"]),
    # The paper's LM1B chain (imdm-reference sec. 5): MDLM 1M steps, IM-SDTT 7 x 10k, 100k pairs, 50k steps.
    "lm1b": Preset(
        mdlm=["--config", "lm1b-mdlm-small"],
        imsdtt=["--config", "lm1b-imsdtt"],
        coupling=["--num-samples", "100000", "--steps", "1024", "--batch-size", "128"],
        imredi=["--config", "lm1b-imredi"],
        evaluate=["--steps", "1,2,4,8,16,32,64,128,256,1024", "--n", "1024", "--batch-size", "64"]),
    # OpenWebText from the official MDLM weights (python -m scale import-mdlm --from kuleshov-group/mdlm-owt).
    "owt": Preset(
        mdlm=None,
        imsdtt=["--config", "owt-imsdtt"],
        coupling=["--num-samples", "100000", "--steps", "1024", "--batch-size", "32"],
        imredi=["--config", "owt-imredi"],
        evaluate=["--steps", "1,2,4,8,16,32,64,128,256,1024", "--n", "1024", "--batch-size", "32", "--mauve"]),
}


def add_arguments(p) -> None:
    p.add_argument("--preset", default="tiny-cpu", help=f"one of {sorted(PRESETS)} (default tiny-cpu)")
    p.add_argument("--out", required=True, help="folder of all stages")
    p.add_argument("--mdlm", default=None, help="an MDLM checkpoint to start from (skips the mdlm stage)")
    p.add_argument("--judge", default=None, help="judge for evaluate (default: gpt2-large; tiny-cpu trains "
                                                 "a proxy judge)")
    p.add_argument("--launcher", default="", help='e.g. "torchrun --nproc_per_node 8" (default: in-process)')
    p.add_argument("--args", action="append", default=[], metavar='STAGE="ARGS"',
                   help='extra arguments of one stage, e.g. --args imsdtt="--set train.micro_batch=8"')
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")


def _extra(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        stage, _, text = item.partition("=")
        if stage not in STAGES or not _:
            raise ValueError(f"--args: expected STAGE=ARGS with STAGE one of {list(STAGES)}, got {item!r}")
        out.setdefault(stage, []).extend(shlex.split(text))
    return out


def plan(args) -> list[tuple[str, list[str]]]:
    """[(stage, `python -m scale` argv)] of this run."""
    if args.preset not in PRESETS:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {args.preset!r}")
    preset, out, extra = PRESETS[args.preset], Path(args.out), _extra(args.args)
    if preset.mdlm is None and not args.mdlm:
        raise ValueError(f"--mdlm: preset {args.preset!r} starts from an MDLM checkpoint "
                         f"(e.g. python -m scale import-mdlm --from kuleshov-group/mdlm-owt --noise none --out DIR)")
    mdlm = args.mdlm or str(out / "mdlm")
    train_judge = not args.judge and preset.judge is not None
    judge = args.judge or (str(out / "judge") if train_judge else "gpt2-large")
    stages = []
    if not args.mdlm:
        stages.append(("mdlm", ["train", *preset.mdlm, "--out", mdlm]))
    stages += [
        ("imsdtt", ["distill", "--method", "imdm-sdtt", "--teacher", mdlm, *preset.imsdtt,
                    "--out", str(out / "imsdtt")]),
        ("coupling", ["redi-data", "--teacher", str(out / "imsdtt"), *preset.coupling,
                      "--out", str(out / "coupling")]),
        ("imredi", ["distill", "--method", "imdm-redi", "--coupling", str(out / "coupling"), *preset.imredi,
                    "--out", str(out / "imredi")]),
    ]
    if train_judge:
        stages.append(("judge", ["train-judge", *preset.judge, "--out", judge]))
    stages.append(("evaluate", ["evaluate", "--ckpt", mdlm, str(out / "imsdtt"), str(out / "imredi"),
                                *preset.evaluate, "--judge", judge, "--out", str(out / "eval.json")]))
    return [(name, argv + extra.get(name, [])) for name, argv in stages]


def _resumable(argv: list[str]) -> list[str]:
    """A training stage whose folder holds a checkpoint continues it."""
    out = Path(argv[argv.index("--out") + 1])
    if argv[0] in ("train", "distill") and find_checkpoint(out) is not None and "--resume" not in argv:
        return [*argv, "--resume"]
    return argv


def _run_stage(name: str, argv: list[str], launcher: list[str]) -> None:
    from scale.cli import main
    if launcher and name not in IN_PROCESS:
        rc = subprocess.run([*launcher, "-m", "scale", *argv]).returncode
    else:
        rc = main(argv)
    if rc != 0:
        raise ValueError(f"pipeline: stage {name!r} failed with exit status {rc}")


def run(args) -> int:
    stages = plan(args)
    launcher = shlex.split(args.launcher)
    prefix = launcher or ["python"]
    if args.dry_run:
        for name, argv in stages:
            head = ["python"] if name in IN_PROCESS else prefix
            print(shlex.join([*head, "-m", "scale", *argv]))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "pipeline.json"
    done = json.loads(record.read_text())["done"] if record.is_file() else []
    for name, argv in stages:
        if name in done:
            print(f"pipeline: {name} already done")
            continue
        print(f"pipeline: {name}")
        _run_stage(name, _resumable(argv), launcher)
        done.append(name)
        record.write_text(json.dumps({"preset": args.preset, "done": done}, indent=1))
    return 0
