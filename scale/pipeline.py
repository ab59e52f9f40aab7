"""The paper's chains as a sequence of `python -m scale` commands, one per stage (behind `python -m scale
pipeline`).

A preset lists the stages it runs, in order, with their own arguments; each stage comes from the
registry STAGES, which knows its command, the folder it writes and the folders of other stages it
reads. The stages (DIR/<folder>):

    tokenizer      train-tokenizer (a BPE on the training split)              DIR/tokenizer
    mdlm           train --config ...  (--mdlm CKPT replaces it)              DIR/mdlm
    sdtt           distill --method sdtt --teacher DIR/mdlm                   DIR/sdtt
    imsdtt         distill --method imdm-sdtt --teacher DIR/mdlm              DIR/imsdtt  (rounds/ inside)
    coupling-mdlm  coupling --teacher DIR/mdlm                                DIR/coupling-mdlm
    redi           distill --method redi --coupling DIR/coupling-mdlm         DIR/redi
    imredi-mdlm    distill --method imdm-redi --coupling DIR/coupling-mdlm    DIR/imredi-mdlm
    coupling       coupling --teacher DIR/imsdtt                              DIR/coupling
    imredi         distill --method imdm-redi --coupling DIR/coupling         DIR/imredi
    judge          train-judge (a small GPT-2 proxy on held-out text)         DIR/judge
    ngram-judge    train-ngram-judge (Kneser-Ney on held-out text)            DIR/judge
    evaluate       evaluate --ckpt <every checkpoint stage of the preset>     DIR/eval.json, DIR/eval.png
    report         report (bootstrap intervals, frontier plot, table)         DIR/report.json/.png/.md

The judge of evaluate is --judge when given, else the preset's judge stage, else gpt2-large. A stage
that finished is recorded in DIR/pipeline.json with its wall time and skipped when the command is run
again (`read_record` checks the file, and that it is of the same preset, before any stage runs); an
interrupted training stage continues with --resume and a coupling stage from its complete shards.
Without a launcher every stage runs in this process; with one, the training and coupling stages run as
`LAUNCHER -m scale ...` subprocesses.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imdm_lab import durable
from imdm_lab.checks import check_writable
from scale.checkpoints.checkpoint import find_checkpoint
from scale.data.json_fields import Field, check_fields, is_list, is_number, one_of, read_object


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
    "coupling-mdlm": Stage(("coupling",), "coupling-mdlm", reads=(("--teacher", "mdlm"),)),
    "redi": Stage(("distill", "--method", "redi"), "redi", reads=(("--coupling", "coupling-mdlm"),),
                  checkpoint=True),
    "imredi-mdlm": Stage(("distill", "--method", "imdm-redi"), "imredi-mdlm",
                         reads=(("--coupling", "coupling-mdlm"),), checkpoint=True),
    "coupling": Stage(("coupling",), "coupling", reads=(("--teacher", "imsdtt"),)),
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
    # The paper's LM1B chain (Ugness/IMDM scripts/lm1b/): MDLM 1M steps, IM-SDTT 7 x 10k, 100k pairs, 50k steps.
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


def _extra(items: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        stage, _, text = item.partition("=")
        if stage not in STAGES or not _:
            raise ValueError(f"--args: expected STAGE=ARGS with STAGE one of {list(STAGES)}, got {item!r}")
        out.setdefault(stage, []).extend(split_words("--args", text))
    return out


def split_words(name: str, text: str) -> list[str]:
    """text split as a shell splits it (shlex), refused with a ValueError naming `name` when it does not
    parse (an unbalanced quote, a trailing backslash)."""
    try:
        return shlex.split(text)
    except ValueError as err:
        raise ValueError(f"{name}: expected words in shell syntax, got {text!r} ({err})") from None


def check_launcher(launcher: list[str], stages: list[tuple[str, list[str]]]) -> None:
    """A launcher that some planned stage runs through must be an executable on PATH (or a path to one)."""
    if launcher and any(not STAGES[name].in_process for name, _ in stages) and shutil.which(launcher[0]) is None:
        raise ValueError(f"--launcher: expected an executable as its first word, got {launcher[0]!r} (not found "
                         f"or not executable)")


def _stage_names(name: str, preset: Preset, mdlm: str | None, judge: str | None) -> list[str]:
    """The preset's stages less those replaced by --mdlm / --judge."""
    if preset.needs_mdlm and not mdlm:
        raise ValueError(f"--mdlm: preset {name!r} starts from an MDLM checkpoint "
                         f"(e.g. python -m scale import-mdlm --from kuleshov-group/mdlm-owt --labels none --out DIR)")
    return [n for n in preset.stages
            if not (n == "mdlm" and mdlm) and not (n in JUDGE_STAGES and judge)]


