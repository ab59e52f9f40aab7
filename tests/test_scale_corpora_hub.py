"""Hub corpora with a stub of `datasets.load_dataset` (never the network): the script-dataset refusal of
datasets >= 4 (its real message, datasets/load.py) falls back to the parquet export, a pinned revision is
tried alone, every failure names its attempts, and OpenWebText streams into the block cache."""
import dataclasses

import datasets
import pytest

from scale.data import corpora
from scale.data.blocks import load_blocks
from scale.data.corpora import PARQUET_EXPORT, get_corpus, lm1b_detokenize, split_slice

SCRIPT_ERROR = RuntimeError("Dataset scripts are no longer supported, but found lm1b.py")
TEXTS = [f"document {i} says it 's here ." for i in range(30)]


def _stub(monkeypatch, outcome):
    """load_dataset -> outcome(revision, kwargs) (a dataset, or an exception to raise); records the calls."""
    calls = []

    def load_dataset(path, name=None, split=None, revision=None, streaming=False, **kw):
        calls.append((path, split, revision, streaming))
        result = outcome(revision, split)
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_script_dataset_falls_back_to_the_parquet_export(monkeypatch):
    table = datasets.Dataset.from_dict({"text": TEXTS})
    calls = _stub(monkeypatch, lambda rev, split: table if rev == PARQUET_EXPORT else SCRIPT_ERROR)
    corpus = get_corpus("lm1b", "validation")
    assert [c[2] for c in calls] == [None, PARQUET_EXPORT] and calls[0][1] == "test"
    assert list(corpus.documents(28)) == [lm1b_detokenize(t) for t in TEXTS[28:]]
    assert corpus.num_docs == 30 and PARQUET_EXPORT in corpus.fingerprint


def test_both_attempts_failing_names_both(monkeypatch):
    calls = _stub(monkeypatch, lambda rev, split: SCRIPT_ERROR if rev is None else ConnectionError("no route to hub"))
    with pytest.raises(ValueError) as err:
        get_corpus("someone/scripted", "train")
    msg = str(err.value)
    assert len(calls) == 2 and "tried 2 revision(s)" in msg
    assert "revision as published: RuntimeError: Dataset scripts are no longer supported" in msg
    assert f"revision {PARQUET_EXPORT}: ConnectionError: no route to hub" in msg


def test_other_errors_are_not_retried_and_a_pinned_revision_is_tried_alone(monkeypatch):
    calls = _stub(monkeypatch, lambda rev, split: FileNotFoundError("no such dataset"))
    with pytest.raises(ValueError, match="tried 1 revision"):
        get_corpus("someone/missing", "train")
    assert len(calls) == 1
    table = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": TEXTS})})
    calls = _stub(monkeypatch, lambda rev, split: table if rev == "v1.0" else SCRIPT_ERROR)
    assert get_corpus("someone/pinned", "train", revision="v1.0").num_docs == 30
    assert [c[2] for c in calls] == ["v1.0"]


def test_split_expressions_of_a_stream():
    assert split_slice("train[:-100000]", 8_013_769) == ("train", 0, 7_913_769)
    assert split_slice("train[-100000:]", 8_013_769) == ("train", 7_913_769, 8_013_769)
    assert split_slice("test", 12) == ("test", 0, 12)
    with pytest.raises(ValueError, match="document count"):
        split_slice("train[-5:]", None)


def test_openwebtext_streams_into_the_block_cache(monkeypatch, token_cache):
    """Streaming: load_dataset(streaming=True) of the whole split, no document count known; the training
    head read from the start up to the tail, the validation tail from the shard (file) where it begins,
    so the shards before it are never read."""
    docs = [" ".join(f"word{i}x{j}" for j in range(40)) for i in range(30)]
    opened = []

    def gen(shards):
        for lo, hi in shards:
            opened.append(lo)
            yield from ({"text": d} for d in docs[lo:hi])

    stream = datasets.IterableDataset.from_generator(gen, gen_kwargs={"shards": [(0, 10), (10, 20), (20, 30)]})
    calls = _stub(monkeypatch, lambda rev, split: stream)
    monkeypatch.setitem(corpora.REGISTERED, "openwebtext", dataclasses.replace(
        corpora.REGISTERED["openwebtext"], splits={"train": "train[:-14]", "validation": "train[-14:]"}))
    train, val = get_corpus("openwebtext", "train"), get_corpus("openwebtext", "validation")
    assert all(c[3] for c in calls) and {c[1] for c in calls} == {"train"}
    assert opened == []  # building the corpus reads nothing (a cache hit must not)
    assert list(train.documents()) == docs[:16] and list(train.documents(12)) == docs[12:16]
    opened.clear()
    assert list(val.documents()) == docs[16:] and val.num_docs == 14
    assert train.num_docs is None  # no count recorded anywhere: the progress bar runs without a total
    assert 0 not in opened  # the first shard lies wholly before the tail
    assert list(val.documents(5)) == docs[21:]
    blocks = load_blocks("openwebtext", "validation", tokenizer="gpt2", length=32, progress=False)
    assert blocks.meta["num_docs"] == 14 and len(blocks) > 0


def test_data_revision_option_pins_the_revision(monkeypatch, tmp_path, capsys, token_cache):
    from scale.cli import main

    calls = _stub(monkeypatch, lambda rev, split: FileNotFoundError(f"no revision {rev}"))
    assert main(["train", "--config", "tiny-cpu", "--set", "data.dataset=someone/texts", "--data-revision", "v2",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("data: dataset 'someone/texts'") and "tried 1 revision(s): revision v2:" in err
    assert [c[2] for c in calls] == ["v2"]
