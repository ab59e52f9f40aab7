"""Text corpora: where documents come from, before tokenization.

A corpus is an ordered, re-iterable sequence of documents (strings) for one split. Names resolve in
this order: a registered name (`lm1b`, `openwebtext`, `wikipedia` = the default offline corpus, from
the Wikipedia dump inside the gensim wheel; `text8-wiki` and `text8`, scale.data.text8), an existing local
file or folder, then any Hugging Face dataset id with a text column.

Splits are "train", "validation" and, for the local corpora, "heldout" (text neither the model nor
its validation sees; used to train a judge). LM1B validates on its "test" split and OpenWebText on
its last 100 000 documents, as MDLM does. The gensim Wikipedia dump and local corpora split by
document index: i % 10 == 8 -> validation, i % 10 == 9 -> heldout, the rest -> train.
"""
from __future__ import annotations

import bz2
import functools
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scale.data.text8 import TEXT8_RULE, text8_normalize, text8_source

SPLITS = ("train", "validation", "heldout")
DEFAULT_CORPUS = "wikipedia"
CORPUS_ALIASES = {"wiki": "wikipedia", "owt": "openwebtext"}
READ_BATCH = 1000  # documents fetched per Arrow slice when iterating a Hugging Face dataset
# datasets >= 4 refuses script datasets (datasets/load.py: "Dataset scripts are no longer supported, but
# found X.py"); the Hub's automatic parquet export of such a dataset lives on this revision.
SCRIPT_ERROR = "Dataset scripts are no longer supported"
PARQUET_EXPORT = "refs/convert/parquet"

# LM1B ships pre-tokenized text ("it 's here ."); MDLM re-joins it before tokenizing. The rules
# apply in this order; each pair is (pattern, replacement).
_LM1B_RULES = (
    (r"http : / / ", "http://"),
    (r"https : / / ", "https://"),
    (r" '(\w+)", r"'\1"),
    (r" (\w+) \. ", r" \1. "),
    (r" (\w+) \.$", r" \1."),
    (r" \? ", "? "),
    (r" \?$", "?"),
    (r" ! ", "! "),
    (r" !$", "!"),
    (r" , ", ", "),
    (r" : ", ": "),
    (r" ; ", "; "),
    (r" / ", "/"),
    (r'" ([^"]+) "', r'"\1"'),
    (r"' ([^']+) '", r"'\1'"),
    (r"\( ([^()]+) \)", r"(\1)"),
    (r"\[ ([^\[\]]+) \]", r"[\1]"),
    (r"\$ ", "$"),
    (r"£ ", "£"),
)
_LM1B_COMPILED = tuple((re.compile(p), r) for p, r in _LM1B_RULES)


def lm1b_detokenize(text: str) -> str:
    """Undo LM1B's space-separated tokenization ("he 's ( here ) ." -> "he's (here)."), MDLM's rules."""
    for pattern, repl in _LM1B_COMPILED:
        text = pattern.sub(repl, text)
    return text


def _wiki_clean(text: str) -> str:
    """Plain text of a filtered wiki article: drop leftover ''italic''/'''bold''' quotes, tidy blank lines."""
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_of(index: int) -> str:
    """Split of the document at `index` in a local corpus (10% validation, 10% heldout)."""
    return {8: "validation", 9: "heldout"}.get(index % 10, "train")


def _check_split(split: str, allowed=SPLITS) -> None:
    if split not in allowed:
        raise ValueError(f"split: expected one of {list(allowed)}, got {split!r}")


@dataclass
class Corpus:
    """Documents of one split. `fingerprint` identifies the content for cache keys, so it must not
    need the documents: a cache hit never reads them."""
    name: str
    split: str
    fingerprint: str
    _docs: Callable[[int], Iterator[str]] = field(repr=False)
    _num_docs: int | Callable[[], int] | None = field(default=None, repr=False)  # a count or how to count

    def documents(self, start: int = 0) -> Iterator[str]:
        """Documents from index `start` on, in a fixed order (resumable builds skip the first ones)."""
        return self._docs(start)

    @property
    def num_docs(self) -> int | None:
        return self._num_docs() if callable(self._num_docs) else self._num_docs


# ---------------------------------------------------------------- gensim Wikipedia (default corpus)

def wiki_dump_path() -> Path:
    """The shortened English Wikipedia dump that ships inside the gensim 4.4.0 wheel."""
    import gensim
    return (Path(gensim.__file__).parent / "test" / "test_data" /
            "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")


