"""The judge folders (n-gram: ngram.json, counts.npz, the tokenizer; GPT-2 proxy: config.json, judge.json, the
weights) and tokenizer folders are checked whole when they are opened: each file damaged in turn ends
`evaluate` / `report` / `train-ngram-judge` with exit status 2 and one line naming the file and the field,
before the first sample is drawn; and `evaluate` opens every checkpoint before it samples any."""
import json
import math
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import scale.evaluation.evaluate as ev
from scale.cli import main
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.judge import load_judge
from scale.evaluation.ngram_judge import NgramJudge

pytestmark = pytest.mark.usefixtures("token_cache")


def _refused(capsys, argv, *names) -> str:
    """main(argv) exits 2 with one stderr line holding every string of `names`; returns the line."""
    capsys.readouterr()  # what the fixtures printed
    assert main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert all(name in lines[0] for name in names), (names, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def ngram(tiny_ngram_judge):
    """The bigram judge of conftest (ROOT/judge beside its tokenizer ROOT/tokenizer)."""
    return tiny_ngram_judge


@pytest.fixture(scope="module")
def vocab(ngram):
    return len(load_tokenizer(str(ngram)))


def _edit_json(name, **change):
    def edit(folder):
        raw = json.loads((folder / name).read_text())
        for key, value in change.items():
            if value is ...:
                del raw[key]
            else:
                raw[key] = value
        (folder / name).write_text(json.dumps(raw))
    return edit


def _counts(**change):
    """counts.npz rewritten with some arrays changed (None: removed)."""
    def edit(folder):
        with np.load(folder / "counts.npz") as z:
            arrays = {k: z[k] for k in z.files}
        for key, value in change.items():
            arrays.pop(key) if value is None else arrays.__setitem__(key, value(arrays))
        np.savez(folder / "counts.npz", **arrays)
    return edit


def _huge_header(folder):
    """counts.npz whose order1 member claims 10^12 rows in a header of a few bytes."""
    with np.load(folder / "counts.npz") as z:
        arrays = {k: z[k] for k in z.files}
    with zipfile.ZipFile(folder / "counts.npz", "w") as out:
        for key, value in arrays.items():
            with out.open(f"{key}.npy", "w") as f:
                if key == "order1":
                    np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False,
                                                             "shape": (10**12, 2)})
                else:
                    np.lib.format.write_array(f, value)


def _write(name, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def _cut(name):
    """The file cut to its first half (a writer killed half-way)."""
    def cut(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 2])
    return cut


