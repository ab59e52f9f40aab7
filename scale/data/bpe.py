"""A small byte-level BPE vocabulary trained with Hugging Face `tokenizers` on one split of a corpus
(`train_bpe`, behind `python -m scale train-tokenizer`).

Why a small vocabulary for CPU runs: the output layer of a DiT is hidden x C, and the judge's n-gram
statistics spread over C^n contexts. On ~3 MB of text a 2 048-token BPE keeps both small (the output
layer costs little next to the blocks; n-grams repeat often enough to be counted) while whole common
words stay single tokens. Byte-level BPE decodes and re-encodes losslessly, so generative perplexity
re-tokenizes a decoded sample into the same ids.

Layout (GPT-2's): `<|endoftext|>` is the bos and eos of wrapped blocks and the judge's eos; there is no
[MASK] token, so a diffusion model appends its mask id at C = len(tokenizer) (scale.data.tokenizers.vocab_layout).

Determinism and caching: the documents are fed in the corpus's fixed order on one thread and the trainer
breaks ties by its own fixed rules, so the same corpus and settings give the same files. The result is
cached in `$IMDM_CACHE/tokenizers/<key>/` (key = corpus fingerprint, split and settings) and copied to
--out; a second call with the same settings reads the cache and never reads the documents. Both folders
are written durably (imdm_lab.durable); an --out that holds anything but a tokenizer of this command
(its bpe.json) is refused, never replaced.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from imdm_lab import durable
from imdm_lab.checks import check_int
from scale.data.blocks import cache_root
from scale.data.corpora import get_corpus

EOS = "<|endoftext|>"
FORMAT = "imdm-lab-bpe/1"


def _key(fingerprint: str, split: str, vocab_size: int, min_frequency: int) -> str:
    meta = json.dumps([FORMAT, fingerprint, split, vocab_size, min_frequency])
    return hashlib.sha1(meta.encode()).hexdigest()[:12]


def _train_into(folder: Path, docs, vocab_size: int, min_frequency: int) -> None:
    """Train byte-level BPE on `docs` and save it as a transformers fast tokenizer in `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=None,
                                   clean_up_tokenization_spaces=False, model_max_length=1 << 30)
    fast.save_pretrained(str(folder))


TOKENIZER = durable.Owner("--out", "bpe.json", "a tokenizer")  # what train_bpe may replace in --out


def train_bpe(out: str | Path, *, data: str = "wiki", split: str = "train", vocab_size: int = 2048,
              min_frequency: int = 2) -> Path:
    """The BPE tokenizer of `data`/`split` in folder `out` (built once, then served from the cache);
    `out` must be new, empty or a tokenizer of this function (TOKENIZER), which is replaced."""
    check_int("--vocab-size", vocab_size, 257)  # the 256 byte symbols and the eos token
    check_int("--min-frequency", min_frequency, 1)
    out = durable.check_owner(out, TOKENIZER)
    corpus = get_corpus(data, split)
    key = _key(corpus.fingerprint, split, vocab_size, min_frequency)
    cached = cache_root() / "tokenizers" / f"{corpus.name}-{split}-bpe{vocab_size}-{key}"
    if not (cached / "tokenizer.json").is_file():
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            with durable.folder(cached) as staged:
                _train_into(staged, corpus.documents(), vocab_size, min_frequency)
                (staged / "bpe.json").write_text(json.dumps({
                    "format": FORMAT, "corpus": corpus.name, "split": split, "fingerprint": corpus.fingerprint,
                    "vocab_size": vocab_size, "min_frequency": min_frequency}, indent=1))
        except FileExistsError:  # another process built the same cache first
            pass
    if not (out / "bpe.json").is_file() or (out / "bpe.json").read_text() != (cached / "bpe.json").read_text():
        with durable.folder(out, TOKENIZER) as staged:
            shutil.copytree(cached, staged, dirs_exist_ok=True)
    return out