@functools.lru_cache(maxsize=1)
def wiki_articles() -> tuple[str, ...]:
    """All non-redirect articles of the dump as plain text (106 articles, ~3.1 MB), in dump order.
    Parsed once per process (~1.5 s)."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki
    articles = []
    with bz2.open(wiki_dump_path(), "rb") as f:
        for _title, text, _pageid in extract_pages(f):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            clean = _wiki_clean(filter_wiki(text))
            if clean:
                articles.append(clean)
    return tuple(articles)


def _split_documents(name: str, split: str, docs) -> list[str]:
    """The documents of a listed corpus that fall in `split` (split_of their index)."""
    chosen = [d for i, d in enumerate(docs) if split_of(i) == split]
    if not chosen:
        raise ValueError(f"data: corpus {name!r} has {len(docs)} documents and none falls in split "
                         f"{split!r} (document i goes to validation when i % 10 == 8 and to heldout "
                         "when i % 10 == 9); give at least 10 documents")
    return chosen


def _listed_corpus(name: str, split: str, fingerprint: str, listing: Callable[[], list[str]]) -> Corpus:
    """A corpus whose documents are listed once, when they are first read (not on a cache hit)."""
    chosen = functools.cache(listing)
    return Corpus(name, split, fingerprint, lambda start: iter(chosen()[start:]), lambda: len(chosen()))


def wiki_corpus(split: str, name: str = "wikipedia", clean: Callable[[str], str] | None = None,
                rule: str = "") -> Corpus:
    """The default corpus; with `clean` (and its `rule`, a version string for the fingerprint) each article
    is cleaned by it. The dump is parsed only when its documents are read (not on a cache hit)."""
    _check_split(split)
    fingerprint = f"gensim-wiki:{wiki_dump_path().stat().st_size}:v1{f':{rule}' if clean else ''}"
    return _listed_corpus(name, split, fingerprint, lambda: _split_documents(
        name, split, [clean(a) for a in wiki_articles()] if clean else wiki_articles()))


def text8_corpus(split: str) -> Corpus:
    """The real text8 (scale.data.text8: fetched once into the cache, split as MDLM's)."""
    _check_split(split)
    return _listed_corpus("text8", split, *text8_source(split))


# ---------------------------------------------------------------- local files and folders

def _read_text(path: Path) -> str:
    """A local corpus file as text; a file that is not UTF-8 (a binary file, another encoding) is refused
    naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"data: expected a UTF-8 text file, got {str(path)!r} (byte {err.start} is "
                         f"{err.object[err.start:err.start + 1]!r}: {err.reason})") from None


def _local_documents(path: Path, text_column: str) -> list[str]:
    """A .txt file: blank-line separated paragraphs; a .jsonl file: one `text_column` per line;
    a folder: every .txt file (recursively, sorted) is one document, .jsonl files as above."""
    def jsonl(p: Path) -> list[str]:
        out = []
        for n, line in enumerate(_read_text(p).splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"data: expected one JSON object per line, got line {n} of {p} ({err})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"data: expected one JSON object per line, got a {type(row).__name__} "
                                     f"on line {n} of {p}")
                if text_column not in row:
                    raise ValueError(f"text_column: {text_column!r} missing on line {n} of {p}")
                out.append(str(row[text_column]))
        return out

    if path.is_file():
        if path.suffix == ".jsonl":
            return jsonl(path)
        text = _read_text(path)
        return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    docs = []
    for p in sorted(path.rglob("*")):
        if p.suffix == ".txt" and p.is_file():
            text = _read_text(p).strip()
            if text:
                docs.append(text)
        elif p.suffix == ".jsonl" and p.is_file():
            docs.extend(jsonl(p))
    return docs


def local_corpus(path: str | Path, split: str, text_column: str = "text") -> Corpus:
    _check_split(split)
    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = hashlib.sha1("".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns};"
                                 for p in files).encode()).hexdigest()[:16]
    chosen = _split_documents(path.name, split, _local_documents(path, text_column))
    return Corpus(path.name, split, f"local:{path}:{stamp}:{text_column}", lambda start: iter(chosen[start:]),
                  len(chosen))


# ---------------------------------------------------------------- Hugging Face datasets

@dataclass(frozen=True)
class HubEntry:
    """A registered hub dataset: id, config, split expression per split, text column, detokenizer;
    `streaming` reads it as it downloads."""
    hub_id: str
    splits: dict
    config: str | None = None
    text_column: str = "text"
    detokenize: Callable[[str], str] | None = None
    streaming: bool = False


REGISTERED = {
    "lm1b": HubEntry("lm1b", {"train": "train", "validation": "test"}, detokenize=lm1b_detokenize),
    # MDLM's split of the single OpenWebText "train" split: the last 100k documents validate. Streamed:
    # no 40 GB Arrow copy is written before tokenization starts.
    "openwebtext": HubEntry("openwebtext", {"train": "train[:-100000]", "validation": "train[-100000:]"},
                            streaming=True),
}


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _load_hub(hub_id: str, config: str | None, split_expr: str | None, revision: str = "",
              streaming: bool = False):
    """(dataset, the revision it came from): `revision` when pinned; else the dataset as published and,
    when `datasets` refuses it as a script dataset, its parquet export. The error names every attempt."""
    import datasets
    errors = []
    for rev in ([revision] if revision else [None, PARQUET_EXPORT]):
        try:
            return datasets.load_dataset(hub_id, config, split=split_expr, revision=rev,
                                         streaming=streaming), rev or ""
        except Exception as err:  # connection, missing cache, unknown split, script datasets ...
            errors.append(f"revision {rev or 'as published'}: {_first_line(err)}")
            if rev is None and SCRIPT_ERROR not in str(err):
                break  # only a script dataset has a parquet export to fall back on
    offline = os.environ.get("HF_DATASETS_OFFLINE", "0") not in {"0", "", "false", "False"}
    raise ValueError(
        f"data: dataset {hub_id!r} (config {config!r}, split {split_expr!r}) could not be loaded"
        f"{' with HF_DATASETS_OFFLINE=1 (not in the local datasets cache)' if offline else ''}; "
        f"tried {len(errors)} revision(s): {'; '.join(errors)}")


def _hub_documents(name: str, split: str, ds, hub_id: str, text_column: str,
                   detokenize: Callable[[str], str] | None, split_expr: str) -> Corpus:
    if text_column not in ds.column_names:
        raise ValueError(f"text_column: {text_column!r} is not a column of {hub_id!r} "
                         f"(columns: {ds.column_names})")

    def docs(start: int) -> Iterator[str]:
        for lo in range(start, len(ds), READ_BATCH):
            for text in ds[lo:lo + READ_BATCH][text_column]:
                yield detokenize(text) if detokenize else text

    fingerprint = f"hub:{hub_id}:{split_expr}:{text_column}:{getattr(ds, '_fingerprint', '')}"
    return Corpus(name, split, fingerprint, docs, len(ds))


def split_slice(split_expr: str, total: int | None) -> tuple[str, int, int]:
    """'train[:-100000]' -> ('train', 0, total - 100000): a split expression as (split, start, stop)."""
    m = re.fullmatch(r"(\w+)(?:\[(-?\d*):(-?\d*)\])?", split_expr)
    if m is None:
        raise ValueError(f"split: expected NAME or NAME[a:b], got {split_expr!r}")
    name, lo, hi = m.group(1), m.group(2) or "", m.group(3) or ""
    if total is None and (hi == "" or lo.startswith("-") or hi.startswith("-")):  # a bound needs the count
        raise ValueError(f"split: {split_expr!r} of a stream needs the split's document count, which is unknown")

    def bound(text: str, default):
        return default if text == "" else total + int(text) if int(text) < 0 else int(text)

    return name, bound(lo, 0), bound(hi, total)


def _tail_start(ds, count: int) -> tuple[int, int]:
    """(shard i, rows to skip in it) where the last `count` documents of a stream begin, found by counting
    the stream's shards (its files) from the end, so only those shards are read."""
    need = count
    for i in reversed(range(ds.n_shards)):
        rows = sum(1 for _ in ds.shard(num_shards=ds.n_shards, index=i, contiguous=True))
        if rows >= need:
            return i, rows - need
        need -= rows
    raise ValueError(f"split: the stream holds {count - need} documents, fewer than the last {count} asked for")


def _stream_documents(name: str, split: str, ds, entry: HubEntry, split_expr: str, revision: str) -> Corpus:
    """A streamed split (datasets.IterableDataset) read in order as it downloads; a resumed build skips
    the first documents. The tail [-k:] starts at the shard (file) holding the k-th document from the
    end and [:-k] stops there, both found by counting the last shards (_tail_start), so OpenWebText's
    validation tail does not read the training documents and no document count is needed. Other
    slices [a:b] read from the start (a negative bound needs the count the dataset's info records)."""
    split_name = re.match(r"\w+", split_expr).group(0)
    if ds.column_names is not None and entry.text_column not in ds.column_names:
        raise ValueError(f"text_column: {entry.text_column!r} is not a column of {entry.hub_id!r} "
                         f"(columns: {ds.column_names})")
    splits = getattr(getattr(ds, "info", None), "splits", None) or {}
    total = getattr(splits.get(split_name), "num_examples", None)
    shard = functools.partial(ds.shard, num_shards=ds.n_shards, contiguous=True)
    tail, head = re.fullmatch(r"\w+\[-(\d+):\]", split_expr), re.fullmatch(r"\w+\[:-(\d+)\]", split_expr)
    if tail or head:  # the last k documents, or all but them: both start from where the tail begins
        k = int((tail or head).group(1))
        where = functools.cache(lambda: _tail_start(ds, k))
        count = k if tail else (total - k if total else None)

        def rows(skip: int):
            first, offset = where()
            if tail:
                parts = (shard(index=j) for j in range(first, ds.n_shards))
                return itertools.islice(itertools.chain.from_iterable(parts), offset + skip, None)
            parts = itertools.chain((shard(index=j) for j in range(first)),
                                    [itertools.islice(shard(index=first), offset)])
            return itertools.islice(itertools.chain.from_iterable(parts), skip, None)
    elif "[" not in split_expr:  # the whole split
        count = total

        def rows(skip: int):
            return ds.skip(skip)
    else:
        _, start, stop = split_slice(split_expr, total)
        count = stop - start

        def rows(skip: int):
            return itertools.islice(ds.skip(start + skip), count - skip)

    def docs(skip: int) -> Iterator[str]:
        for row in rows(skip):
            text = row[entry.text_column]
            yield entry.detokenize(text) if entry.detokenize else text

    fingerprint = f"hub:{entry.hub_id}:{revision}:{split_expr}:{entry.text_column}:stream"
    return Corpus(name, split, fingerprint, docs, count)


def hub_corpus(name: str, split: str, entry: HubEntry, revision: str = "") -> Corpus:
    """A registered hub dataset (LM1B, OpenWebText) with its fixed split expressions."""
    if split not in entry.splits:
        raise ValueError(f"split: expected one of {list(entry.splits)} for {name!r}, got {split!r}")
    split_expr = entry.splits[split]
    if entry.streaming:
        split_name = re.match(r"\w+", split_expr).group(0)
        ds, rev = _load_hub(entry.hub_id, entry.config, split_name, revision, streaming=True)
        return _stream_documents(name, split, ds, entry, split_expr, rev)
    ds, rev = _load_hub(entry.hub_id, entry.config, split_expr, revision)
    return _hub_documents(name, split, ds, entry.hub_id, entry.text_column, entry.detokenize,
                          split_expr if not rev else f"{split_expr}@{rev}")


def generic_hub_corpus(hub_id: str, split: str, config: str | None, text_column: str,
                       revision: str = "") -> Corpus:
    """Any hub dataset: its "train" split, and "validation" (or "test" when it has none)."""
    candidates = {"train": ("train",), "validation": ("validation", "test")}
    if split not in candidates:
        raise ValueError(f"split: expected one of {list(candidates)} for {hub_id!r}, got {split!r}")
    splits, rev = _load_hub(hub_id, config, None, revision)
    chosen = next((s for s in candidates[split] if s in splits), None)
    if chosen is None:
        raise ValueError(f"split: {hub_id!r} has splits {list(splits)}, none of {candidates[split]}")
    name = hub_id.replace("/", "--") + (f"--{config}" if config else "")
    return _hub_documents(name, split, splits[chosen], hub_id, text_column, None,
                          chosen if not rev else f"{chosen}@{rev}")


# corpora read from this machine (text8 is fetched into the cache once): name -> the corpus of a split
LISTED = {"wikipedia": wiki_corpus, "text8": text8_corpus,
          "text8-wiki": functools.partial(wiki_corpus, name="text8-wiki", clean=text8_normalize, rule=TEXT8_RULE)}


def get_corpus(data: str = DEFAULT_CORPUS, split: str = "train", *, hf_config: str | None = None,
               text_column: str = "text", revision: str = "") -> Corpus:
    """Resolve `data` (registered name, local path, or hub dataset id) to the documents of `split`;
    `revision` pins a hub dataset's revision (default: as published, else its parquet export)."""
    if not isinstance(data, str) or not data:
        raise ValueError(f"data: expected a corpus name, a path or a dataset id, got {data!r}")
    data = CORPUS_ALIASES.get(data, data)
    if data in LISTED:
        return LISTED[data](split)
    if data in REGISTERED:
        return hub_corpus(data, split, REGISTERED[data], revision)
    if Path(data).expanduser().exists():
        return local_corpus(Path(data).expanduser(), split, text_column)
    if data.startswith((".", "/", "~")) or data.endswith((".txt", ".jsonl")):
        raise ValueError(f"data: path {data!r} does not exist")
    return generic_hub_corpus(data, split, hf_config, text_column, revision)
