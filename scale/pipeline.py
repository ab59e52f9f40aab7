"""`python -m scale pipeline --preset tiny-cpu|wiki-cpu|wiki-cpu-tiny|lm1b|owt --out DIR [--mdlm CKPT]
[--judge NAME_OR_DIR] [--launcher "torchrun --nproc_per_node 8"] [--args STAGE="..."] [--dry-run]`: the
paper's chains as a sequence of `python -m scale` commands, one per stage.

A preset lists the stages it runs, in order, with their own arguments; each stage comes from the
registry STAGES, which knows its command, the folder it writes and the folders of other stages it
reads. The stages (DIR/<folder>):

    tokenizer      train-tokenizer (a BPE on the training split)              DIR/tokenizer
    mdlm           train --config ...  (--mdlm CKPT replaces it)              DIR/mdlm
    sdtt           distill --method sdtt --teacher DIR/mdlm                   DIR/sdtt
    imsdtt         distill --method imdm-sdtt --teacher DIR/mdlm              DIR/imsdtt  (rounds/ inside)
    coupling-mdlm  redi-data --teacher DIR/mdlm                               DIR/coupling-mdlm
    redi           distill --method redi --coupling DIR/coupling-mdlm         DIR/redi
    imredi-mdlm    distill --method imdm-redi --coupling DIR/coupling-mdlm    DIR/imredi-mdlm
    coupling       redi-data --teacher DIR/imsdtt                             DIR/coupling
    imredi         distill --method imdm-redi --coupling DIR/coupling         DIR/imredi
    judge          train-judge (a small GPT-2 proxy on held-out text)         DIR/judge
    ngram-judge    train-ngram-judge (Kneser-Ney on held-out text)            DIR/judge
    evaluate       evaluate --ckpt <every checkpoint stage of the preset>     DIR/eval.json, DIR/eval.png
    report         report (bootstrap intervals, frontier plot, table)         DIR/report.json/.png/.md

The judge of evaluate is --judge when given, else the preset's judge stage, else gpt2-large. A stage
that finished is recorded in DIR/pipeline.json with its wall time and skipped when the command is run
again; an interrupted training stage continues with --resume and redi-data from its complete shards.
Without --launcher every stage runs in this process; with one, the training and coupling stages run as
`LAUNCHER -m scale ...` subprocesses. --dry-run prints the commands.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from scale.checkpoint import find_checkpoint


@dataclass(frozen=True)
class Stage:
    """One registered stage: `python -m scale COMMAND...` writing DIR/folder.

    reads: (flag, stage) pairs, the flag followed by that stage's output (a missing stage is an error;
    "mdlm" may come from --mdlm); optional: (flag template, stage) pairs added only when the stage is in
    the plan, "{}" replaced by its output; checkpoint: evaluate compares it; in_process: never launched."""
    command: tuple[str, ...]
    folder: str
    reads: tuple[tuple[str, str], ...] = ()
    optional: tuple[tuple[tuple[str, ...], str], ...] = ()
    checkpoint: bool = False
    in_process: bool = False


_TOKENIZER = ((("--set", "data.tokenizer={}"), "tokenizer"),)
STAGES: dict[str, Stage] = {
    "tokenizer": Stage(("train-tokenizer",), "tokenizer", in_process=True),
    "mdlm": Stage(("train",), "mdlm", optional=_TOKENIZER, checkpoint=True),
    "sdtt": Stage(("distill", "--method", "sdtt"), "sdtt", reads=(("--teacher", "mdlm"),), checkpoint=True),
    "imsdtt": Stage(("distill", "--method", "imdm-sdtt"), "imsdtt", reads=(("--teacher", "mdlm"),),
                    checkpoint=True),
    "coupling-mdlm": Stage(("redi-data",), "coupling-mdlm", reads=(("--teacher", "mdlm"),)),
    "redi": Stage(("distill", "--method", "redi"), "redi", reads=(("--coupling", "coupling-mdlm"),),
                  checkpoint=True),
    "imredi-mdlm": Stage(("distill", "--method", "imdm-redi"), "imredi-mdlm",
                         reads=(("--coupling", "coupling-mdlm"),), checkpoint=True),
    "coupling": Stage(("redi-data",), "coupling", reads=(("--teacher", "imsdtt"),)),
    "imredi": Stage(("distill", "--method", "imdm-redi"), "imredi", reads=(("--coupling", "coupling"),),
                    checkpoint=True),
    "judge": Stage(("train-judge",), "judge", in_process=True),
    "ngram-judge": Stage(("train-ngram-judge",), "judge", optional=((("--tokenizer", "{}"), "tokenizer"),),
                         in_process=True),
    "evaluate": Stage(("evaluate",), "eval.json", in_process=True),
    "report": Stage(("report",), "report.json", reads=(("--eval", "evaluate"),), in_process=True),
}
JUDGE_STAGES = ("judge", "ngram-judge")


@dataclass(frozen=True)
class Preset:
    """stages: {stage name: its arguments}, in the order they run (a dict keeps insertion order)."""
    stages: dict[str, list[str]] = field(default_factory=dict)
    needs_mdlm: bool = False  # no mdlm stage: the MDLM comes from --mdlm (import-mdlm)


_CHAIN = ("mdlm", "imsdtt", "coupling", "imredi")
_WIKI_CHAIN = ("tokenizer", "mdlm", "sdtt", "imsdtt", "coupling-mdlm", "redi", "imredi-mdlm", "coupling",
               "imredi", "ngram-judge", "evaluate", "report")


def _preset(names, **args) -> Preset:
    return Preset({n: list(args.get(n.replace("-", "_"), [])) for n in names})


_WIKI_EVAL = ["--steps", "1,2,4,8,64", "--n", "128", "--batch-size", "64", "--val-batches", "8"]
PRESETS: dict[str, Preset] = {
    # Seconds on a CPU: every stage of the chain on the offline Wikipedia corpus with the tiny DiT.
    "tiny-cpu": _preset(
        (*_CHAIN, "judge", "evaluate"),
        mdlm=["--config", "tiny-cpu", "--set", "model.labels=none", "--set", "eval.every=0", "--max-steps", "12"],
        imsdtt=["--config", "tiny-cpu-distill"],
        coupling=["--num-samples", "32", "--steps", "16", "--batch-size", "16", "--shard-size", "16"],
        imredi=["--config", "tiny-cpu-distill"],
        evaluate=["--steps", "1,2,4,8", "--n", "8", "--batch-size", "8", "--val-batches", "2"],
        judge=["--size", "tiny", "--steps", "20", "--length", "32", "--batch-size", "4", "--lr", "3e-3",
               "--warmup", "5", "--eval-batches", "8"]),
    # The few-step comparison on real text on two CPU cores (docs/scale-wiki.md): a 2 048-token BPE,
    # MDLM from scratch (4 blocks, d = 128, length 64), SDTT and IM-SDTT 64 -> 8 steps, ReDi / IM-ReDi
    # over a 64-pair coupling of the MDLM and IM-ReDi over one of the IM-SDTT (200 passes each), a
    # Kneser-Ney judge on the held-out split.
    "wiki-cpu": _preset(
        _WIKI_CHAIN,
        tokenizer=["--vocab-size", "2048"],
        mdlm=["--config", "wiki-cpu"],
        sdtt=["--config", "wiki-cpu-sdtt"],
        imsdtt=["--config", "wiki-cpu-sdtt"],
        coupling_mdlm=["--num-samples", "64", "--steps", "64", "--batch-size", "64", "--shard-size", "64"],
        redi=["--config", "wiki-cpu-redi"],
        imredi_mdlm=["--config", "wiki-cpu-redi"],
        coupling=["--num-samples", "64", "--steps", "64", "--batch-size", "64", "--shard-size", "64"],
        imredi=["--config", "wiki-cpu-redi"],
        ngram_judge=["--order", "3", "--block", "64"],
        evaluate=_WIKI_EVAL,
        report=["--n-boot", "1000"]),
    # The same stages in seconds (the tests run it): tiny DiT, length 32, a few optimizer steps each.
    "wiki-cpu-tiny": _preset(
        _WIKI_CHAIN,
        tokenizer=["--vocab-size", "512"],
        mdlm=["--config", "wiki-cpu", "--set", "model.size=tiny-cpu", "--set", "data.length=32",
              "--max-steps", "8"],
        sdtt=["--config", "tiny-cpu-distill"],
        imsdtt=["--config", "tiny-cpu-distill"],
        coupling_mdlm=["--num-samples", "16", "--steps", "8", "--batch-size", "16", "--shard-size", "8"],
        redi=["--config", "tiny-cpu-distill"],
        imredi_mdlm=["--config", "tiny-cpu-distill"],
        coupling=["--num-samples", "16", "--steps", "8", "--batch-size", "16", "--shard-size", "8"],
        imredi=["--config", "tiny-cpu-distill"],
        ngram_judge=["--order", "3", "--block", "32", "--max-pieces", "100"],
        evaluate=["--steps", "1,2,8", "--n", "8", "--batch-size", "8", "--val-batches", "1"],
        report=["--n-boot", "200"]),
    # The paper's LM1B chain (imdm-reference sec. 5): MDLM 1M steps, IM-SDTT 7 x 10k, 100k pairs, 50k steps.
    "lm1b": _preset(
        (*_CHAIN, "evaluate"),
        mdlm=["--config", "lm1b-mdlm-small"],
        imsdtt=["--config", "lm1b-imsdtt"],
        coupling=["--num-samples", "100000", "--steps", "1024", "--batch-size", "128"],
        imredi=["--config", "lm1b-imredi"],
        evaluate=["--steps", "1,2,4,8,16,32,64,128,256,1024", "--n", "1024", "--batch-size", "64"]),
    # OpenWebText from the official MDLM weights (python -m scale import-mdlm --from kuleshov-group/mdlm-owt).
    "owt": Preset({
        "imsdtt": ["--config", "owt-imsdtt"],
        "coupling": ["--num-samples", "100000", "--steps", "1024", "--batch-size", "32"],
        "imredi": ["--config", "owt-imredi"],
        "evaluate": ["--steps", "1,2,4,8,16,32,64,128,256,1024", "--n", "1024", "--batch-size", "32", "--mauve"]},
        needs_mdlm=True),
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


def _stage_names(args, preset: Preset) -> list[str]:
    """The preset's stages less those replaced by --mdlm / --judge."""
    if preset.needs_mdlm and not args.mdlm:
        raise ValueError(f"--mdlm: preset {args.preset!r} starts from an MDLM checkpoint "
                         f"(e.g. python -m scale import-mdlm --from kuleshov-group/mdlm-owt --labels none --out DIR)")
    return [n for n in preset.stages
            if not (n == "mdlm" and args.mdlm) and not (n in JUDGE_STAGES and args.judge)]


