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
from imdm_lab.checks import check_cost, check_int, check_writable, host_memory
from scale.data.cache import cache_root
from scale.data.corpora import get_corpus

EOS = "<|endoftext|>"
FORMAT = "imdm-lab-bpe/1"


def _key(fingerprint: str, split: str, vocab_size: int, min_frequency: int) -> str:
    meta = json.dumps([FORMAT, fingerprint, split, vocab_size, min_frequency])
    return hashlib.sha1(meta.encode()).hexdigest()[:12]


# Bytes the trainer (tokenizers' BpeTrainer) allocates per vocabulary entry before it starts, measured:
# --vocab-size 10^9 asked for 70 866 960 400 bytes at once and aborted the process
TRAINER_BYTES_PER_TOKEN = 72
# The merge phase rescans a distinct pre-tokenizer piece (a run of letters, digits or punctuation) of l
# characters at every merge that touches it: about min(merges, l) * l operations. Ordinary words are short
# and repeat (the trainer counts each once), so only pieces longer than LONG_PIECE are counted, against
# MERGE_WORK. Measured on 2 cores: one 100 000-character piece at vocabulary 2048 (1.8e8) trains in 5 s of
# CPU, three of 400 000 (2.1e9) ran over 5 minutes without finishing.
LONG_PIECE, MERGE_WORK = 1_000, 2 * 10**8


def check_vocab_size(vocab_size: int, memory: int) -> int:
    """vocab_size, refused below the 256 bytes and eos, and above what the trainer's up-front allocation
    lets `memory` bytes hold (naming the largest that fits)."""
    check_int("--vocab-size", vocab_size, 257)  # the 256 byte symbols and the eos token
    return check_cost("--vocab-size", vocab_size, lambda v: TRAINER_BYTES_PER_TOKEN * v, memory,
                      "the BPE trainer's tables")


def _bounded(docs, merges: int, where: str):
    """The documents, refused (ValueError naming --data) as soon as their long pieces would cost the merge
    phase more than MERGE_WORK operations: the trainer reads them all before its first merge, so the
    refusal comes before the long part."""
    from tokenizers import pre_tokenizers

    split, seen, work = pre_tokenizers.ByteLevel(add_prefix_space=False), set(), 0
    for i, doc in enumerate(docs):
        if len(doc) > LONG_PIECE:
            for piece, _ in split.pre_tokenize_str(doc):
                if len(piece) > LONG_PIECE and hash(piece) not in seen:
                    seen.add(hash(piece))
                    work += min(merges, len(piece)) * len(piece)
                    if work > MERGE_WORK:
                        raise ValueError(
                            f"--data: {where} holds runs of letters, digits or punctuation too long for the BPE "
                            f"trainer (document {i}: a run of {len(piece)} characters; every merge rescans such a "
                            f"run: about {work:.2g} operations so far against a budget of {MERGE_WORK:.0e}); "
                            f"expected runs of at most {LONG_PIECE} characters, a few longer ones, or a smaller "
                            f"--vocab-size")
        yield doc


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
    check_vocab_size(vocab_size, host_memory())
    check_int("--min-frequency", min_frequency, 1)
    out = durable.check_owner(check_writable("--out", out, folder=True), TOKENIZER)
    corpus = get_corpus(data, split)
    key = _key(corpus.fingerprint, split, vocab_size, min_frequency)
    cached = cache_root() / "tokenizers" / f"{corpus.name}-{split}-bpe{vocab_size}-{key}"
    if not (cached / "tokenizer.json").is_file():
        check_writable("$IMDM_CACHE", cached, folder=True)
        durable.clean_stale(cached.parent)  # any dead trainer's staging folder, whatever its settings
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        docs = _bounded(corpus.documents(), vocab_size - 257, f"{corpus.name}/{split}")
        try:
            with durable.folder(cached) as staged:
                _train_into(staged, docs, vocab_size, min_frequency)
                (staged / "bpe.json").write_text(json.dumps({
                    "format": FORMAT, "corpus": corpus.name, "split": split, "fingerprint": corpus.fingerprint,
                    "vocab_size": vocab_size, "min_frequency": min_frequency}, indent=1))
        except FileExistsError:  # another process built the same cache first
            pass
    if not (out / "bpe.json").is_file() or (out / "bpe.json").read_text() != (cached / "bpe.json").read_text():
        with durable.folder(out, TOKENIZER) as staged:
            shutil.copytree(cached, staged, dirs_exist_ok=True)
    return out
