"""Tokenizers, corpora and token blocks of the scale module (offline; cache in a session tmp dir)."""
import hashlib
import json
import threading
import time
import types

import numpy as np
import pytest
import torch

from scale.data import blocks as data
from scale.data import corpora
from scale.data.blocks import (
    BatchStream,
    DataPosition,
    TokenBlocks,
    build_blocks,
    eval_indices,
    load_blocks,
    wrap_group,
)
from scale.data.corpora import Corpus, get_corpus, lm1b_detokenize, split_of
from scale.data.tokenizers import ASSETS, load_tokenizer, vocab_layout, wrap_specials

ASSET_SHA256 = {
    "gpt2/vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "gpt2/merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "bert-base-uncased/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}


@pytest.fixture(autouse=True)
def offline_cache(token_cache, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)  # this process builds: no torchrun rank waits


@pytest.fixture(scope="session")
def wiki_val_bert(token_cache):
    return load_blocks("wikipedia", "validation", tokenizer="bert-base-uncased", length=128, progress=False)


def _write_docs(folder, n, words=30):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(f"document {i} sentence {j} about topic {i % 7}." for j in range(words // 6 + 1))
        (folder / f"doc{i:03d}.txt").write_text(body)
    return folder


# ---------------------------------------------------------------- tokenizers

def test_vendored_assets_are_byte_identical():
    for rel, digest in ASSET_SHA256.items():
        assert hashlib.sha256((ASSETS / rel).read_bytes()).hexdigest() == digest, rel
    vocab = (ASSETS / "bert-base-uncased/vocab.txt").read_bytes()
    assert hashlib.md5(vocab).hexdigest() == "64800d5d8528ce344256daf115d4965e"


def test_gpt2_tokenizer_known_ids_and_layout():
    tok = load_tokenizer("gpt2")
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.encode("The quick brown fox") == [464, 2068, 7586, 21831]
    layout = vocab_layout(tok)
    assert (layout.num_classes, layout.mask_id, layout.eos_id) == (50258, 50257, 50256)
    assert wrap_specials(tok) == (50256, 50256)


def test_bert_tokenizer_known_ids_layout_and_mdlm_separator():
    tok = load_tokenizer("bert-base-uncased")
    assert len(tok) == 30522
    assert tok("Hello world")["input_ids"] == [101, 7592, 2088, 102]
    layout = vocab_layout(tok)
    assert (layout.num_classes, layout.mask_id, layout.eos_id) == (30522, 103, 102)
    # MDLM reads ids as encode(token)[0]; BERT's encode prepends [CLS], hence [CLS] as separator.
    assert tok.encode("[SEP]") == [101, 102, 102]
    assert wrap_specials(tok) == (101, 101)
    # transformers 4.49's BertTokenizer cleaned up spaces on decode; the reference text has "don't".
    assert tok.decode(tok.encode("I don't know.", add_special_tokens=False)) == "i don't know."


def test_tokenizer_fallback_offline_and_on_hub_error(monkeypatch):
    assert load_tokenizer("gpt2-large")("Hello world")["input_ids"] == [15496, 995]
    with pytest.raises(ValueError, match="name: tokenizer 'no-such/tokenizer'"):
        load_tokenizer("no-such/tokenizer")
    # Online but the hub fails: any error falls back to the vendored files.
    import transformers
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def broken(*args, **kwargs):
        if "assets" in str(args[0]):
            return original(*args, **kwargs)
        raise OSError("connection refused")

    original = transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", broken)
    assert load_tokenizer("bert-base-uncased").mask_token_id == 103


# ---------------------------------------------------------------- corpora

def test_lm1b_detokenizer_hand_examples():
    assert lm1b_detokenize("he 's here .") == "he's here."
    assert lm1b_detokenize("yes , really ? ( no ) ; ok : fine !") == "yes, really? (no); ok: fine!"
    assert lm1b_detokenize('a " quote " and $ 5 at http : / / x') == 'a "quote" and $5 at http://x'


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(ValueError, match="data: dataset 'lm1b'.*HF_DATASETS_OFFLINE"):
        get_corpus("lm1b", "validation")
    with pytest.raises(ValueError, match="data: dataset 'openwebtext'"):
        get_corpus("openwebtext", "train")
    with pytest.raises(ValueError, match="data: path './missing.txt' does not exist"):
        get_corpus("./missing.txt", "train")
    with pytest.raises(ValueError, match="split: expected one of"):
        get_corpus("wikipedia", "test")


def test_registered_and_generic_hub_corpora_with_a_stand_in_loader(monkeypatch):
    import datasets
    calls = []

    def fake_load(hub_id, config, split_expr, revision="", streaming=False):
        calls.append((hub_id, config, split_expr) + (("stream",) if streaming else ()))
        rows = {"text": [f"{hub_id} row {i} , done ." for i in range(3)]}
        if split_expr is None:  # a generic dataset without a "validation" split
            return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                                         "test": datasets.Dataset.from_dict(rows)}), revision
        if streaming:
            return datasets.Dataset.from_dict(rows).to_iterable_dataset(), revision
        return datasets.Dataset.from_dict(rows), revision

    monkeypatch.setattr(corpora, "_load_hub", fake_load)
    lm1b = get_corpus("lm1b", "validation")
    assert calls[-1] == ("lm1b", None, "test")  # MDLM validates LM1B on its test split
    assert list(lm1b.documents(1)) == ["lm1b row 1, done.", "lm1b row 2, done."]  # detokenized
    get_corpus("openwebtext", "train")
    assert calls[-1] == ("openwebtext", None, "train", "stream")  # streamed, sliced as train[:-100000]
    other = get_corpus("someone/texts", "validation", hf_config="en")
    assert calls[-1] == ("someone/texts", "en", None) and other.num_docs == 3
    assert next(other.documents()) == "someone/texts row 0 , done ."  # no detokenizer
    with pytest.raises(ValueError, match="text_column: 'body' is not a column"):
        get_corpus("someone/texts", "train", text_column="body")


def test_wikipedia_corpus_splits_are_disjoint_real_articles():
    splits = {s: list(get_corpus("wikipedia", s).documents()) for s in corpora.SPLITS}
    assert [len(splits[s]) for s in corpora.SPLITS] == [86, 10, 10]
    every = [d for s in corpora.SPLITS for d in splits[s]]
    assert len(set(every)) == 106  # no article twice, redirects dropped
    assert not any(d.lower().startswith("#redirect") for d in every)
    assert splits["train"][0].startswith("Anarchism")
    assert "''" not in splits["train"][0]  # wiki italics markup removed
    assert [split_of(i) for i in range(10)] == ["train"] * 8 + ["validation", "heldout"]


def test_local_folder_file_and_jsonl_corpora(tmp_path):
    folder = _write_docs(tmp_path / "docs", 20)
    train = list(get_corpus(str(folder), "train").documents())
    held = list(get_corpus(str(folder), "heldout").documents())
    assert len(train) == 16 and len(held) == 2 and held[0].startswith("document 9 ")
    text = tmp_path / "one.txt"
    text.write_text("\n\n".join(f"paragraph {i}." for i in range(10)))
    assert list(get_corpus(str(text), "validation").documents()) == ["paragraph 8."]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"body": f"row {i}"}) for i in range(10)))
    assert list(get_corpus(str(rows), "heldout", text_column="body").documents()) == ["row 9"]
    few = _write_docs(tmp_path / "few", 3)
    with pytest.raises(ValueError, match="none falls in split 'validation'"):
        get_corpus(str(few), "validation")


