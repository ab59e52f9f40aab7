"""Does a proxy judge trained here tell real text from broken text? Trains one (or loads --judge) and
reports its generative perplexity on three sets of GPT-2 token blocks:

- real: validation blocks of the corpus, decoded (held out from the judge's training split);
- shuffled: the same blocks with their tokens permuted inside each block (same unigram entropy);
- random: tokens drawn uniformly from the GPT-2 vocabulary.

    python benchmarks/proxy_judge.py --out results/proxy-judge [--size tiny] [--steps 150]
        [--length 128] [--batch-size 16] [--blocks 64] [--judge DIR]
"""
import argparse
import json
import time

import numpy as np
import torch

from scale.data.blocks import load_blocks
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.judge import JudgeTraining, load_judge, train_judge
from scale.evaluation.metrics import decode_samples, gen_ppl, unigram_entropy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/proxy-judge", help="judge folder to write (unless --judge)")
    p.add_argument("--judge", default=None, help="score with this judge instead of training one")
    p.add_argument("--data", default="wikipedia")
    p.add_argument("--size", default="tiny")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--blocks", type=int, default=64, help="validation blocks per set")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    report = {}
    if args.judge is None:
        tic = time.perf_counter()
        training = JudgeTraining(size=args.size, length=args.length, steps=args.steps, batch_size=args.batch_size,
                                 seed=args.seed)
        report["training"] = train_judge(args.out, data=args.data, training=training)
        report["training"]["wall_s"] = round(time.perf_counter() - tic, 1)
    judge = load_judge(args.judge or args.out)
    tok = load_tokenizer("gpt2")
    blocks = load_blocks(args.data, "validation", tokenizer="gpt2", length=args.length, progress=False)
    real = blocks.get_batch(list(range(min(args.blocks, len(blocks)))))
    rng = np.random.default_rng(args.seed)
    shuffled = torch.stack([row[torch.from_numpy(rng.permutation(len(row)))] for row in real])
    random = torch.from_numpy(rng.integers(0, len(tok), size=tuple(real.shape)))
    for name, tokens in (("real", real), ("shuffled", shuffled), ("random", random)):
        result = gen_ppl(decode_samples(tokens, tok), judge, max_length=args.length)
        report[name] = {"gen_ppl": round(result.gen_ppl, 2), "tokens": result.tokens,
                        "entropy": round(unigram_entropy(tokens), 3)}
    report["judge"] = judge.name
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
