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
    epscoup        distill --method imdm-eps-coupling --teacher DIR/mdlm      DIR/epscoup
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

Seeds. A preset's seeds (Preset.seeds, or --seeds) other than the default (0,) run every seeded stage
(scale.presets: the distillations and couplings) once per seed s, as the instance `<stage>-s<s>` in
DIR/<folder>-s<s>, with `--set train.seed=s` (training) or `--seed s` (coupling); an instance reads the
same seed's instance of a seeded stage (imredi-s1 reads coupling-s1, which reads imsdtt-s1) and the one
output of the others (tokenizer, mdlm, judges). Evaluate compares every instance; pipeline.json records
each by its instance name. The default (0,) plans each stage once, in DIR/<folder>, as the configs'
own seed 0.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from imdm_lab import durable
from imdm_lab.checks import check_seed, check_writable
from scale.checkpoints.checkpoint import find_checkpoint
from scale.data.json_fields import Field, check_fields, is_list, is_number, one_of, read_object
from scale.presets import DEFAULT_SEEDS, JUDGE_STAGES, PRESETS, STAGES, Preset, Stage

__all__ = ["PRESETS", "STAGES", "Preset", "Stage", "plan", "read_record", "run_stages", "shell_lines"]


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
    launched = any(not STAGES[stage_of(name)].in_process for name, _ in stages)
    if launcher and launched and shutil.which(launcher[0]) is None:
        raise ValueError(f"--launcher: expected an executable as its first word, got {launcher[0]!r} (not found "
                         f"or not executable)")


def _stage_names(name: str, preset: Preset, mdlm: str | None, judge: str | None) -> list[str]:
    """The preset's stages less those replaced by --mdlm / --judge."""
    if preset.needs_mdlm and not mdlm:
        raise ValueError(f"--mdlm: preset {name!r} starts from an MDLM checkpoint "
                         f"(e.g. python -m scale import-mdlm --from kuleshov-group/mdlm-owt --labels none --out DIR)")
    return [n for n in preset.stages
            if not (n == "mdlm" and mdlm) and not (n in JUDGE_STAGES and judge)]


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2): distinct seeds in [0, 2^31), comma-separated (--seeds)."""
    try:
        seeds = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated integers in [0, 2^31) (e.g. 0,1,2), "
                         f"got {text!r}") from None
    for seed in seeds:
        check_seed("--seeds", seed)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: expected distinct seeds, got {text!r}")
    return seeds


def instances(name: str, seeds: tuple[int, ...]) -> list[tuple[str, int | None]]:
    """[(instance name, seed or None)] of stage `name`: one per seed for a seeded stage when the seeds
    are not the default, else the stage itself."""
    if not STAGES[name].seed or seeds == DEFAULT_SEEDS:
        return [(name, None)]
    return [(name + seed_suffix(seed), seed) for seed in seeds]


def seed_suffix(seed: int | None) -> str:
    """What an instance of seed `seed` adds to its stage's name and folder ('' for the one instance)."""
    return "" if seed is None else f"-s{seed}"


def stage_of(instance: str) -> str | None:
    """The stage of an instance name ('sdtt-s1' -> 'sdtt', 'mdlm' -> 'mdlm'); None for no stage's."""
    if instance in STAGES:
        return instance
    base, _, seed = instance.rpartition("-s")
    return base if base in STAGES and STAGES[base].seed and seed.isdigit() else None


