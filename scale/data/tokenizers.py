"""Tokenizers by name, online through the Hugging Face hub and offline from vendored files.

Two tokenizers matter for the paper's data: GPT-2 BPE (OpenWebText; the judge models) and
bert-base-uncased WordPiece (LM1B). Their vocabulary files are vendored byte-identical under
`scale/assets/` (hashes checked by the tests), so a machine without the hub still tokenizes exactly
like the original. A name is loaded online with `AutoTokenizer.from_pretrained(name)`; when the hub
is off (HF_HUB_OFFLINE=1) or fails for any reason, a vendored name falls back to its folder.

Vocabulary layout of a diffusion model on top of a tokenizer (the token convention of the kernels):
- a tokenizer with its own [MASK] (BERT, id 103) uses it: C = len(tokenizer) classes, mask inside;
- a tokenizer without one (GPT-2) gets the mask appended: mask_id = len(tokenizer) = 50257, C = 50258.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scale.data.json_fields import read_object

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# A tokenizer folder holds one of these vocabulary files, and these JSON files are read by transformers.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model")
JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "config.json", "vocab.json")


@dataclass(frozen=True)
class Vendored:
    """A tokenizer shipped in `scale/assets/<folder>`.

    clean_up: the `clean_up_tokenization_spaces` default the reference code ran with
    (transformers 4.49: True for BertTokenizer, False for GPT-2). It changes decoded text
    ("don ' t" vs "don't") and therefore the judge's perplexity, so it is pinned here for both the
    online and the offline path.
    """
    folder: str
    clean_up: bool


VENDORED = {
    "gpt2": Vendored("gpt2", clean_up=False),
    "bert-base-uncased": Vendored("bert-base-uncased", clean_up=True),
}
# Names whose tokenizer is GPT-2's (every GPT-2 size shares one BPE vocabulary).
ALIASES = {
    "openai-community/gpt2": "gpt2",
    "gpt2-medium": "gpt2",
    "gpt2-large": "gpt2",
    "gpt2-xl": "gpt2",
    "distilgpt2": "gpt2",
    "openai-community/gpt2-medium": "gpt2",
    "openai-community/gpt2-large": "gpt2",
    "openai-community/gpt2-xl": "gpt2",
    "google-bert/bert-base-uncased": "bert-base-uncased",
}


def hub_offline() -> bool:
    """True when the environment asks for no network access to the hub."""
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in {"1", "true", "yes", "on"}


def vendored_name(name: str) -> str | None:
    """The vendored tokenizer serving `name` (a hub id or alias), or None."""
    name = ALIASES.get(name, name)
    return name if name in VENDORED else None


def vendored_dir(name: str) -> Path:
    """Folder of a vendored tokenizer; ValueError for names that are not vendored."""
    key = vendored_name(name)
    if key is None:
        raise ValueError(f"name: expected one of {sorted(VENDORED)} (or an alias), got {name!r}")
    return ASSETS / VENDORED[key].folder


def _from_dir(path: Path | str):
    # Always from_pretrained(<dir>): in transformers 5 the direct constructors with vocab_file=...
    # silently build a broken tokenizer.
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(path))


def read_tokenizer_folder(path: str | Path):
    """The tokenizer of a `save_pretrained` folder (train-tokenizer, a judge folder, a checkpoint's
    data.tokenizer), checked on open: it holds one of TOKENIZER_FILES, each JSON file transformers reads is
    a JSON object, and transformers loads it; ValueError('tokenizer: PATH: ...') naming the folder or
    file otherwise (transformers' own errors are KeyErrors, TypeErrors, AttributeErrors, ...)."""
    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(f"tokenizer: {path}: expected a tokenizer folder holding one of {list(TOKENIZER_FILES)}, "
                         f"but none is there")
    for name in JSON_FILES:
        if (path / name).is_file():
            read_object(path / name, "tokenizer", f"the {name} of a tokenizer")
    try:
        tok = _from_dir(path)
    except Exception as err:  # transformers and tokenizers raise many types for a damaged file
        raise ValueError(f"tokenizer: {path}: expected a tokenizer folder written by save_pretrained, got one "
                         f"that does not load ({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    if len(tok) < 1:
        raise ValueError(f"tokenizer: {path}: expected a vocabulary, got an empty one")
    return tok


def load_tokenizer(name: str):
    """Load a tokenizer by hub name or local folder.

    name: a hub id ("gpt2", "bert-base-uncased", "gpt2-large", ...) or a folder holding tokenizer
    files (read_tokenizer_folder checks it). Online the hub is tried first; offline, or on any hub error,
    a vendored name is read from `scale/assets/`. Any other name that cannot be loaded is a ValueError naming it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a tokenizer name or folder, got {name!r}")
    key = vendored_name(name)
    if Path(name).is_dir():
        tok = read_tokenizer_folder(name)
    elif key is not None and hub_offline():
        tok = _from_dir(vendored_dir(name))
    else:
        try:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(name)
        except Exception as err:  # the hub raises many types (OSError, HTTP, offline errors)
            if key is None:
                raise ValueError(
                    f"name: tokenizer {name!r} could not be loaded "
                    f"(hub offline={hub_offline()}): {type(err).__name__}: {err}") from None
            tok = _from_dir(vendored_dir(name))
    if key is not None:
        tok.clean_up_tokenization_spaces = VENDORED[key].clean_up
    return tok


@dataclass(frozen=True)
class VocabLayout:
    """How a diffusion model's C output classes sit on a tokenizer's ids.

    num_classes: C; mask_id: the [MASK] id (inside [0, C) here: BERT 103, GPT-2 50257);
    eos_id: the tokenizer's end-of-text id (GPT-2 50256, BERT [SEP] 102), or None.
    """
    num_classes: int
    mask_id: int
    eos_id: int | None


def vocab_layout(tokenizer) -> VocabLayout:
    """C and mask id for a tokenizer: its own [MASK] when it has one, else one appended id."""
    n = len(tokenizer)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if tokenizer.mask_token_id is not None:
        return VocabLayout(num_classes=n, mask_id=int(tokenizer.mask_token_id), eos_id=eos)
    return VocabLayout(num_classes=n + 1, mask_id=n, eos_id=eos)


def wrap_specials(tokenizer) -> tuple[int, int]:
    """(bos, eos) ids that MDLM's wrapped datasets put around blocks and after documents.

    MDLM takes bos = bos_token or else cls_token, eos = eos_token or else sep_token, and converts
    each with `tokenizer.encode(token)[0]`, i.e. WITH special tokens added. For BERT that first id
    is the prepended [CLS], so LM1B blocks use [CLS] (101) both as block start and as the sentence
    separator; GPT-2 uses <|endoftext|> (50256) for both. We reproduce that result here so that
    blocks match the reference checkpoints' training data.
    """
    bos_tok = tokenizer.bos_token or tokenizer.cls_token
    eos_tok = tokenizer.eos_token or tokenizer.sep_token
    if bos_tok is None or eos_tok is None:
        raise ValueError("tokenizer: expected a bos/cls and an eos/sep token for wrapped blocks, "
                         f"got bos={bos_tok!r} eos={eos_tok!r}")
    return tokenizer.encode(bos_tok)[0], tokenizer.encode(eos_tok)[0]
