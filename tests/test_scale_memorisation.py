"""Every sample stored (scale.evaluation.samples_file) and the memorisation checks of `python -m scale
memorisation`: the longest reproduced training run against a brute-force search of its definition, hash
collisions never reporting a run that is not there, the nearest stored completion against a direct count,
and damaged or mismatched inputs refused with one line naming the argument."""
import gzip
import json

import numpy as np
import pytest
import torch
from refusals import one_line, write_coupling

import scale.evaluation.reproduction as reproduction
from scale.cli import main
from scale.data.blocks import load_blocks
from scale.evaluation.memorisation import nearest_hamming
from scale.evaluation.reproduction import longest_runs
from scale.evaluation.samples_file import SampleCell, read_samples, write_samples
from scale.training.coupling import FORMAT, Coupling

LENGTH, VOCAB, MASK = 16, 30522, 103


def brute_longest(seq, blocks) -> int:
    """The definition: the longest k with seq[i:i+k] == block[j:j+k] for some block, i, j."""
    best = 0
    for block in blocks:
        for i in range(len(seq)):
            for j in range(len(block)):
                k = 0
                while i + k < len(seq) and j + k < len(block) and seq[i + k] == block[j + k]:
                    k += 1
                best = max(best, k)
    return best


def _cells(rng, shapes=((3, 5), (2, 5))):
    return [SampleCell(f"runs/{k}", f"m{k}", k + 1, 7, rng.integers(0, 1000, shape), [f"text {k} {i}"
                                                                                        for i in range(shape[0])])
            for k, shape in enumerate(shapes)]


# ---- the samples file ------------------------------------------------------------------------------
def test_samples_file_round_trip(tmp_path):
    cells = _cells(np.random.default_rng(0))
    path = write_samples(tmp_path / "s.jsonl.gz", cells)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert len(lines) == 2 and set(json.loads(lines[0])) == {"checkpoint", "label", "steps", "seed", "ids", "texts"}
    back = read_samples(path)
    for a, b in zip(cells, back, strict=True):
        assert (a.checkpoint, a.label, a.steps, a.seed, a.texts) == (b.checkpoint, b.label, b.steps, b.seed, b.texts)
        assert np.array_equal(a.ids, b.ids) and b.ids.dtype == np.int64
    assert write_samples(tmp_path / "t.jsonl.gz", cells).read_bytes() == path.read_bytes()  # same samples, same bytes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def _line(**change):
    raw = {"checkpoint": "runs/a", "label": "a", "steps": 2, "seed": 0, "ids": [[1, 2, 3], [4, 5, 6]],
           "texts": ["x", "y"], **change}
    return json.dumps(raw)


