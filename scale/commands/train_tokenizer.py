"""`python -m scale train-tokenizer --out DIR [--data wiki] [--split train] [--vocab-size 2048]`: a small
byte-level BPE vocabulary on one split of a corpus, cached (scale.data.bpe.train_bpe)."""
from __future__ import annotations

from scale.data.bpe import train_bpe


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder of the tokenizer (loads with data.tokenizer=DIR)")
    p.add_argument("--data", default="wiki", help="corpus (default wiki, the offline Wikipedia dump)")
    p.add_argument("--split", default="train", help="split to learn the merges on (default train)")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--min-frequency", type=int, default=2)


def run(args) -> int:
    out = train_bpe(args.out, data=args.data, split=args.split, vocab_size=args.vocab_size,
                    min_frequency=args.min_frequency)
    print(f"tokenizer in {out}")
    return 0
