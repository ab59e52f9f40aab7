"""text8's rule and the two text8 corpora (scale.data.text8): text8-wiki on the offline dump, the real text8
on a small archive of the same form in a temporary cache (offline; the network is never reached)."""
import io
import random
import re
import urllib.error
import zipfile

import pytest

from scale.data import text8
from scale.data.bpe import train_bpe
from scale.data.corpora import SPLITS, get_corpus, split_of, wiki_articles, wiki_corpus
from scale.data.text8 import text8_documents, text8_normalize
from scale.data.tokenizers import load_tokenizer

TEXT8_LINE = re.compile(r"[a-z]+( [a-z]+)*")  # letters, single spaces, none at either end


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("Route 66", "route six six"),
    ("1984", "one nine eight four"),
    ("a2b", "a two b"),
    ("x0", "x zero"),
    ("Café naïve Ångström", "caf na ve ngstr m"),
    ("don't stop", "don t stop"),
    ("line one\nline two\t\ttabs\r\n", "line one line two tabs"),
    ("  many     spaces  ", "many spaces"),
    ("e-mail: a@b.org (c) [d]", "e mail a b org c d"),
    ("!!! 42 ???", "four two"),
    ("", ""),
    ("?!", ""),
])
def test_text8_normalize_hand_examples(raw, expected):
    assert text8_normalize(raw) == expected


def test_text8_documents_cut_at_the_first_space_after_each_stretch(monkeypatch):
    monkeypatch.setattr(text8, "DOC_CHARS", 3)
    # from 0: the first space at or after index 3 is index 5; from 6: index 10; from 11: none
    assert text8_documents("ab cd efgh ij") == ["ab cd", "efgh", "ij"]
    assert text8_documents("abc def") == ["abc", "def"]  # a space exactly at the stretch's end
    assert text8_documents("") == []


# ---------------------------------------------------------------- text8-wiki (offline)

def test_text8_wiki_is_the_wiki_split_under_the_rule():
    counts = {}
    for split in SPLITS:
        corpus = get_corpus("text8-wiki", split)
        docs = list(corpus.documents())
        assert docs and all(TEXT8_LINE.fullmatch(d) for d in docs)
        # split by document index exactly as the wikipedia corpus: article i goes to split_of(i)
        assert docs == [text8_normalize(a) for i, a in enumerate(wiki_articles()) if split_of(i) == split]
        assert docs == [text8_normalize(d) for d in get_corpus("wikipedia", split).documents()]
        assert corpus.num_docs == len(docs) and list(corpus.documents(3)) == docs[3:]
        again = get_corpus("text8-wiki", split)
        assert again.fingerprint == corpus.fingerprint and list(again.documents()) == docs
        counts[split] = sum(map(len, docs))
    print("text8-wiki characters per split:", counts)
    assert docs[0].startswith("the academy awards are the oldest awards ceremony")


def test_text8_wiki_fingerprint_names_the_rule():
    ours = get_corpus("text8-wiki", "train").fingerprint
    assert text8.TEXT8_RULE in ours and ours != get_corpus("wikipedia", "train").fingerprint
    other_rule = wiki_corpus("train", "text8-wiki", text8_normalize, "text8-rule/2").fingerprint
    assert other_rule != ours


def test_a_byte_tokenizer_of_text8_wiki_is_one_token_per_character(tmp_path, monkeypatch):
    monkeypatch.setenv("IMDM_CACHE", str(tmp_path / "cache"))
    out = train_bpe(tmp_path / "bytes", data="text8-wiki", vocab_size=257)  # 256 bytes and eos, no merges
    tok = load_tokenizer(str(out))
    assert len(tok) == 257
    doc = next(get_corpus("text8-wiki", "validation").documents())
    ids = tok.encode(doc, add_special_tokens=False)
    assert len(ids) == len(doc) and tok.decode(ids) == doc
    per_char = {c: tok.encode(c, add_special_tokens=False) for c in set(doc)}
    assert all(len(v) == 1 for v in per_char.values())
    assert ids == [per_char[c][0] for c in doc] and len({v[0] for v in per_char.values()}) == len(per_char)


# ---------------------------------------------------------------- the real text8, on a small archive

def _text(n: int, seed: int = 0) -> str:
    """n characters of text8's form: a leading space, then words of a-z separated by single spaces."""
    rng = random.Random(seed)
    text = ""
    while len(text) < n:
        text += " " + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 12)))
    return text[:n]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def small_text8(tmp_path, monkeypatch):
    """A cache in tmp_path, the split sizes scaled down to 1 800 / 100 / 100 characters and documents to
    50; any attempt to reach the network fails the test. Returns the archive's path."""
    monkeypatch.setenv("IMDM_CACHE", str(tmp_path / "cache"))
    for name, value in {"TRAIN_CHARS": 1800, "VALIDATION_CHARS": 100, "HELDOUT_CHARS": 100, "DOC_CHARS": 50}.items():
        monkeypatch.setattr(text8, name, value)

    def no_network(*args, **kwargs):
        pytest.fail("text8 tried to reach the network")
    monkeypatch.setattr(text8.urllib.request, "urlopen", no_network)
    path = tmp_path / "cache" / "text8" / "text8.zip"
    path.parent.mkdir(parents=True)
    return path