# ---------------------------------------------------------------- wrapping and the cache

def test_wrap_group_hand_example():
    blocks = wrap_group([[1, 2, 3], [4, 5]], length=5, bos=9, eos=8)
    # stream 1 2 3 8 4 5 8 -> pieces of 3: [1 2 3] [8 4 5], remainder [8] dropped
    assert blocks.tolist() == [[9, 1, 2, 3, 8], [9, 8, 4, 5, 8]]
    assert wrap_group([[1]], length=5, bos=9, eos=8).shape == (0, 5)
    with pytest.raises(ValueError, match="length: expected an integer >= 3"):
        wrap_group([[1]], length=2, bos=0, eos=0)


def test_wikipedia_blocks_equal_documents_tokenized_one_by_one(wiki_val_bert):
    blocks = wiki_val_bert
    tok = load_tokenizer("bert-base-uncased")
    assert blocks.length == 128 and (blocks.num_classes, blocks.mask_id) == (30522, 103)
    arr = blocks[:]
    assert arr.dtype == torch.int64 and (arr[:, 0] == 101).all() and (arr[:, -1] == 101).all()
    stream = []
    for doc in get_corpus("wikipedia", "validation").documents():
        stream += tok.encode(doc, add_special_tokens=False) + [101]
    assert len(blocks) == len(stream) // 126 and blocks.meta["doc_tokens"] == len(stream)
    assert arr[:, 1:-1].reshape(-1).tolist() == stream[:len(blocks) * 126]


