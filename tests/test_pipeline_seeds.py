"""Seeds in the pipeline: presets of the default seed plan exactly the commands they planned before seeds
existed; a preset of several seeds runs every seeded stage once per seed, each instance reading the same
seed's upstream instance; --seeds; pipeline.json records instances, and a run skips the finished ones."""
import json

import pytest

from scale import pipeline
from scale.cli import main
from scale.presets import PRESETS, STAGES

BEFORE = {  # `python -m scale pipeline --preset P --out {out} --dry-run` before seeds existed (owt: --mdlm ckpt)
    'tiny-cpu': [
        'python -m scale train --config tiny-cpu --set model.labels=none --set eval.every=0 --max-steps 12 '
        '--out {out}/mdlm',
        'python -m scale distill --method imdm-sdtt --teacher {out}/mdlm --config tiny-cpu-distill --out '
        '{out}/imsdtt',
        'python -m scale coupling --teacher {out}/imsdtt --num-samples 32 --steps 16 --batch-size 16 '
        '--shard-size 16 --out {out}/coupling',
        'python -m scale distill --method imdm-redi --coupling {out}/coupling --config tiny-cpu-distill '
        '--out {out}/imredi',
        'python -m scale train-judge --size tiny --steps 20 --length 32 --batch-size 4 --lr 3e-3 --warmup 5 '
        '--eval-batches 8 --out {out}/judge',
        'python -m scale evaluate --ckpt {out}/mdlm {out}/imsdtt {out}/imredi --steps 1,2,4,8 --n 8 '
        '--batch-size 8 --val-batches 2 --judge {out}/judge --out {out}/eval.json',
    ],
    'wiki-cpu': [
        'python -m scale train-tokenizer --vocab-size 2048 --out {out}/tokenizer',
        'python -m scale train --set data.tokenizer={out}/tokenizer --config wiki-cpu --out {out}/mdlm',
        'python -m scale distill --method sdtt --teacher {out}/mdlm --config wiki-cpu-sdtt --out {out}/sdtt',
        'python -m scale distill --method imdm-sdtt --teacher {out}/mdlm --config wiki-cpu-sdtt --out '
        '{out}/imsdtt',
        'python -m scale coupling --teacher {out}/mdlm --num-samples 64 --steps 64 --batch-size 64 '
        '--shard-size 64 --out {out}/coupling-mdlm',
        'python -m scale distill --method redi --coupling {out}/coupling-mdlm --config wiki-cpu-redi --out '
        '{out}/redi',
        'python -m scale distill --method imdm-redi --coupling {out}/coupling-mdlm --config wiki-cpu-redi '
        '--out {out}/imredi-mdlm',
        'python -m scale coupling --teacher {out}/imsdtt --num-samples 64 --steps 64 --batch-size 64 '
        '--shard-size 64 --out {out}/coupling',
        'python -m scale distill --method imdm-redi --coupling {out}/coupling --config wiki-cpu-redi --out '
        '{out}/imredi',
        'python -m scale train-ngram-judge --tokenizer {out}/tokenizer --order 3 --block 64 --out {out}/judge',
        'python -m scale evaluate --ckpt {out}/mdlm {out}/sdtt {out}/imsdtt {out}/redi {out}/imredi-mdlm '
        '{out}/imredi --steps 1,2,4,8,64 --n 128 --batch-size 64 --val-batches 8 --judge {out}/judge --out '
        '{out}/eval.json',
        'python -m scale report --eval {out}/eval.json --n-boot 1000 --judge {out}/judge --out '
        '{out}/report.json',
    ],
    'lm1b': [
        'python -m scale train --config lm1b-mdlm-small --out {out}/mdlm',
        'python -m scale distill --method imdm-sdtt --teacher {out}/mdlm --config lm1b-imsdtt --out '
        '{out}/imsdtt',
        'python -m scale coupling --teacher {out}/imsdtt --num-samples 100000 --steps 1024 --batch-size 128 '
        '--out {out}/coupling',
        'python -m scale distill --method imdm-redi --coupling {out}/coupling --config lm1b-imredi --out '
        '{out}/imredi',
        'python -m scale evaluate --ckpt {out}/mdlm {out}/imsdtt {out}/imredi --steps '
        '1,2,4,8,16,32,64,128,256,1024 --n 1024 --batch-size 64 --judge gpt2-large --out {out}/eval.json',
    ],
    'owt': [
        'python -m scale distill --method imdm-sdtt --teacher ckpt --config owt-imsdtt --out {out}/imsdtt',
        'python -m scale coupling --teacher {out}/imsdtt --num-samples 100000 --steps 1024 --batch-size 32 '
        '--out {out}/coupling',
        'python -m scale distill --method imdm-redi --coupling {out}/coupling --config owt-imredi --out '
        '{out}/imredi',
        'python -m scale evaluate --ckpt ckpt {out}/imsdtt {out}/imredi --steps '
        '1,2,4,8,16,32,64,128,256,1024 --n 1024 --batch-size 32 --mauve --judge gpt2-large --out '
        '{out}/eval.json',
    ],
}