DAMAGE = {
    "missing": (None, "file is missing"),
    "not gzip": (b"plain text\n", "gzip"),
    "cut short": (gzip.compress((_line() + "\n").encode())[:-12], "gzip"),
    "empty": (gzip.compress(b""), "none"),
    "not JSON": (gzip.compress(b"{not json\n"), "line 1: expected one JSON object"),
    "float id": (gzip.compress((_line(ids=[[1, 2.5, 3], [4, 5, 6]]) + "\n").encode()), "line 1: ids[0]"),
    "bool id": (gzip.compress((_line(ids=[[1, 2, 3], [4, True, 6]]) + "\n").encode()), "line 1: ids[1]"),
    "negative id": (gzip.compress((_line(ids=[[1, -2, 3], [4, 5, 6]]) + "\n").encode()), "line 1: ids[0]"),
    "ragged": (gzip.compress((_line(ids=[[1, 2, 3], [4, 5]]) + "\n").encode()), "line 1: ids[1]: expected 3"),
    "texts": (gzip.compress((_line(texts=["x"]) + "\n").encode()), "line 1: texts: expected one text per row"),
    "steps": (gzip.compress((_line() + "\n" + _line(steps=0) + "\n").encode()), "line 2: steps"),
    "no seed": (gzip.compress((json.dumps({k: v for k, v in json.loads(_line()).items() if k != "seed"}) + "\n")
                              .encode()), "line 1: seed"),
    "twice": (gzip.compress((_line() + "\n" + _line() + "\n").encode()), "line 2: steps: expected one line"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_samples_file_is_refused_naming_file_line_and_field(tmp_path, case):
    content, words = DAMAGE[case]
    path = tmp_path / "s.jsonl.gz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        read_samples(path)
    assert str(err.value).startswith(f"--samples: {path}") and words in str(err.value), str(err.value)


# ---- the longest reproduced run --------------------------------------------------------------------
def test_longest_run_by_hand():
    blocks = np.array([[5, 1, 2, 3, 4, 9], [7, 7, 8, 1, 2, 6]])
    seqs = np.array([[0, 1, 2, 3, 4, 0],    # 1 2 3 4 inside block 0: 4
                     [0, 0, 0, 0, 0, 0],    # no token of any block: 0
                     [4, 9, 7, 7, 8, 1],    # 4 9 ends block 0, 7 7 8 1 starts block 1: 4, not 6
                     [5, 1, 2, 3, 4, 9]])   # a whole block: 6
    assert longest_runs(seqs, lambda: [blocks], 6).tolist() == [4, 0, 4, 6]


def test_longest_run_matches_its_definition_on_random_cases():
    rng = np.random.default_rng(1)
    for _ in range(40):
        vocab, L, LB = int(rng.integers(2, 6)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
        blocks = rng.integers(0, vocab, (int(rng.integers(1, 8)), LB))
        seqs = rng.integers(0, vocab, (int(rng.integers(1, 9)), L))
        got = longest_runs(seqs, lambda b=blocks: [b[:2], b[2:]], LB)  # two chunks: runs do not span them
        assert got.tolist() == [brute_longest(s.tolist(), blocks.tolist()) for s in seqs]


@pytest.mark.parametrize("weak", [lambda P, n: np.zeros((P.shape[0], P.shape[1] - n), dtype=np.uint64),
                                  lambda P, n: (P[:, n:] - P[:, :P.shape[1] - n]) % np.uint64(3)])
def test_hash_collisions_never_report_a_run_that_is_not_there(monkeypatch, weak):
    """With a hash that collides all the time, every reported run is still a real one."""
    rng = np.random.default_rng(2)
    monkeypatch.setattr(reproduction, "window_hashes", weak)
    monkeypatch.setattr(reproduction, "prefix_hashes", lambda t: np.concatenate(
        [np.zeros((len(t), 1), dtype=np.uint64), np.cumsum(t.astype(np.uint64), axis=1)], axis=1))
    blocks = rng.integers(0, 4, (6, 10))
    seqs = rng.integers(0, 4, (8, 9))
    seqs[0] = blocks[3, 1:]
    got = longest_runs(seqs, lambda: [blocks], 10)
    truth = [brute_longest(s.tolist(), blocks.tolist()) for s in seqs]
    assert all(g <= t for g, t in zip(got.tolist(), truth, strict=True)) and got[0] == 9


# ---- the nearest stored completion -----------------------------------------------------------------
def test_nearest_hamming_by_hand():
    rows = torch.tensor([[1, 2, 3, 4], [1, 2, 0, 0], [9, 9, 9, 9]])
    samples = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 0], [5, 5, 5, 5], [9, 9, 0, 0]])
    assert nearest_hamming(samples, rows).tolist() == [0.0, 0.25, 1.0, 0.5]
    with pytest.raises(ValueError, match="rows: expected sequences of the samples' length 4"):
        nearest_hamming(samples, rows[:, :3])


# ---- the command -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memo") / "corpus"
    folder.mkdir()
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()
    rng = np.random.default_rng(3)
    for i in range(20):
        (folder / f"{i:02d}.txt").write_text(" ".join(rng.choice(words, 60)) + ".")
    return folder


def _setup(tmp_path, corpus, token_cache):
    train = load_blocks(str(corpus), "train", tokenizer="bert-base-uncased", length=LENGTH, progress=False)
    val = load_blocks(str(corpus), "validation", tokenizer="bert-base-uncased", length=LENGTH, progress=False)
    coupling = write_coupling(tmp_path / "coupling", {
        "format": FORMAT, "teacher": "t", "teacher_step": 3, "weights": "ema", "n": 6, "steps": 8, "fix_eps": False,
        "seed": 0, "shard_size": 4, "t_min": 1e-3, "length": LENGTH, "num_classes": VOCAB, "mask_id": MASK,
        "schedule": "loglinear", "labels": "rand", "tokenizer": "bert", "dataset": "wiki", "num_blocks": 50},
        (200, 1000), np.uint16)
    x_0 = Coupling(coupling).x_0
    rng = np.random.default_rng(4)
    a = np.array(train.blocks[:4], dtype=np.int64)
    a[1, 8:] = 5000  # half a training block, then a token of no block
    a[2] = rng.integers(2000, 3000, LENGTH)
    a[3] = np.concatenate([np.array(train.blocks[5, 3:11]), np.array(val.blocks[0, :8])])
    b = x_0[[3, 1, 0]].numpy().copy()
    b[1, :2] = 29999  # 2 of 16 positions off row 1: distance 1/8
    b[2, :] = 29999
    cells = [SampleCell("runs/a", "a", 1, 0, a, ["a"] * 4), SampleCell("runs/b", "b", 2, 0, b, ["b"] * 3)]
    return write_samples(tmp_path / "s.jsonl.gz", cells), coupling, train, val, cells, x_0