def plan(preset_name: str, out: str | Path, *, mdlm: str | None = None, judge: str | None = None,
         extra: Sequence[str] = ()) -> list[tuple[str, list[str]]]:
    """[(stage, `python -m scale` argv)] of a run of preset `preset_name` in folder `out`; mdlm replaces
    the mdlm stage, judge the judge stages; extra: STAGE=ARGS items, more arguments of one stage."""
    if preset_name not in PRESETS:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {preset_name!r}")
    preset, out, extra = PRESETS[preset_name], Path(out), _extra(extra)
    names = _stage_names(preset_name, preset, mdlm, judge)
    outputs = {n: str(out / STAGES[n].folder) for n in names}
    if "tokenizer" in outputs:  # checkpoints record it in data.tokenizer: absolute, valid from any folder
        outputs["tokenizer"] = str(Path(outputs["tokenizer"]).resolve())
    if mdlm:
        outputs["mdlm"] = mdlm
    judge = judge or next((outputs[n] for n in names if n in JUDGE_STAGES), "gpt2-large")
    first = ["mdlm"] if mdlm else []  # an MDLM from --mdlm is compared too
    checkpoints = [outputs[n] for n in first + [n for n in names if STAGES[n].checkpoint]]
    stages = []
    for name in names:
        stage, own = STAGES[name], preset.stages[name]
        argv = list(stage.command)
        for flag, source in stage.reads:
            if source not in outputs:
                raise ValueError(f"--preset: stage {name!r} of {preset_name!r} reads stage {source!r}, "
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


def _run_stage(name: str, argv: list[str], launcher: list[str], call: Callable[[list[str]], int]) -> None:
    if launcher and not STAGES[name].in_process:
        rc = subprocess.run([*launcher, "-m", "scale", *argv]).returncode
    else:
        rc = call(argv)
    if rc != 0:
        raise ValueError(f"pipeline: stage {name!r} failed with exit status {rc}")


def shell_lines(stages: list[tuple[str, list[str]]], launcher: list[str]) -> list[str]:
    """The planned stages as shell commands (what --dry-run prints)."""
    prefix = launcher or ["python"]
    return [shlex.join([*(["python"] if STAGES[name].in_process else prefix), "-m", "scale", *argv])
            for name, argv in stages]


# pipeline.json: the preset, the stages done in order and the wall time of each
RECORD = {
    "preset": Field(one_of(*PRESETS), f"one of {sorted(PRESETS)}"),
    "done": Field(lambda v: is_list(v, one_of(*STAGES)) and len(set(v)) == len(v),
                  f"a list of distinct stages of {list(STAGES)}"),
    "seconds": Field(lambda v: isinstance(v, dict) and all(k in STAGES and is_number(x, 0.0) for k, x in v.items()),
                     "{stage: wall seconds >= 0}"),
}


def read_record(out: str | Path, preset_name: str) -> dict:
    """OUT/pipeline.json, every entry checked, and of the preset `preset_name` (the stages another preset
    finished are not this one's); ValueError('--out: PATH: ENTRY: expected ..., got ...')."""
    path = Path(out) / "pipeline.json"
    where = f"--out: {path}"
    state = check_fields(read_object(path, "--out", "the record of a pipeline folder"), RECORD, where, unknown=False)
    if state["preset"] != preset_name:
        raise ValueError(f"{where}: preset: expected {preset_name!r} (this run's --preset), got {state['preset']!r}; "
                         f"use another --out")
    return state


def check_stages(stages: list[tuple[str, list[str]]], done: list[str], check: Callable[[list[str]], None]) -> None:
    """Every stage still to run, parsed by its command's parser and checked by its command's cheap checks
    (check(argv): the registry's, handed in like `call`), before the first stage starts: a bad argument of
    the last stage is refused now, not after hours of the others. An error names the stage."""
    for name, argv in stages:
        if name not in done:
            try:
                check(_resumable(argv))
            except ValueError as err:
                raise ValueError(f"pipeline: stage {name!r}: {err}") from None


def run_stages(stages: list[tuple[str, list[str]]], out: str | Path, preset_name: str, launcher: list[str],
               call: Callable[[list[str]], int], check: Callable[[list[str]], None] | None = None) -> None:
    """Run the planned stages in order, each recorded in OUT/pipeline.json when it finishes and skipped
    when recorded. call(argv) runs one `python -m scale` command in this process and returns its exit
    status: the command registry's entry point, handed in by the command (imdm_lab.dispatch), so that
    this module imports no command; with a launcher the training and coupling stages run as
    `LAUNCHER -m scale ...`. With `check`, every stage still to run is checked first (check_stages).
    The process is OUT's one writer while it runs (imdm_lab.durable.writer): a second pipeline into OUT
    is refused before it starts a stage."""
    out = check_writable("--out", out, folder=True)
    record = out / "pipeline.json"
    state = read_record(out, preset_name) if record.is_file() else {"done": [], "seconds": {}}
    done, seconds = state["done"], state["seconds"]
    if check is not None:
        check_stages(stages, done, check)
    check_launcher(launcher, [(n, a) for n, a in stages if n not in done])
    with durable.writer(out, "--out"):
        for name, argv in stages:
            if name in done:
                print(f"pipeline: {name} already done")
                continue
            print(f"pipeline: {name}")
            tic = time.perf_counter()
            _run_stage(name, _resumable(argv), launcher, call)
            done.append(name)
            seconds[name] = round(time.perf_counter() - tic, 3)  # wall time of the call that finished it
            durable.write_text(record, json.dumps({"preset": preset_name, "done": done, "seconds": seconds},
                                                  indent=1))