def _lines(preset: str, out, **kw) -> list[str]:
    return pipeline.shell_lines(pipeline.plan(preset, out, **kw), [])


@pytest.mark.parametrize("preset", sorted(BEFORE))
def test_a_preset_of_the_default_seed_plans_the_commands_it_planned_before_seeds(tmp_path, preset):
    out = tmp_path.resolve() / "x"
    mdlm = "ckpt" if PRESETS[preset].needs_mdlm else None
    assert PRESETS[preset].seeds == (0,)
    assert _lines(preset, out, mdlm=mdlm) == [line.format(out=out) for line in BEFORE[preset]]


def test_every_preset_of_one_seed_runs_each_stage_once_without_a_seed_argument():
    for name, preset in PRESETS.items():
        if preset.seeds != (0,):
            continue
        steps = pipeline.plan(name, "runs/w", mdlm="ckpt" if preset.needs_mdlm else None)
        assert [n for n, _ in steps] == [n for n in preset.stages if n != "mdlm" or not preset.needs_mdlm]
        assert not any("train.seed=" in word for _, argv in steps for word in argv), name


def _text8(**kw) -> dict[str, list[str]]:
    return dict(pipeline.plan("text8-cpu", "runs/t", **kw))


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_each_seeded_instance_reads_its_own_seeds_upstream_and_the_one_teacher():
    steps = _text8()
    seeded = [n for n in PRESETS["text8-cpu"].stages if STAGES[n].seed]
    assert seeded == ["sdtt", "imsdtt", "epscoup", "coupling-mdlm", "redi", "imredi-mdlm", "coupling", "imredi"]
    assert list(steps) == ["tokenizer", "mdlm", *[f"{n}-s{s}" for n in seeded for s in (0, 1, 2)], "ngram-judge",
                           "evaluate", "memorisation", "report"]
    for s in (0, 1, 2):
        assert _after(steps[f"imredi-s{s}"], "--coupling") == f"runs/t/coupling-s{s}"
        assert _after(steps[f"coupling-s{s}"], "--teacher") == f"runs/t/imsdtt-s{s}"
        assert _after(steps[f"redi-s{s}"], "--coupling") == f"runs/t/coupling-mdlm-s{s}"
        assert _after(steps[f"coupling-mdlm-s{s}"], "--teacher") == "runs/t/mdlm"
        assert _after(steps[f"epscoup-s{s}"], "--teacher") == "runs/t/mdlm"
        assert steps[f"epscoup-s{s}"][:3] == ["distill", "--method", "imdm-eps-coupling"]
        for name in ("sdtt", "imsdtt", "epscoup", "redi", "imredi-mdlm", "imredi"):  # training: train.seed
            argv = steps[f"{name}-s{s}"]
            assert argv[-4:] == ["--set", f"train.seed={s}", "--out", f"runs/t/{name}-s{s}"]
        for name in ("coupling", "coupling-mdlm"):  # a coupling: its own --seed
            assert steps[f"{name}-s{s}"][-4:] == ["--seed", str(s), "--out", f"runs/t/{name}-s{s}"]
    ckpts = steps["evaluate"][steps["evaluate"].index("--ckpt") + 1:steps["evaluate"].index("--steps")]
    students = ["sdtt", "imsdtt", "epscoup", "redi", "imredi-mdlm", "imredi"]
    assert ckpts == ["runs/t/mdlm", *[f"runs/t/{n}-s{s}" for n in students for s in (0, 1, 2)]]
    assert _after(steps["evaluate"], "--judge") == "runs/t/judge"
    samples = "runs/t/samples.jsonl.gz"
    assert _after(steps["evaluate"], "--samples") == _after(steps["memorisation"], "--samples") == samples
    memo = steps["memorisation"]
    pairs = memo[memo.index("--coupling") + 1:memo.index("--data")]
    couples = (("redi", "coupling-mdlm"), ("imredi-mdlm", "coupling-mdlm"), ("imredi", "coupling"))
    assert pairs == [f"{n}-s{s}=runs/t/{c}-s{s}" for n, c in couples for s in (0, 1, 2)]
    assert "train.seed=0" not in " ".join(steps["mdlm"])  # the teacher stays single