def test_text8_splits_as_mdlm_and_documents_that_split_no_word(small_text8):
    text = _text(2000)
    small_text8.write_bytes(_zip({"text8": text.encode()}))
    streams = {"train": text[:1800], "validation": text[1800:1900], "heldout": text[1900:]}
    for split, stream in streams.items():
        corpus = get_corpus("text8", split)
        docs = list(corpus.documents())
        assert " ".join(docs) == stream and corpus.num_docs == len(docs)
        for doc in docs[:-1]:  # each cut is the first space at or after 50 characters
            assert len(doc) >= 50 and " " not in doc[50:]
        assert len(docs[-1]) <= 50 or " " not in docs[-1][50:]
        assert corpus.fingerprint.startswith("text8:") and corpus.fingerprint == get_corpus("text8", split).fingerprint
    assert len(list(get_corpus("text8", "train").documents())) > 20


@pytest.mark.parametrize("members, message", [
    ({"text8": b"a" * 1000, "extra": b"a" * 1000}, r"expected one member named 'text8', got \['text8', 'extra'\]"),
    ({"text9": b"a" * 2000}, r"expected one member named 'text8', got \['text9'\]"),
    ({"text8": b"a" * 1999}, "expected 'text8' of 2000 characters, got 1999"),
])
def test_text8_archives_of_the_wrong_form_are_refused(small_text8, members, message):
    small_text8.write_bytes(_zip(members))
    with pytest.raises(ValueError, match=rf"data: {re.escape(str(small_text8))}: {message}"):
        get_corpus("text8", "train")


@pytest.mark.parametrize("bad, byte", [(b"A", "b'A'"), (b"\n", r"b'\\n'"), (b"7", "b'7'"), (b"\xc3", r"b'\\xc3'")])
def test_text8_bytes_outside_a_z_and_space_are_refused(small_text8, bad, byte):
    raw = bytearray(_text(2000).encode())
    raw[1234:1235] = bad
    small_text8.write_bytes(_zip({"text8": bytes(raw)}))
    corpus = get_corpus("text8", "validation")  # the archive's directory is fine; its text is read on use
    with pytest.raises(ValueError, match=rf"{re.escape(str(small_text8))}: expected only the characters a-z "
                                         rf"and space, got {byte} at byte 1234"):
        list(corpus.documents())


def test_a_file_that_is_no_zip_is_refused(small_text8):
    small_text8.write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="expected the zip archive text8.zip, got BadZipFile"):
        get_corpus("text8", "heldout")


def test_text8_offline_and_absent_is_refused_without_the_network(small_text8):
    small_text8.parent.rmdir()
    where = re.escape(str(small_text8))
    with pytest.raises(ValueError, match=rf"^data: text8 is not in the cache .* put it at {where}"):
        get_corpus("text8", "train")
    with pytest.raises(ValueError, match=r"split: expected one of"):  # checked before the archive is looked up
        get_corpus("text8", "test")


def test_text8_is_downloaded_once_into_the_cache(small_text8, monkeypatch):
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    archive, calls = _zip({"text8": _text(2000, seed=1).encode()}), []

    def serve(url, timeout):
        calls.append(url)
        return io.BytesIO(archive)
    monkeypatch.setattr(text8.urllib.request, "urlopen", serve)
    docs = list(get_corpus("text8", "validation").documents())
    assert calls == [text8.TEXT8_URL] and small_text8.read_bytes() == archive
    assert " ".join(docs) == _text(2000, seed=1)[1800:1900]
    get_corpus("text8", "train")
    assert calls == [text8.TEXT8_URL]  # the cached archive is used
    assert sorted(p.name for p in small_text8.parent.iterdir()) == ["text8.zip"]  # no staging file left


@pytest.mark.parametrize("answer, message", [
    (urllib.error.URLError("no route to host"), r"downloading text8 from .* failed \(URLError"),
    (b"<html>moved</html>", "expected the zip archive text8.zip"),
])
def test_a_failed_download_is_refused_and_leaves_nothing(small_text8, monkeypatch, answer, message):
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)

    def serve(url, timeout):
        if isinstance(answer, Exception):
            raise answer
        return io.BytesIO(answer)
    monkeypatch.setattr(text8.urllib.request, "urlopen", serve)
    with pytest.raises(ValueError, match=rf"data: .*{message}.*put it at {re.escape(str(small_text8))}"):
        get_corpus("text8", "train")
    assert list(small_text8.parent.iterdir()) == []