def test_memorisation_command_against_direct_counts(tmp_path, corpus, token_cache):
    samples, coupling, train, val, cells, x_0 = _setup(tmp_path, corpus, token_cache)
    out = tmp_path / "m.json"
    assert main(["memorisation", "--samples", str(samples), "--data", str(corpus), "--tokenizer", "bert-base-uncased",
                 "--coupling", f"b={coupling}", "--threshold", "8", "--reference", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    blocks = np.array(train.blocks).tolist()
    for cell, entry in zip(cells, result["cells"], strict=True):
        runs = [brute_longest(s, blocks) for s in cell.ids.tolist()]
        assert entry["train"]["per_sample_longest"] == runs
        assert entry["train"]["max_longest"] == max(runs) and entry["train"]["mean_longest"] == pytest.approx(
            np.mean(runs), abs=1e-12)
        assert entry["train"]["frac_at_least_threshold"] == pytest.approx(np.mean([r >= 8 for r in runs]))
        assert (entry["label"], entry["steps"], entry["n"], entry["length"]) == (cell.label, cell.steps, len(cell.ids),
                                                                                 LENGTH)
    assert result["cells"][0]["train"]["per_sample_longest"][0] == LENGTH  # a training block itself
    assert result["cells"][0]["train"]["per_sample_longest"][1] >= 8
    assert result["cells"][0]["coupling"] is None
    d = [min(np.mean(np.array(s) != np.array(r)) for r in x_0.tolist()) for s in cells[1].ids.tolist()]
    near = result["cells"][1]["coupling"]
    assert near["per_sample_distance"] == pytest.approx(d, abs=1e-15) and d[:2] == [0.0, 0.125]
    assert (near["frac_exact"], near["frac_near"], near["min_distance"], near["rows"]) == pytest.approx(
        (1 / 3, 1 / 3, 0.0, 6))  # 1/8 > 0.1
    ref = [brute_longest(s, blocks) for s in np.array(val.blocks[:3]).tolist()]
    assert result["reference"]["per_sample_longest"] == ref and result["reference"]["blocks"] == 3


@pytest.mark.parametrize("case", ["missing samples", "bad pair", "unknown label", "short coupling", "threshold",
                                  "near", "broken coupling"])
def test_memorisation_refusals_name_the_argument(tmp_path, corpus, token_cache, capsys, case):
    samples, coupling, *_ = _setup(tmp_path, corpus, token_cache)
    args = {"--samples": str(samples), "--coupling": f"b={coupling}", "--threshold": "8", "--near": "0.1"}
    name = {"missing samples": "--samples", "bad pair": "--coupling", "unknown label": "--coupling",
            "short coupling": "--coupling", "threshold": "--threshold", "near": "--near",
            "broken coupling": "--coupling"}[case]
    if case == "missing samples":
        args["--samples"] = str(tmp_path / "none.jsonl.gz")
    elif case == "bad pair":
        args["--coupling"] = str(coupling)
    elif case == "unknown label":
        args["--coupling"] = f"zzz={coupling}"
    elif case == "short coupling":
        meta = json.loads((coupling / "meta.json").read_text())
        short = write_coupling(tmp_path / "short", {**meta, "length": 8}, (200, 1000), np.uint16)
        args["--coupling"] = f"b={short}"
    elif case == "threshold":
        args["--threshold"] = "0"
    elif case == "near":
        args["--near"] = "2"
    else:
        (coupling / "shard-000001" / "x_0.npy").unlink()
    argv = ["memorisation", "--data", str(corpus), "--tokenizer", "bert-base-uncased", "--out",
            str(tmp_path / "m.json")]
    one_line(capsys, main, argv + [w for k, v in args.items() for w in (k, v)], [f"{name}:"])
    assert not (tmp_path / "m.json").exists()


# ---- evaluate --samples ----------------------------------------------------------------------------
def test_evaluate_stores_every_sample_as_drawn_and_as_the_judge_read_it(tmp_path, token_cache, tiny_checkpoint,
                                                                        tiny_ngram_judge):
    from scale.checkpoints.checkpoint import load_model
    from scale.data.tokenizers import load_tokenizer
    from scale.evaluation.metrics import decode_samples
    from scale.evaluation.samples import draw

    ckpt = tiny_checkpoint(2, std=0.05)
    samples = tmp_path / "out" / "samples.jsonl.gz"
    assert main(["evaluate", "--ckpt", str(ckpt), "--judge", str(tiny_ngram_judge), "--steps", "1,3", "--n", "5",
                 "--batch-size", "2", "--val-batches", "1", "--seed", "3", "--out", str(tmp_path / "e.json"),
                 "--no-plot", "--samples", str(samples)]) == 0
    cells = read_samples(samples)
    model, _ = load_model(ckpt)
    tok = load_tokenizer("bert-base-uncased")
    assert [(c.label, c.steps, c.seed, c.ids.shape) for c in cells] == [("run", 1, 3, (5, 32)), ("run", 3, 3, (5, 32))]
    for cell in cells:
        tokens, _, _ = draw(model, 5, cell.steps, seed=3, length=32, batch_size=2, device=torch.device("cpu"))
        assert np.array_equal(cell.ids, tokens.numpy()) and cell.texts == decode_samples(tokens, tok)
    entries = json.loads((tmp_path / "e.json").read_text())["entries"]
    assert [e["sample"] for e in entries] == [c.texts[0] for c in cells]


def test_evaluate_checks_the_samples_path_before_loading(tmp_path, capsys):
    (tmp_path / "FILE").write_text("")
    one_line(capsys, main, ["evaluate", "--ckpt", str(tmp_path / "none"), "--out", str(tmp_path / "e.json"),
                            "--samples", str(tmp_path / "FILE" / "s.jsonl.gz")], ["--samples:"])
