"""Every folder format the project writes has one reader that checks it on open: a run's metrics.jsonl, a
checkpoint's state.json, a coupling folder, an evaluation JSON, a pipeline folder's pipeline.json. Each file
is damaged in turn (cut short, a wrong JSON shape, a wrong type, NaN, missing) and the command that opens it
must end with exit status 2 and one line naming the file and the field, before any long work.
(The judge and tokenizer folders: tests/test_judge_readers.py.)"""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from refusals import write_coupling

from scale.cli import main
from scale.evaluation.eval_json import read_evaluation
from scale.training.coupling import FORMAT, Coupling

pytestmark = pytest.mark.usefixtures("token_cache")
ROOT = Path(__file__).resolve().parents[1]


def _refused(capsys, argv, *names) -> str:
    """main(argv) exits 2 with one stderr line holding every string of `names`; returns the line."""
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert all(name in lines[0] for name in names), (names, lines[0])
    return lines[0]


# ---- metrics.jsonl: `scale plot RUN` --------------------------------------------------------------------
RECORDS = [{"step": 0, "parameters": 1000, "world_size": 1, "accumulation": 1, "device": "cpu"},
           {"step": 2, "loss": 6.5, "lr": 1e-3, "grad_norm": 1.5, "tokens_per_s": 900.0, "eta_s": 3.0},
           {"step": 2, "val_nll": 6.1, "val_ppl": math.exp(6.1), "samples": {"1": ["a b"]}},
           {"step": 4, "loss": 6.0, "lr": 1e-3, "grad_norm": 1.2, "tokens_per_s": 950.0, "eta_s": 0.0}]
BAD_LINES = {  # what line 3 becomes -> the words the error must hold
    "a JSON list": (b'[1, 2]', "expected a JSON object"),
    "a string step": (b'{"step": "2", "loss": 1.0}', "step: expected an integer >= 0, got '2'"),
    "a float beyond float's range": (b'{"step": 2, "loss": 1e400}', "loss: expected a finite number, got inf"),
    "an integer beyond float's range": (b'{"step": 2, "val_nll": 1' + b"0" * 400 + b"}", "val_nll: expected a finite"),
    "a step beyond int64": (b'{"step": 1' + b"0" * 30 + b', "loss": 1.0}', "step: expected an integer >= 0"),
    "NaN": (b'{"step": 2, "loss": NaN}', "loss: expected a finite number, got nan"),
    "a NaN nested in another field": (b'{"step": 2, "extra": [1.0, NaN]}', "extra[1]: expected a finite number"),
    "binary bytes": (bytes(range(128, 256)), "expected a UTF-8 JSON record, got bytes that are not UTF-8"),
    "a record cut short": (b'{"step": 2, "lo', "expected a UTF-8 JSON record, got no JSON"),
    "a bool loss": (b'{"step": 2, "loss": true}', "loss: expected a finite number, got True"),
}


def _log(folder: Path, line3: bytes | None = None, tail: bytes = b"") -> Path:
    lines = [json.dumps(r).encode() for r in RECORDS]
    if line3 is not None:
        lines[2] = line3
    folder.mkdir()
    (folder / "metrics.jsonl").write_bytes(b"".join(ln + b"\n" for ln in lines) + tail)
    return folder


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_plot_refuses_a_bad_metrics_line_naming_file_line_and_field(capsys, tmp_path, case):
    line3, words = BAD_LINES[case]
    run = _log(tmp_path / "run", line3)
    _refused(capsys, ["plot", run], f"RUN: {run / 'metrics.jsonl'} line 3: ", words)
    assert not (run / "metrics.png").exists()


def test_plot_draws_a_good_log_and_leaves_out_a_record_being_written(capsys, tmp_path):
    run = _log(tmp_path / "run", tail=b'{"step": 6, "loss": 5.')  # the trainer is appending step 6
    assert main(["plot", str(run)]) == 0
    assert "(loss, val_nll)" in capsys.readouterr().out and (run / "metrics.png").stat().st_size > 1000


# ---- a checkpoint's state.json: `scale sample --ckpt` ---------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    return tiny_checkpoint(3)