def test_cache_is_reused_and_keyed(wiki_val_bert, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a finished cache")

    monkeypatch.setattr(data, "build_blocks", no_build)
    again = load_blocks("wikipedia", "validation", tokenizer="bert-base-uncased", length=128)
    assert again.directory == wiki_val_bert.directory
    with pytest.raises(AssertionError, match="rebuilt"):
        load_blocks("wikipedia", "validation", tokenizer="bert-base-uncased", length=64)


class _Killed(Exception):
    pass


def _corpus(docs, die_at=None, starts=None):
    def gen(start):
        if starts is not None:
            starts.append(start)
        for i in range(start, len(docs)):
            if i == die_at:
                raise _Killed
            yield docs[i]
    return Corpus("toy", "train", "toy-v1", gen, len(docs))


def test_killed_build_resumes_to_the_same_blocks(tmp_path):
    tok = load_tokenizer("gpt2")
    docs = [f"Document number {i} says {'word ' * (i % 5 + 3)}." for i in range(23)]
    meta = {"length": 8, "tokenizer": "gpt2", **vocab_layout(tok).__dict__}
    kw = dict(docs_per_group=2, groups_per_chunk=2, progress=False)
    build_blocks(_corpus(docs), tok, 8, tmp_path / "full", dict(meta), **kw)
    with pytest.raises(_Killed):
        build_blocks(_corpus(docs, die_at=9), tok, 8, tmp_path / "resumed", dict(meta), **kw)
    assert not (tmp_path / "resumed" / "meta.json").exists()
    assert json.loads((tmp_path / "resumed" / "progress.json").read_text())["docs"] == 8
    starts = []
    build_blocks(_corpus(docs, starts=starts), tok, 8, tmp_path / "resumed", dict(meta), **kw)
    assert starts == [8]  # the first two chunks were not tokenized again
    full, resumed = TokenBlocks(tmp_path / "full"), TokenBlocks(tmp_path / "resumed")
    assert torch.equal(full[:], resumed[:]) and len(full) > 0
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["blocks.npy", "meta.json"]


def test_other_ranks_wait_for_the_builder(tmp_path, monkeypatch):
    folder = _write_docs(tmp_path / "ddp", 12)
    result, waiting = {}, threading.Event()
    original_wait = data._wait_for

    def wait_for(path, poll_s=1.0):
        waiting.set()
        original_wait(path, poll_s=0.05)

    monkeypatch.setattr(data, "_wait_for", wait_for)
    monkeypatch.setenv("LOCAL_RANK", "1")
    waiter = threading.Thread(target=lambda: result.update(
        blocks=load_blocks(str(folder), "train", tokenizer="gpt2", length=16, progress=False)))
    waiter.start()
    assert waiting.wait(timeout=60)
    time.sleep(0.2)
    assert waiter.is_alive() and "blocks" not in result  # rank 1 neither builds nor returns
    monkeypatch.setenv("LOCAL_RANK", "0")
    built = load_blocks(str(folder), "train", tokenizer="gpt2", length=16, progress=False)
    waiter.join(timeout=10)
    assert torch.equal(result["blocks"][:], built[:])


def test_a_second_builder_waits_for_the_lock_then_reuses_the_cache(tmp_path, monkeypatch):
    import fcntl
    folder = _write_docs(tmp_path / "lock", 12)
    monkeypatch.setenv("IMDM_CACHE", str(tmp_path / "first"))
    name = load_blocks(str(folder), "train", tokenizer="gpt2", length=16, progress=False).directory.name
    monkeypatch.setenv("IMDM_CACHE", str(tmp_path / "second"))
    target = tmp_path / "second" / "blocks" / name
    target.mkdir(parents=True)
    result, locking = {}, threading.Event()

    def flock(f, op):
        locking.set()
        fcntl.flock(f, op)

    monkeypatch.setattr(data, "fcntl", types.SimpleNamespace(LOCK_EX=fcntl.LOCK_EX, flock=flock))
    with open(target / "build.lock", "a") as held:  # another process is building this cache
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: result.update(
            blocks=load_blocks(str(folder), "train", tokenizer="gpt2", length=16, progress=False)))
        worker.start()
        assert locking.wait(timeout=60)
        time.sleep(0.3)
        assert worker.is_alive() and not (target / "progress.json").exists()
    worker.join(timeout=30)
    assert torch.equal(result["blocks"][:], TokenBlocks(tmp_path / "first" / "blocks" / name)[:])


