"""The registry of the pipeline's stages (STAGES) and its presets (PRESETS), read by scale.pipeline.

A stage is one `python -m scale` command writing DIR/<folder>; `reads` names the stages whose output it
takes. A stage with a `seed` template is seeded: a preset of several seeds runs it once per seed, in
DIR/<folder>-s<seed>, with the seed given by the template, each instance reading the same seed's
instance of a seeded upstream stage and the one output of an unseeded one (tokenizer, mdlm, judges).
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_SEEDS = (0,)  # the seed every config trains and samples with when none is given


@dataclass(frozen=True)
class Stage:
    """One registered stage: `python -m scale COMMAND...` writing DIR/folder.

    reads: (flag, stage) pairs, the flag followed by that stage's output (a missing stage is an error;
    "mdlm" may come from --mdlm); optional: (flag template, stage) pairs added only when the stage is in
    the plan, "{}" replaced by its output; checkpoint: evaluate compares it; in_process: never launched;
    seed: the arguments that set the seed of one instance, "{}" replaced by the seed (empty: one instance);
    writes: (flag, key, file) outputs beside the main one, DIR/file passed with flag only when a planned stage
    reads key; pairs: (flag, ((checkpoint stage, coupling stage), ...)): flag followed by LABEL=COUPLING for
    every seed both run (LABEL: the checkpoint's folder name, as evaluate labels it)."""
    command: tuple[str, ...]
    folder: str
    reads: tuple[tuple[str, str], ...] = ()
    optional: tuple[tuple[tuple[str, ...], str], ...] = ()
    checkpoint: bool = False
    in_process: bool = False
    seed: tuple[str, ...] = ()
    writes: tuple[tuple[str, str, str], ...] = ()
    pairs: tuple[str, tuple[tuple[str, str], ...]] = ("", ())


_TOKENIZER = ((("--set", "data.tokenizer={}"), "tokenizer"),)
_TOKENIZER_FLAG = ((("--tokenizer", "{}"), "tokenizer"),)
_TRAIN_SEED = ("--set", "train.seed={}")  # a training stage: the optimizer's data order, times, masks
_COUPLING_SEED = ("--seed", "{}")  # a coupling stage: its rows, times and eps (scale.training.coupling)
STAGES: dict[str, Stage] = {
    "tokenizer": Stage(("train-tokenizer",), "tokenizer", in_process=True),
    "mdlm": Stage(("train",), "mdlm", optional=_TOKENIZER, checkpoint=True),
    "sdtt": Stage(("distill", "--method", "sdtt"), "sdtt", reads=(("--teacher", "mdlm"),), checkpoint=True,
                  seed=_TRAIN_SEED),
    "imsdtt": Stage(("distill", "--method", "imdm-sdtt"), "imsdtt", reads=(("--teacher", "mdlm"),),
                    checkpoint=True, seed=_TRAIN_SEED),
    "epscoup": Stage(("distill", "--method", "imdm-eps-coupling"), "epscoup", reads=(("--teacher", "mdlm"),),
                     checkpoint=True, seed=_TRAIN_SEED),
    "coupling-mdlm": Stage(("coupling",), "coupling-mdlm", reads=(("--teacher", "mdlm"),), seed=_COUPLING_SEED),
    "redi": Stage(("distill", "--method", "redi"), "redi", reads=(("--coupling", "coupling-mdlm"),),
                  checkpoint=True, seed=_TRAIN_SEED),
    "imredi-mdlm": Stage(("distill", "--method", "imdm-redi"), "imredi-mdlm",
                         reads=(("--coupling", "coupling-mdlm"),), checkpoint=True, seed=_TRAIN_SEED),
    "coupling": Stage(("coupling",), "coupling", reads=(("--teacher", "imsdtt"),), seed=_COUPLING_SEED),
    "imredi": Stage(("distill", "--method", "imdm-redi"), "imredi", reads=(("--coupling", "coupling"),),
                    checkpoint=True, seed=_TRAIN_SEED),
    "judge": Stage(("train-judge",), "judge", in_process=True),
    "ngram-judge": Stage(("train-ngram-judge",), "judge", optional=_TOKENIZER_FLAG, in_process=True),
    "evaluate": Stage(("evaluate",), "eval.json", in_process=True,
                      writes=(("--samples", "samples", "samples.jsonl.gz"),)),
    # train-set reproduction of every sample; distance of a ReDi student's samples to its coupling's rows
    "memorisation": Stage(("memorisation",), "memorisation.json", reads=(("--samples", "samples"),),
                          optional=_TOKENIZER_FLAG, in_process=True,
                          pairs=("--coupling", (("redi", "coupling-mdlm"), ("imredi-mdlm", "coupling-mdlm"),
                                                ("imredi", "coupling")))),
    "report": Stage(("report",), "report.json", reads=(("--eval", "evaluate"),), in_process=True),
}
JUDGE_STAGES = ("judge", "ngram-judge")


@dataclass(frozen=True)
class Preset:
    """stages: {stage name: its arguments}, in the order they run (a dict keeps insertion order); seeds:
    the seeds of the seeded stages (DEFAULT_SEEDS: each runs once, in its folder without a suffix)."""
    stages: dict[str, list[str]] = field(default_factory=dict)
    needs_mdlm: bool = False  # no mdlm stage: the MDLM comes from --mdlm (import-mdlm)
    seeds: tuple[int, ...] = DEFAULT_SEEDS


_CHAIN = ("mdlm", "imsdtt", "coupling", "imredi")
_WIKI_CHAIN = ("tokenizer", "mdlm", "sdtt", "imsdtt", "coupling-mdlm", "redi", "imredi-mdlm", "coupling",
               "imredi", "ngram-judge", "evaluate", "report")
_TEXT8_CHAIN = ("tokenizer", "mdlm", "sdtt", "imsdtt", "epscoup", "coupling-mdlm", "redi", "imredi-mdlm",
                "coupling", "imredi", "ngram-judge", "evaluate", "memorisation", "report")
TEXT8_DATA = "text8-wiki"  # the corpus of the text8 presets: its one name here


def _preset(names, seeds: tuple[int, ...] = DEFAULT_SEEDS, **args) -> Preset:
    return Preset({n: list(args.get(n.replace("-", "_"), [])) for n in names}, seeds=seeds)


def _coupling(n: int, steps: int, batch: int, shard: int) -> list[str]:
    return ["--num-samples", str(n), "--steps", str(steps), "--batch-size", str(batch), "--shard-size", str(shard)]


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
    # Characters on two CPU cores (docs/scale-text8.md): a byte tokenizer (256 bytes and eos), MDLM from
    # scratch at length 128, every distillation of the chain and the eps-driven coupling student, each once
    # per seed, a 5-gram Kneser-Ney judge on the held-out split.
    "text8-cpu": _preset(
        _TEXT8_CHAIN, seeds=(0, 1, 2),
        tokenizer=["--vocab-size", "257", "--data", TEXT8_DATA],
        mdlm=["--config", "text8-cpu", "--set", f"data.dataset={TEXT8_DATA}"],
        sdtt=["--config", "text8-cpu-sdtt"],
        imsdtt=["--config", "text8-cpu-sdtt"],
        epscoup=["--config", "text8-cpu-epscoup"],
        coupling_mdlm=_coupling(64, 128, 64, 64),
        redi=["--config", "text8-cpu-redi"],
        imredi_mdlm=["--config", "text8-cpu-redi"],
        coupling=_coupling(64, 128, 64, 64),
        imredi=["--config", "text8-cpu-redi"],
        ngram_judge=["--order", "5", "--block", "128", "--data", TEXT8_DATA],
        evaluate=_WIKI_EVAL,
        memorisation=["--data", TEXT8_DATA],
        report=["--n-boot", "1000"]),
    # The same stages in seconds, two seeds (the tests run it): tiny DiT, length 32, a few optimizer steps each.
    "text8-cpu-tiny": _preset(
        _TEXT8_CHAIN, seeds=(0, 1),
        tokenizer=["--vocab-size", "257", "--data", TEXT8_DATA],
        mdlm=["--config", "text8-cpu", "--set", f"data.dataset={TEXT8_DATA}", "--set", "model.size=tiny-cpu",
              "--set", "data.length=32", "--max-steps", "8"],
        sdtt=["--config", "tiny-cpu-distill"],
        imsdtt=["--config", "tiny-cpu-distill"],
        epscoup=["--config", "tiny-cpu-distill"],
        coupling_mdlm=_coupling(16, 8, 16, 8),
        redi=["--config", "tiny-cpu-distill"],
        imredi_mdlm=["--config", "tiny-cpu-distill"],
        coupling=_coupling(16, 8, 16, 8),
        imredi=["--config", "tiny-cpu-distill"],
        ngram_judge=["--order", "5", "--block", "32", "--max-pieces", "100", "--data", TEXT8_DATA],
        evaluate=["--steps", "1,2", "--n", "8", "--batch-size", "8", "--val-batches", "1"],
        memorisation=["--data", TEXT8_DATA, "--reference", "16"],
        report=["--n-boot", "200"]),
}
