"""text8: 100 000 000 characters of Wikipedia text in 27 symbols (a-z and the space), and the rule that
makes such text.

The rule is Matt Mahoney's (wikifil.pl, http://mattmahoney.net/dc/textdata.html), `text8_normalize`. Two
corpora of scale.data.corpora use it:
- `text8-wiki`: the articles of the offline Wikipedia dump, each normalized; split by document index as
  the `wikipedia` corpus (scale.data.corpora.split_of). The default text8-style corpus for CPU work.
- `text8`: the real text8, read from `$IMDM_CACHE/text8/text8.zip` and fetched from TEXT8_URL into that
  place when it is absent (refused when the hub is offline). Split as MDLM's text8
  (kuleshov-group/mdlm dataloader.py, get_text8_dataset): the first 90 M characters train, the next 5 M
  validate, the last 5 M are the heldout split (MDLM calls it test).

A split of text8 is one line of text; it is cut into documents at the first space after every
DOC_CHARS characters, so that no word is split and the block builder (scale.data.blocks), which wraps
documents into blocks anyway, can read it document by document. Joining a split's documents with one
space gives the split back.
"""
from __future__ import annotations

import re
import shutil
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from imdm_lab import durable
from scale.data.cache import cache_root, offline

TEXT8_URL = "http://mattmahoney.net/dc/text8.zip"
TEXT8_MEMBER = "text8"
# Bumped whenever text8_normalize changes, so that corpora normalized by it get new cache keys.
TEXT8_RULE = "text8-rule/1"
# MDLM's split of text8, in characters (they add up to the length of text8)
TRAIN_CHARS, VALIDATION_CHARS, HELDOUT_CHARS = 90_000_000, 5_000_000, 5_000_000
DOC_CHARS = 10_000  # a document ends at the first space after this many characters
DOWNLOAD_TIMEOUT_S = 60  # seconds without a byte from the server before the download is given up
ALPHABET = b"abcdefghijklmnopqrstuvwxyz "

_DIGITS = {str(d): f" {w} " for d, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))}
_NOT_LETTER = re.compile(r"[^a-z]+")


def text8_normalize(text: str) -> str:
    """Text in text8's alphabet, Matt Mahoney's rule (wikifil.pl, http://mattmahoney.net/dc/textdata.html):
    lower-case; each digit spelled as a word between spaces (0 -> " zero ", ..., 9 -> " nine "); every
    character outside a-z becomes a space; runs of spaces collapse to one; leading and trailing spaces go.
    Letters with accents are outside a-z ("café" -> "caf").

    "Route 66, Café!" -> "route six six caf"
    """
    text = "".join(_DIGITS.get(c, c) for c in text.lower())
    return _NOT_LETTER.sub(" ", text).strip()


def text8_zip() -> Path:
    """Where text8.zip lives: `$IMDM_CACHE/text8/text8.zip`."""
    return cache_root() / "text8" / "text8.zip"


def _by_hand(path: Path) -> str:
    return f"download {TEXT8_URL} by hand and put it at {path}"


def fetch_text8() -> Path:
    """text8.zip in the cache, downloaded once with urllib to a staging name and renamed into place
    (imdm_lab.durable); refused (ValueError naming data) when offline or when the download fails."""
    path = text8_zip()
    if path.is_file():
        return path
    if offline("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        raise ValueError(f"data: text8 is not in the cache and HF_DATASETS_OFFLINE/HF_HUB_OFFLINE forbid "
                         f"downloading it; {_by_hand(path)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.clean_stale(path.parent, path.name)  # a killed download's staging file
    try:
        with urllib.request.urlopen(TEXT8_URL, timeout=DOWNLOAD_TIMEOUT_S) as response:
            durable.write_file(path, lambda f: shutil.copyfileobj(response, f))
    except OSError as err:  # urllib's URLError and HTTPError are OSErrors, as are a full disk and a timeout
        raise ValueError(f"data: downloading text8 from {TEXT8_URL} failed ({type(err).__name__}: {err}); "
                         f"{_by_hand(path)}") from None
    try:
        _member(path)
    except ValueError:
        durable.remove(path)  # the server's answer was not text8: do not keep it as if it were
        raise
    return path


def _member(path: Path) -> zipfile.ZipInfo:
    """The one member of text8.zip, checked from the archive's directory before anything is unpacked:
    exactly one member, named text8, of TRAIN_CHARS + VALIDATION_CHARS + HELDOUT_CHARS bytes."""
    total = TRAIN_CHARS + VALIDATION_CHARS + HELDOUT_CHARS
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"data: {path}: expected the zip archive text8.zip, got {type(err).__name__}: {err}; "
                         f"{_by_hand(path)}") from None
    if [m.filename for m in members] != [TEXT8_MEMBER]:
        raise ValueError(f"data: {path}: expected one member named {TEXT8_MEMBER!r}, got "
                         f"{[m.filename for m in members]}; {_by_hand(path)}")
    if members[0].file_size != total:
        raise ValueError(f"data: {path}: expected {TEXT8_MEMBER!r} of {total} characters, got "
                         f"{members[0].file_size}; {_by_hand(path)}")
    return members[0]


def _read_text8(path: Path) -> str:
    """The text of text8.zip, refused (naming the file) unless every byte is a-z or a space."""
    member = _member(path)
    with zipfile.ZipFile(path) as archive:
        raw = archive.read(member)  # also checks the CRC the archive records
    outside = raw.translate(None, ALPHABET)
    if outside:
        at = raw.index(outside[:1])
        raise ValueError(f"data: {path}: expected only the characters a-z and space, got {raw[at:at + 1]!r} at "
                         f"byte {at}; {_by_hand(path)}")
    return raw.decode("ascii")


def text8_split(text: str, split: str) -> str:
    """The characters of `split` in text8 `text`: [0, train), [train, train + validation), the rest."""
    bounds = {"train": (0, TRAIN_CHARS), "validation": (TRAIN_CHARS, TRAIN_CHARS + VALIDATION_CHARS),
              "heldout": (TRAIN_CHARS + VALIDATION_CHARS, TRAIN_CHARS + VALIDATION_CHARS + HELDOUT_CHARS)}
    lo, hi = bounds[split]
    return text[lo:hi]


def text8_documents(stream: str) -> list[str]:
    """`stream` cut at the first space at or after every DOC_CHARS characters (the space is the cut
    itself): " ".join(documents) == stream, and no word is split."""
    docs, start = [], 0
    while start < len(stream):
        cut = stream.find(" ", start + DOC_CHARS)
        cut = len(stream) if cut < 0 else cut
        docs.append(stream[start:cut])
        start = cut + 1
    return docs


def text8_source(split: str) -> tuple[str, Callable[[], list[str]]]:
    """(fingerprint, documents of `split`) of the real text8: the archive is fetched and its directory
    checked now; its text is read and checked only when the documents are listed (never on a cache hit)."""
    path = fetch_text8()
    member = _member(path)
    fingerprint = (f"text8:{member.CRC:08x}:{TRAIN_CHARS}:{VALIDATION_CHARS}:{HELDOUT_CHARS}:"
                   f"doc{DOC_CHARS}:v1")
    return fingerprint, lambda: text8_documents(text8_split(_read_text8(path), split))
