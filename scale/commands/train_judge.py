"""`python -m scale train-judge --out DIR [--data NAME_OR_PATH] [--split heldout] ...`: train a small
GPT-2 judge on held-out text, for machines without gpt2-large (see scale.evaluation.judge.train_judge).

The folder it writes loads with `--judge DIR` in `python -m scale evaluate`; its judge.json records the
data, the settings and the validation perplexity, and every evaluation names the judge it used.
"""
from __future__ import annotations

import argparse
import json

from imdm_lab import durable
from imdm_lab.checks import check_device, check_writable
from scale.data.corpora import DEFAULT_CORPUS
from scale.evaluation.judge import JUDGE, JUDGE_SIZES, JudgeTraining, train_judge


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=DEFAULT_CORPUS,
                        help="corpus name, local text file/folder, or hub dataset id (default wikipedia)")
    parser.add_argument("--split", default="heldout", help="split to train on (default heldout)")
    parser.add_argument("--eval-split", default="validation", help="split of the final perplexity")
    parser.add_argument("--out", required=True, help="folder to write the judge to")
    # the defaults are JudgeTraining's
    parser.add_argument("--size", default=JudgeTraining.size, choices=sorted(JUDGE_SIZES))
    parser.add_argument("--length", type=int, default=JudgeTraining.length, help="training sequence length")
    parser.add_argument("--steps", type=int, default=JudgeTraining.steps)
    parser.add_argument("--batch-size", type=int, default=JudgeTraining.batch_size)
    parser.add_argument("--lr", type=float, default=JudgeTraining.lr)
    parser.add_argument("--warmup", type=int, default=JudgeTraining.warmup)
    parser.add_argument("--eval-batches", type=int, default=JudgeTraining.eval_batches,
                        help="validation batches scored at the end")
    parser.add_argument("--seed", type=int, default=JudgeTraining.seed)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")


def check(args: argparse.Namespace) -> JudgeTraining:
    """The training settings, the device and a writable --out of its own, before any data is read."""
    training = JudgeTraining(size=args.size, length=args.length, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, warmup=args.warmup, eval_batches=args.eval_batches, seed=args.seed)
    check_device("device", args.device)
    durable.check_owner(check_writable("out", args.out, folder=True), JUDGE)
    return training


def run(args: argparse.Namespace) -> int:
    """Train, write the folder, print the JSON summary."""
    training = check(args)
    summary = train_judge(args.out, data=args.data, split=args.split, eval_split=args.eval_split,
                          training=training, device=args.device)
    print(json.dumps(summary, indent=1))
    return 0
