"""`python -m scale train-ngram-judge --tokenizer DIR --out DIR [--data wiki] [--split heldout] [--order 3]`:
count a Kneser-Ney n-gram judge on held-out text (scale.evaluation.ngram_judge.train_ngram_judge); the folder loads
with `evaluate --judge DIR`."""
from __future__ import annotations

import json

from imdm_lab import durable
from imdm_lab.checks import check_int, check_seed, check_writable
from scale.evaluation.ngram_judge import NGRAM_JUDGE, train_ngram_judge


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="folder of the judge (loads with evaluate --judge DIR)")
    p.add_argument("--tokenizer", required=True, help="tokenizer name or folder (e.g. the models' own)")
    p.add_argument("--data", default="wiki", help="corpus (default wiki)")
    p.add_argument("--split", default="heldout", help="split to count (default heldout)")
    p.add_argument("--eval-split", default="validation", help="split of the judge's own perplexity")
    p.add_argument("--order", type=int, default=3, help="n of the n-grams (default 3)")
    p.add_argument("--block", type=int, default=64, help="tokens per text of the separation check")
    p.add_argument("--max-pieces", type=int, default=0, help="texts of the separation check (default 0: all)")
    p.add_argument("--seed", type=int, default=0)


def check(args) -> None:
    """The counts and seed, a writable --out of its own (--block is checked against the text it cuts, once
    that is tokenized, before the counting)."""
    check_int("--order", args.order, 1)
    check_int("--block", args.block, 2)
    check_int("--max-pieces", args.max_pieces, 0)
    check_seed("--seed", args.seed)
    durable.check_owner(check_writable("--out", args.out, folder=True), NGRAM_JUDGE)


def run(args) -> int:
    check(args)
    summary = train_ngram_judge(args.out, args.tokenizer, data=args.data, split=args.split,
                                eval_split=args.eval_split, order=args.order, block=args.block,
                                max_pieces=args.max_pieces, seed=args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "discounts"}, indent=1))
    return 0