STATE_DAMAGE = {  # state.json -> the words of the error
    "cut short": (lambda raw, text: text[:len(text) // 2], "is corrupted (not JSON"),
    "a JSON list": (lambda raw, text: "[]", "is not an imdm-lab-dit/1 checkpoint"),
    "a string step": (lambda raw, text: json.dumps({**raw, "step": "3"}), "step: expected an integer >= 0"),
    "no tokenizer": (lambda raw, text: json.dumps({k: v for k, v in raw.items() if k != "tokenizer"}),
                     "tokenizer: expected a tokenizer name or folder, but it is missing"),
    "an RNG state cut short": (lambda raw, text: json.dumps({**raw, "rng": {"torch": "AAAA"}}),
                               "rng: expected generator states"),
    "an RNG state that is not base64": (lambda raw, text: json.dumps({**raw, "rng": {"torch": "#" * 6744}}),
                                        "rng: expected generator states"),
    "binary": (lambda raw, text: "\udcff", "is corrupted"),
}


@pytest.mark.parametrize("case", sorted(STATE_DAMAGE))
def test_sample_refuses_a_damaged_state_json(capsys, tmp_path, ckpt, case):
    damage, words = STATE_DAMAGE[case]
    folder = tmp_path / "ckpt"
    shutil.copytree(ckpt, folder)
    path = folder / "state.json"
    text = path.read_text()
    path.write_bytes(damage(json.loads(text), text).encode(errors="surrogateescape"))
    line = _refused(capsys, ["sample", "--ckpt", folder, "--steps", "1", "--n", "1"], f"ckpt: {path}", words)
    assert len(line) < 400  # a bad RNG state is named, not printed


# ---- a coupling folder: `scale distill --coupling`, `scale coupling --out` -----------------------------------
LENGTH, VOCAB, MASK = 8, 30522, 103  # the tiny checkpoint's vocabulary


def _coupling(folder: Path, teacher: Path, n: int = 6, shard_size: int = 4) -> Path:
    """A coupling folder in the layout of `python -m scale coupling` (written by hand), made by `teacher`."""
    return write_coupling(folder, {
        "format": FORMAT, "teacher": str(teacher), "teacher_step": 3, "weights": "ema", "n": n, "steps": 8,
        "fix_eps": False, "seed": 0, "shard_size": shard_size, "t_min": 1e-3, "length": LENGTH,
        "num_classes": VOCAB, "mask_id": MASK, "schedule": "loglinear", "labels": "rand", "tokenizer": "bert",
        "dataset": "wiki", "num_blocks": 50}, (200, 1000), np.uint16)


def _meta(**change):
    def edit(folder):
        path = folder / "meta.json"
        raw = json.loads(path.read_text())
        for key, value in change.items():
            if value is ...:
                del raw[key]
            else:
                raw[key] = value
        path.write_text(json.dumps(raw))
    return edit


COUPLING_DAMAGE = {  # damage -> (the file the error names, the words it holds)
    "meta.json a list": (lambda f: (f / "meta.json").write_text("[1, 2]"), "meta.json", "got a list"),
    "meta.json cut short": (lambda f: (f / "meta.json").write_text((f / "meta.json").read_text()[:40]), "meta.json",
                            "is not JSON"),
    "meta.json without teacher": (_meta(teacher=...), "meta.json", "teacher: expected the teacher's checkpoint"),
    "meta.json with a string n": (_meta(n="6"), "meta.json", "n: expected an integer >= 1, got '6'"),
    "meta.json with a NaN t_min": (_meta(t_min=math.nan), "meta.json", "t_min: expected a number in (0, 1)"),
    "meta.json with a mask id outside the vocabulary": (_meta(mask_id=VOCAB), "meta.json", "mask_id: expected an id"),
    "meta.json with an unknown entry": (_meta(notes="x"), "meta.json", "unknown entries ['notes']"),
    "meta.json n below the shards": (_meta(n=4), "meta.json", "n: expected the samples of every shard"),
    "float16 t": (lambda f: np.save(f / "shard-000001" / "t.npy", np.full(2, 0.5, np.float16)), "shard-000001/t.npy",
                  "expected float64 values of shape (2,), got float16"),
    "t cut short": (lambda f: (f / "shard-000000" / "t.npy").write_bytes((f / "shard-000000" / "t.npy").read_bytes()
                                                                         [:140]), "shard-000000/t.npy",
                    "is not a plain .npy array"),
    "a mask id in x_0": (lambda f: np.save(f / "shard-000000" / "x_0.npy", np.full((4, LENGTH), MASK, np.uint16)),
                         "shard-000000/x_0.npy", "expected no mask id 103"),
}


@pytest.mark.parametrize("case", sorted(COUPLING_DAMAGE))
def test_distill_refuses_a_damaged_coupling_before_it_opens_any_data(capsys, tmp_path, ckpt, case):
    folder = _coupling(tmp_path / "coupling", ckpt)
    Coupling(folder)  # whole, it opens
    damage, file, words = COUPLING_DAMAGE[case]
    damage(folder)
    _refused(capsys, ["distill", "--method", "imdm-redi", "--coupling", folder, "--out", tmp_path / "run"], file, words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["[1, 2]", '{"format": "imdm-lab-coupling/1"', '{"format": "other"}'])
def test_coupling_refuses_to_resume_a_folder_with_a_bad_meta_json(capsys, tmp_path, text):
    out = tmp_path / "coupling"
    out.mkdir()
    (out / "meta.json").write_text(text)
    # --teacher does not exist: the folder being resumed is read first
    _refused(capsys, ["coupling", "--teacher", tmp_path / "none", "--n", "4", "--out", out],
             f"--out: {out / 'meta.json'}")


# ---- an evaluation JSON: `scale report --eval` ----------------------------------------------------------
REAL_EVAL = ROOT / "docs" / "results" / "wiki-cpu-eval.json"


def _entry(**change) -> dict:
    entry = {"checkpoint": "runs/a", "label": "a", "steps": 2, "gen_ppl": math.exp(5 / 2), "entropy": 3.0, "nfe": 2.0,
             "seconds_per_sample": 0.01, "mauve": None, "judge": "j", "val_ppl": 300.0, "sample": "a b c",
             "per_sample_nll": [2.0, 3.0, 0.0], "per_sample_tokens": [1, 1, 0], "per_sample_entropy": [1.0, 2.0, 0.0]}
    return {**entry, **change}


def _evaluation(**change) -> dict:
    result = {"judge": "j", "eos_rule": "official", "n": 3, "seed": 0, "weights": "ema", "device": "cpu",
              "checkpoints": [{"checkpoint": "runs/a", "label": "a", "step": 8, "val_ppl": 300.0, "zero_shot": {}}],
              "entries": [_entry()]}
    return {**result, **change}


EVAL_DAMAGE = {  # the file's text -> the words of the error
    "a JSON list": ("[]", "got a list"),
    "cut short": (json.dumps(_evaluation())[:200], "is not JSON"),
    "no entries": (json.dumps({k: v for k, v in _evaluation().items() if k != "entries"}),
                   "entries: expected a non-empty list of entries, but it is missing"),
    "no entry": (json.dumps(_evaluation(entries=[])), "entries: expected a non-empty list"),
    "an entry that is a list": (json.dumps(_evaluation(entries=[[1]])), "entries[0]: expected a JSON object"),
    "a NaN per-sample NLL": (json.dumps(_evaluation(entries=[_entry(per_sample_nll=[2.0, math.nan, 0.0])])),
                             "entries[0]: per_sample_nll[1]: expected a finite NLL >= 0, got nan"),
    "a negative NLL": (json.dumps(_evaluation(entries=[_entry(per_sample_nll=[-2.0, 3.0, 0.0])])),
                       "entries[0]: per_sample_nll[0]: expected a finite NLL >= 0, got -2.0"),
    "no token counted": (json.dumps(_evaluation(entries=[_entry(per_sample_tokens=[0, 0, 0])])),
                         "per_sample_tokens: expected at least one scored token"),
    "an NLL without tokens": (json.dumps(_evaluation(entries=[_entry(per_sample_nll=[2.0, 3.0, 1.0])])),
                              "per_sample_nll[2]: expected 0 for a sample of 0 tokens"),
    "fewer samples than n": (json.dumps(_evaluation(entries=[_entry(per_sample_entropy=[1.0])])),
                             "per_sample_entropy: expected a list of the n = 3 samples' values, got 1 values"),
    "a string token count": (json.dumps(_evaluation(entries=[_entry(per_sample_tokens=[1, "1", 0])])),
                             "per_sample_tokens[1]: expected an integer >= 0"),
    "an infinite gen PPL": (json.dumps(_evaluation(entries=[_entry(gen_ppl=math.inf)])), "gen_ppl: expected a finite"),
    "an entry of no checkpoint": (json.dumps(_evaluation(entries=[_entry(label="b")])),
                                  "label: expected one of the checkpoints' labels ['a'], got 'b'"),
    "no checkpoints": (json.dumps(_evaluation(checkpoints=[])), "checkpoints: expected a non-empty list"),
    "a NaN in an optional field": (json.dumps(_evaluation(entries=[_entry(cond_gen_ppl=math.nan)])),
                                   "entries[0].cond_gen_ppl: expected a finite number"),
}


def test_the_evaluation_reader_accepts_real_files(tmp_path):
    result = read_evaluation(REAL_EVAL)
    assert len(result["entries"]) == 30 and result["n"] == 128
    (tmp_path / "e.json").write_text(json.dumps(_evaluation()))
    assert read_evaluation(tmp_path / "e.json") == _evaluation()


@pytest.mark.parametrize("case", sorted(EVAL_DAMAGE))
def test_report_refuses_a_damaged_evaluation_before_the_judge(capsys, tmp_path, case):
    text, words = EVAL_DAMAGE[case]
    path = tmp_path / "eval.json"
    path.write_text(text)
    # --judge does not exist: the evaluation is read first
    _refused(capsys, ["report", "--eval", path, "--judge", tmp_path / "none", "--out", tmp_path / "r.json"],
             f"--eval: {path}", words)
    assert not (tmp_path / "r.json").exists()


# ---- a pipeline folder's pipeline.json: `scale pipeline` --------------------------------------------------
RECORD = {"preset": "wiki-cpu-tiny", "done": ["tokenizer", "mdlm"], "seconds": {"tokenizer": 1.5, "mdlm": 30.0}}
PIPELINE_DAMAGE = {  # pipeline.json text -> the words of the error
    "a JSON list": ("[]", "got a list"),
    "half-written": (json.dumps(RECORD)[:30], "is not JSON"),
    "an unknown stage done": (json.dumps({**RECORD, "done": ["tokenizer", "nope"]}), "done: expected a list of"),
    "a stage done twice": (json.dumps({**RECORD, "done": ["mdlm", "mdlm"]}), "done: expected a list of distinct"),
    "NaN seconds": (json.dumps({**RECORD, "seconds": {"mdlm": math.nan}}), "seconds: expected {stage: wall seconds"),
    "another preset": (json.dumps({**RECORD, "preset": "tiny-cpu"}), "preset: expected 'wiki-cpu-tiny'"),
    "no done": (json.dumps({k: v for k, v in RECORD.items() if k != "done"}), "done: expected a list"),
}


@pytest.mark.parametrize("case", sorted(PIPELINE_DAMAGE))
def test_pipeline_refuses_a_damaged_record_before_any_stage(capsys, tmp_path, case):
    text, words = PIPELINE_DAMAGE[case]
    out = tmp_path / "chain"
    out.mkdir()
    (out / "pipeline.json").write_text(text)
    _refused(capsys, ["pipeline", "--preset", "wiki-cpu-tiny", "--out", out], f"--out: {out / 'pipeline.json'}", words)
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.json"]  # no stage started


def test_the_pipeline_record_reader_accepts_a_real_record(tmp_path):
    from scale.pipeline import read_record
    shutil.copy(ROOT / "docs" / "results" / "wiki-cpu-pipeline.json", tmp_path / "pipeline.json")
    assert read_record(tmp_path, "wiki-cpu")["done"][-1] == "report"
