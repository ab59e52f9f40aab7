"""Throughput of the scale data pipeline and of judge scoring.

    python benchmarks/data_pipeline.py [--data wikipedia] [--judge-layers 2] [--judge-dim 64]
        [--texts 16] [--out results/data_pipeline.json]

1. Builds the token-block cache of `--data` (train and validation) from scratch in a temporary
   $IMDM_CACHE for GPT-2 / L = 1024 and bert-base-uncased / L = 128; reports documents, tokens,
   blocks, seconds and tokens per second of each build, then the time to open the finished cache.
2. Scores `--texts` validation blocks (decoded GPT-2 text, 1024 tokens each) with a random GPT-2
   judge of the given size through `scale.evaluation.metrics.gen_ppl`, and reports judge tokens per second.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def build(data: str, tokenizer: str, length: int) -> list[dict]:
    from scale.data.blocks import load_blocks
    rows = []
    for split in ("train", "validation"):
        tic = time.perf_counter()
        blocks = load_blocks(data, split, tokenizer=tokenizer, length=length, progress=False)
        built = time.perf_counter() - tic
        tic = time.perf_counter()
        load_blocks(data, split, tokenizer=tokenizer, length=length, progress=False)
        reopened = time.perf_counter() - tic
        m = blocks.meta
        rows.append({"data": data, "split": split, "tokenizer": tokenizer, "length": length,
                     "docs": m["num_docs"], "doc_tokens": m["doc_tokens"], "blocks": m["num_blocks"],
                     "build_s": round(built, 3), "tokens_per_s": round(m["doc_tokens"] / built),
                     "reopen_s": round(reopened, 3)})
    return rows


def judge_throughput(data: str, n_texts: int, layers: int, dim: int) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    from scale.data.blocks import load_blocks
    from scale.data.tokenizers import load_tokenizer
    from scale.evaluation.judge import load_judge
    from scale.evaluation.metrics import decode_samples, gen_ppl

    blocks = load_blocks(data, "validation", tokenizer="gpt2", length=1024, progress=False)
    texts = decode_samples(blocks.get_batch(list(range(min(n_texts, len(blocks))))), load_tokenizer("gpt2"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_layer=layers,
                                       n_embd=dim, n_head=max(1, dim // 32)))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        judge = load_judge(folder)
    tic = time.perf_counter()
    result = gen_ppl(texts, judge, max_length=1024, batch_size=8)
    seconds = time.perf_counter() - tic
    return {"texts": len(texts), "judge_layers": layers, "judge_dim": dim,
            "device": str(judge.device), "scored_tokens": result.tokens, "seconds": round(seconds, 3),
            "tokens_per_s": round(result.tokens / seconds)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="wikipedia")
    p.add_argument("--texts", type=int, default=16)
    p.add_argument("--judge-layers", type=int, default=2)
    p.add_argument("--judge-dim", type=int, default=64)
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["IMDM_CACHE"] = cache
        report = {"threads": torch.get_num_threads(), "builds": [], "judge": None}
        for tokenizer, length in (("gpt2", 1024), ("bert-base-uncased", 128)):
            report["builds"] += build(args.data, tokenizer, length)
        report["judge"] = judge_throughput(args.data, args.texts, args.judge_layers, args.judge_dim)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
