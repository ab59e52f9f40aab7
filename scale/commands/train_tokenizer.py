"""`python -m scale train-tokenizer --out DIR [--data wiki] [--split train] [--vocab-size 2048]`: a small
byte-level BPE vocabulary on one split of a corpus, cached (scale.data.bpe.train_bpe)."""
from __future__ import annotations

from imdm_lab import durable
from imdm_lab.checks import check_int, check_writable, host_memory
from scale.data.bpe import TOKENIZER, check_vocab_size, train_bpe


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder of the tokenizer (loads with data.tokenizer=DIR)")
    p.add_argument("--data", default="wiki", help="corpus (default wiki, the offline Wikipedia dump)")
    p.add_argument("--split", default="train", help="split to learn the merges on (default train)")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--min-frequency", type=int, default=2)


def check(args) -> None:
    """The vocabulary size against this machine's memory, the frequency, a writable --out of its own."""
    check_vocab_size(args.vocab_size, host_memory())
    check_int("--min-frequency", args.min_frequency, 1)
    durable.check_owner(check_writable("--out", args.out, folder=True), TOKENIZER)


def run(args) -> int:
    check(args)
    out = train_bpe(args.out, data=args.data, split=args.split, vocab_size=args.vocab_size,
                    min_frequency=args.min_frequency)
    print(f"tokenizer in {out}")
    return 0