def test_token_blocks_indexing_and_errors(wiki_val_bert):
    b = wiki_val_bert
    batch = b.get_batch([5, 0, 5])
    assert torch.equal(batch[0], batch[2]) and torch.equal(batch[1], b[0])
    assert torch.equal(b[torch.tensor([3, 1])], b.get_batch(np.array([3, 1])))
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, "):
        b.get_batch([len(b)])
    with pytest.raises(ValueError, match="indices: expected a 1-D sequence of integers"):
        b.get_batch([[0]])


# ---------------------------------------------------------------- batch order

def test_batch_stream_epoch_is_a_permutation_without_tail():
    s = BatchStream(10, 4, seed=3)
    first = [s.next_global_indices() for _ in range(2)]
    seen = np.concatenate(first)
    assert len(set(seen.tolist())) == 8 and seen.min() >= 0 and seen.max() < 10
    assert s.position == DataPosition(0, 8)
    s.next_global_indices()  # only 2 left: skipped, epoch 1 starts
    assert s.position == DataPosition(1, 4)
    assert not np.array_equal(s.permutation(0), s.permutation(1))


def test_batch_stream_ranks_concatenate_to_one_process():
    one = BatchStream(50, 12, seed=7)
    ranks = [BatchStream(50, 12, seed=7, rank=r, world_size=3) for r in range(3)]
    for _ in range(9):  # crosses two epoch boundaries
        assert np.array_equal(one.next_indices(), np.concatenate([r.next_indices() for r in ranks]))


def test_batch_stream_resumes_exactly():
    ref = BatchStream(30, 4, seed=1)
    expected = [ref.next_indices() for _ in range(12)]
    run = BatchStream(30, 4, seed=1)
    got = [run.next_indices() for _ in range(5)]
    state = json.loads(json.dumps(run.state_dict()))  # as saved in a checkpoint
    resumed = BatchStream(30, 4, seed=1)
    resumed.load_state_dict(state)
    got += [resumed.next_indices() for _ in range(7)]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=False))
    with pytest.raises(ValueError, match="state: seed"):
        BatchStream(30, 4, seed=2).load_state_dict(state)


def test_batch_stream_and_eval_indices_bad_input():
    with pytest.raises(ValueError, match="global_batch: expected a multiple of world_size=4"):
        BatchStream(100, 6, world_size=4)
    with pytest.raises(ValueError, match="global_batch: expected at most the 5 blocks"):
        BatchStream(5, 8)
    with pytest.raises(ValueError, match="rank: expected an integer in"):
        BatchStream(10, 2, rank=2, world_size=2)
    parts = [list(eval_indices(10, 4, rank=r, world_size=2)) for r in range(2)]
    assert np.concatenate([np.concatenate(p) for p in zip(*parts, strict=False)]).tolist() == list(range(10))
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1"):
        list(eval_indices(10, 0))