def test_seeds_override_the_presets_and_the_default_seed_plans_as_before():
    assert list(_text8(seeds=(0,))) == list(PRESETS["text8-cpu"].stages)  # one seed 0: no suffix
    other = dict(pipeline.plan("wiki-cpu", "runs/w", seeds=(3, 5)))
    assert [n for n in other if n.startswith("sdtt")] == ["sdtt-s3", "sdtt-s5"]
    assert _after(other["imredi-s5"], "--coupling") == "runs/w/coupling-s5"
    assert other["coupling-s3"][-4:] == ["--seed", "3", "--out", "runs/w/coupling-s3"]
    # --args of a stage reach every instance, after the seed
    extra = dict(pipeline.plan("text8-cpu", "runs/t", extra=["sdtt=--set train.lr=1e-4"]))
    assert all(extra[f"sdtt-s{s}"][-2:] == ["--set", "train.lr=1e-4"] for s in (0, 1, 2))


@pytest.mark.parametrize("text, words", [("0,0", "distinct"), ("a", "comma-separated integers"),
                                         ("-1", "[0, 2^31)"), ("", "comma-separated integers")])
def test_bad_seeds_are_refused_naming_the_option(capsys, tmp_path, text, words):
    assert main(["pipeline", "--preset", "text8-cpu", "--out", str(tmp_path / "r"), "--seeds", text,
                 "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--seeds" in err and words in err


def test_the_dry_run_prints_every_instance(capsys, tmp_path):
    assert main(["pipeline", "--preset", "wiki-cpu", "--out", str(tmp_path / "r"), "--seeds", "0,1",
                 "--dry-run"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 5 + 2 * 7  # tokenizer, mdlm, judge, evaluate, report + 7 seeded stages x 2
    assert sum(line.endswith(("/sdtt-s0", "/sdtt-s1")) for line in printed) == 2


def test_the_record_holds_instances_and_a_rerun_skips_the_finished_ones(tmp_path):
    out = tmp_path / "run"
    stages = pipeline.plan("text8-cpu-tiny", out)
    ran: list[list[str]] = []

    def failing(argv):
        ran.append(argv)
        return 1 if argv[-1].endswith("redi-s1") else 0

    with pytest.raises(ValueError, match="stage 'redi-s1' failed"):
        pipeline.run_stages(stages, out, "text8-cpu-tiny", [], call=failing)
    names = [n for n, _ in stages]
    done = names[:names.index("redi-s1")]
    record = json.loads((out / "pipeline.json").read_text())
    assert record["done"] == done and set(record["seconds"]) == set(done)
    ran.clear()
    pipeline.run_stages(stages, out, "text8-cpu-tiny", [], call=lambda argv: ran.append(argv) or 0)
    assert [argv[-1] for argv in ran] == [argv[argv.index("--out") + 1] for n, argv in stages if n not in done]
    assert json.loads((out / "pipeline.json").read_text())["done"] == names
    # an instance of a stage that has one output only, or no seed, is no stage of the record
    for bad in ("mdlm-s1", "sdtt-sx", "sdtt-s"):
        (out / "pipeline.json").write_text(json.dumps({**record, "done": [bad]}))
        with pytest.raises(ValueError, match="done: expected a list of distinct stages"):
            pipeline.read_record(out, "text8-cpu-tiny")