NGRAM_DAMAGE = {  # damage -> (the file the error names, the words it holds)
    "ngram.json a list": (_write("ngram.json", b"[3]"), "ngram.json", "got a list"),
    "ngram.json cut short": (_cut("ngram.json"), "ngram.json", "is not JSON"),
    "ngram.json without vocab_size": (_edit_json("ngram.json", vocab_size=...), "ngram.json",
                                      "vocab_size: expected an integer >= 1, but it is missing"),
    # the silent wrong result: P_0 = 1/3 instead of 1/V gave a far lower gen PPL
    "ngram.json vocab_size 3": (_edit_json("ngram.json", vocab_size=3), "ngram.json",
                                "vocab_size: expected the {V} tokens of the tokenizer"),
    "ngram.json of another order": (_edit_json("ngram.json", order=3), "ngram.json", "order: expected the order 2"),
    "ngram.json with a NaN": (_edit_json("ngram.json", val_ppl=math.nan), "ngram.json",
                              "val_ppl: expected a finite number"),
    "ngram.json of another format": (_edit_json("ngram.json", format="x"), "ngram.json", "format: expected"),
    "no counts.npz": (lambda f: (f / "counts.npz").unlink(), "counts.npz", "the file is missing"),
    "counts.npz cut short": (_cut("counts.npz"), "counts.npz", "damaged or foreign file"),
    "counts.npz a pickle": (lambda f: (f / "counts.npz").write_bytes(pickle.dumps({"order1": [1]})), "counts.npz",
                            "damaged or foreign file"),
    "counts.npz holding objects": (_counts(order1=lambda a: np.array([None, 1], dtype=object)), "counts.npz",
                                   "holds pickled objects"),
    "counts.npz claiming a huge array": (_huge_header, "counts.npz", "its header claims (1000000000000, 2)"),
    "NaN discounts": (_counts(discounts=lambda a: np.full_like(a["discounts"], math.nan)), "counts.npz",
                      "discounts: expected finite D_r in [0, r]"),
    "a discount above r": (_counts(discounts=lambda a: a["discounts"] + 1.0), "counts.npz", "discounts: expected"),
    "no discounts": (_counts(discounts=None), "counts.npz", "expected the arrays order1..orderK and discounts"),
    "ids beyond the vocabulary": (_counts(order1=lambda a: a["order1"] + [60000, 0]), "counts.npz",
                                  "order1: expected token ids in [0, {V})"),
    "a zero count": (_counts(order2=lambda a: a["order2"] * [1, 1, 0]), "counts.npz", "order2: expected counts >= 1"),
    "a k-gram twice": (_counts(order2=lambda a: np.concatenate([a["order2"], a["order2"][:1]])), "counts.npz",
                       "order2: expected each 2-gram once"),
    "float counts": (_counts(order2=lambda a: a["order2"].astype(np.float64)), "counts.npz",
                     "order2: expected int64 rows of 2 token ids and a count, got float64"),
    "no tokenizer files": (lambda f: [(f / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
                           "judge", "expected a tokenizer folder holding one of"),
    "tokenizer.json cut short": (_cut("tokenizer.json"), "tokenizer.json", "is not JSON"),
    "tokenizer_config.json a list": (_write("tokenizer_config.json", b"[]"), "tokenizer_config.json", "got a list"),
}


@pytest.mark.parametrize("case", sorted(NGRAM_DAMAGE))
def test_evaluate_refuses_a_damaged_ngram_judge_before_sampling(capsys, tmp_path, ngram, vocab, case):
    judge = tmp_path / "judge"
    shutil.copytree(ngram, judge)
    damage, file, words = NGRAM_DAMAGE[case]
    damage(judge)
    # --ckpt does not exist: the judge is opened first
    _refused(capsys, ["evaluate", "--ckpt", tmp_path / "none", "--judge", judge, "--out", tmp_path / "e.json"],
             f"{judge}", file, words.format(V=vocab))
    assert not (tmp_path / "e.json").exists()


def test_report_reads_the_judge_through_the_same_reader(capsys, tmp_path, ngram):
    judge = tmp_path / "judge"
    shutil.copytree(ngram, judge)
    _counts(discounts=lambda a: np.full_like(a["discounts"], math.nan))(judge)
    evaluation = Path(__file__).resolve().parents[1] / "docs" / "results" / "wiki-cpu-eval.json"
    _refused(capsys, ["report", "--eval", evaluation, "--judge", judge, "--out", tmp_path / "r.json"],
             f"judge: {judge / 'counts.npz'}: discounts")


def test_a_whole_ngram_judge_opens(ngram, vocab):
    judge = load_judge(str(ngram))
    assert isinstance(judge, NgramJudge) and judge.lm.vocab_size == vocab > 256


def _gpt2_judge(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=16, n_layer=1, n_embd=8, n_head=2)).save_pretrained(folder)
    (folder / "judge.json").write_text(json.dumps({"data": "wiki", "split": "heldout", "size": "tiny", "length": 16,
                                                   "val_ppl": 900.0, "val_nll": math.log(900.0)}))
    return folder


GPT2_DAMAGE = {
    "judge.json a list": (_write("judge.json", b"[]"), "judge.json", "got a list"),
    "judge.json cut short": (_cut("judge.json"), "judge.json", "is not JSON"),
    "judge.json with a NaN perplexity": (_edit_json("judge.json", val_ppl=math.nan), "judge.json",
                                         "val_ppl: expected a finite perplexity >= 1"),
    "judge.json of an unknown size": (_edit_json("judge.json", size="huge"), "judge.json", "size: expected one of"),
    "config.json a list": (_write("config.json", b"[]"), "config.json", "got a list"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "judge", "holds no loadable model"),
}


@pytest.mark.parametrize("case", sorted(GPT2_DAMAGE))
def test_evaluate_refuses_a_damaged_proxy_judge(capsys, tmp_path, case):
    judge = _gpt2_judge(tmp_path / "judge")
    damage, file, words = GPT2_DAMAGE[case]
    damage(judge)
    _refused(capsys, ["evaluate", "--ckpt", tmp_path / "none", "--judge", judge, "--out", tmp_path / "e.json"],
             f"{judge}", file, words)


def test_a_whole_proxy_judge_opens(tmp_path):
    judge = load_judge(str(_gpt2_judge(tmp_path / "judge")), device="cpu")
    assert judge.context == 16 and len(judge.tokenizer) == 50257


@pytest.mark.parametrize("case", ["no tokenizer files", "tokenizer.json cut short", "tokenizer_config.json a list"])
def test_train_ngram_judge_refuses_a_damaged_tokenizer_folder(capsys, tmp_path, ngram, case):
    folder = tmp_path / "tok"
    shutil.copytree(ngram.parent / "tokenizer", folder)
    damage, file, words = NGRAM_DAMAGE[case]
    damage(folder)
    _refused(capsys, ["train-ngram-judge", "--tokenizer", folder, "--out", tmp_path / "j"],
             f"tokenizer: {folder}", words)
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize("bad", ["missing", "state.json cut short"])
def test_evaluate_opens_every_checkpoint_before_the_first_sample(capsys, tmp_path, ngram, tiny_checkpoint,
                                                                 monkeypatch, bad):
    """evaluate --ckpt A BAD: A is neither scored nor sampled before BAD is refused."""
    good = tiny_checkpoint(2)
    broken = tmp_path / "broken"
    if bad != "missing":
        shutil.copytree(good, broken)
        (broken / "state.json").write_text((broken / "state.json").read_text()[:50])
    drawn = []
    monkeypatch.setattr(ev, "draw", lambda *a, **k: drawn.append(1))
    monkeypatch.setattr(ev, "elbo_ppl", lambda *a, **k: drawn.append(1))
    _refused(capsys, ["evaluate", "--ckpt", good, broken, "--judge", ngram, "--steps", "1", "--n", "1",
                      "--out", tmp_path / "e.json"], "ckpt:", str(broken))
    assert drawn == [] and not (tmp_path / "e.json").exists()