def plan(args) -> list[tuple[str, list[str]]]:
    """[(stage, `python -m scale` argv)] of this run."""
    if args.preset not in PRESETS:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {args.preset!r}")
    preset, out, extra = PRESETS[args.preset], Path(args.out), _extra(args.args)
    names = _stage_names(args, preset)
    outputs = {n: str(out / STAGES[n].folder) for n in names}
    if "tokenizer" in outputs:  # checkpoints record it in data.tokenizer: absolute, valid from any folder
        outputs["tokenizer"] = str(Path(outputs["tokenizer"]).resolve())
    if args.mdlm:
        outputs["mdlm"] = args.mdlm
    judge = args.judge or next((outputs[n] for n in names if n in JUDGE_STAGES), "gpt2-large")
    first = ["mdlm"] if args.mdlm else []  # an MDLM from --mdlm is compared too
    checkpoints = [outputs[n] for n in first + [n for n in names if STAGES[n].checkpoint]]
    stages = []
    for name in names:
        stage, own = STAGES[name], preset.stages[name]
        argv = list(stage.command)
        for flag, source in stage.reads:
            if source not in outputs:
                raise ValueError(f"--preset: stage {name!r} of {args.preset!r} reads stage {source!r}, "
                                 f"which the preset does not run")
            argv += [flag, outputs[source]]
        for template, source in stage.optional:
            if source in outputs:
                argv += [part.format(outputs[source]) for part in template]
        if name == "evaluate":
            argv += ["--ckpt", *checkpoints]
        argv += own
        if name in ("evaluate", "report"):
            argv += ["--judge", judge]
        stages.append((name, argv + ["--out", outputs[name]] + extra.get(name, [])))
    return stages


def _resumable(argv: list[str]) -> list[str]:
    """A training stage whose folder holds a checkpoint continues it."""
    out = Path(argv[argv.index("--out") + 1])
    if argv[0] in ("train", "distill") and find_checkpoint(out) is not None and "--resume" not in argv:
        return [*argv, "--resume"]
    return argv


def _run_stage(name: str, argv: list[str], launcher: list[str]) -> None:
    from scale.cli import main
    if launcher and not STAGES[name].in_process:
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
            head = ["python"] if STAGES[name].in_process else prefix
            print(shlex.join([*head, "-m", "scale", *argv]))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "pipeline.json"
    state = json.loads(record.read_text()) if record.is_file() else {}
    done, seconds = state.get("done", []), state.get("seconds", {})
    for name, argv in stages:
        if name in done:
            print(f"pipeline: {name} already done")
            continue
        print(f"pipeline: {name}")
        tic = time.perf_counter()
        _run_stage(name, _resumable(argv), launcher)
        done.append(name)
        seconds[name] = round(time.perf_counter() - tic, 3)  # wall time of the call that finished it
        record.write_text(json.dumps({"preset": args.preset, "done": done, "seconds": seconds}, indent=1))
    return 0