def plan(preset_name: str, out: str | Path, *, mdlm: str | None = None, judge: str | None = None,
         extra: Sequence[str] = (), seeds: Sequence[int] | None = None) -> list[tuple[str, list[str]]]:
    """[(stage instance, `python -m scale` argv)] of a run of preset `preset_name` in folder `out`; mdlm
    replaces the mdlm stage, judge the judge stages; extra: STAGE=ARGS items, more arguments of every
    instance of one stage; seeds: the seeds of the seeded stages (default: the preset's)."""
    if preset_name not in PRESETS:
        raise ValueError(f"--preset: expected one of {sorted(PRESETS)}, got {preset_name!r}")
    preset, out, extra = PRESETS[preset_name], Path(out), _extra(extra)
    seeds = preset.seeds if seeds is None else tuple(seeds)
    names = _stage_names(preset_name, preset, mdlm, judge)
    # (stage, seed) -> output; an unseeded stage's output under seed None, found by every seed
    outputs = {(n, seed): str(out / (STAGES[n].folder + seed_suffix(seed))) for n in names
               for _, seed in instances(n, seeds)}
    if ("tokenizer", None) in outputs:  # checkpoints record it in data.tokenizer: absolute, valid from any folder
        outputs["tokenizer", None] = str(Path(outputs["tokenizer", None]).resolve())
    if mdlm:
        outputs["mdlm", None] = mdlm
    read = {source for n in names for _, source in STAGES[n].reads}
    side = {n: [(flag, key) for flag, key, _ in STAGES[n].writes if key in read] for n in names}
    outputs.update({(key, None): str(out / file) for n in names for _, key, file in STAGES[n].writes})

    def output(source: str, seed: int | None) -> str | None:
        return outputs.get((source, seed), outputs.get((source, None)))

    judge = judge or next((output(n, None) for n in names if n in JUDGE_STAGES), "gpt2-large")
    first = [mdlm] if mdlm else []  # an MDLM from --mdlm is compared too
    checkpoints = first + [output(n, seed) for n in names if STAGES[n].checkpoint for _, seed in instances(n, seeds)]
    stages = []
    for name in names:
        stage, own = STAGES[name], preset.stages[name]
        for instance, seed in instances(name, seeds):
            argv = list(stage.command)
            for flag, source in stage.reads:
                if output(source, seed) is None:
                    raise ValueError(f"--preset: stage {name!r} of {preset_name!r} reads stage {source!r}, "
                                     f"which the preset does not run")
                argv += [flag, output(source, seed)]
            for template, source in stage.optional:
                if output(source, seed) is not None:
                    argv += [part.format(output(source, seed)) for part in template]
            for flag, key in side[name]:
                argv += [flag, output(key, seed)]
            flag, couples = stage.pairs
            pairs = [f"{Path(output(a, s)).name}={output(b, s)}" for a, b in couples
                     for _, s in instances(a, seeds) if (a, s) in outputs and (b, s) in outputs]
            if pairs:
                argv += [flag, *pairs]
            if name == "evaluate":
                argv += ["--ckpt", *checkpoints]
            argv += own
            if seed is not None:
                argv += [part.format(seed) for part in stage.seed]
            if name in ("evaluate", "report"):
                argv += ["--judge", judge]
            stages.append((instance, argv + ["--out", output(name, seed)] + extra.get(name, [])))
    return stages


def _resumable(argv: list[str]) -> list[str]:
    """A training stage whose folder holds a checkpoint continues it."""
    out = Path(argv[argv.index("--out") + 1])
    if argv[0] in ("train", "distill") and find_checkpoint(out) is not None and "--resume" not in argv:
        return [*argv, "--resume"]
    return argv


def _run_stage(name: str, argv: list[str], launcher: list[str], call: Callable[[list[str]], int]) -> None:
    if launcher and not STAGES[stage_of(name)].in_process:
        rc = subprocess.run([*launcher, "-m", "scale", *argv]).returncode
    else:
        rc = call(argv)
    if rc != 0:
        raise ValueError(f"pipeline: stage {name!r} failed with exit status {rc}")


def shell_lines(stages: list[tuple[str, list[str]]], launcher: list[str]) -> list[str]:
    """The planned stages as shell commands (what --dry-run prints)."""
    prefix = launcher or ["python"]
    return [shlex.join([*(["python"] if STAGES[stage_of(name)].in_process else prefix), "-m", "scale", *argv])
            for name, argv in stages]


def _is_instance(v) -> bool:
    return isinstance(v, str) and stage_of(v) is not None


# pipeline.json: the preset, the stage instances done in order and the wall time of each
RECORD = {
    "preset": Field(one_of(*PRESETS), f"one of {sorted(PRESETS)}"),
    "done": Field(lambda v: is_list(v, _is_instance) and len(set(v)) == len(v),
                  f"a list of distinct stages of {list(STAGES)} (a seeded one as STAGE-sSEED)"),
    "seconds": Field(lambda v: isinstance(v, dict) and all(_is_instance(k) and is_number(x, 0.0) for k, x in v.items()),
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
