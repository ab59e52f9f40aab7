"""One-GPU check of the distillation chain on real text, in a few minutes (CPU with --tiny):

1. an MDLM (`small` DiT, GPT-2 tokenizer, length 512) trained from scratch for a few hundred steps;
2. IM-SDTT from it: 2 rounds (8 -> 4 -> 2 student steps), a few hundred optimizer steps in all;
3. a proxy judge (`python -m scale train-judge`, small GPT-2) on the held-out split: no GPT-2 offline;
4. `python -m scale evaluate` of the MDLM, the 4-step and the 2-step students at 1 / 2 / 4 steps.
Writes $OUT/gpu_distill_check.json (default OUT=./results) with the numbers, the stage times, the
card and the versions; checkpoints go to $WORK (default /tmp/gpu_distill_check), not to $OUT.

Needs python3 (3.11+), torch, transformers, tokenizers, safetensors, tqdm, numpy; not `datasets`,
`gensim` or an installed imdm-lab (run from the repository root; the script puts it on sys.path).
Text: the JSONL export of the default corpus given by --corpus (default results/corpus/wikipedia.jsonl)
when that file exists, else the default corpus itself (the Wikipedia dump inside gensim); export with

    python benchmarks/gpu_distill_check.py --export-corpus results/corpus/wikipedia.jsonl

    python benchmarks/gpu_distill_check.py             # GPU, about 4 minutes on an H100
    python benchmarks/gpu_distill_check.py --tiny      # CPU smoke run of the same script
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from scale.checkpoints.checkpoint import find_checkpoint  # noqa: E402

# size -> settings of every stage (--tiny: the CPU smoke run)
SETTINGS = {
    "gpu": dict(config="owt-imdm-small", size="small", length=512, batch=32, mdlm_steps=400, grow_every=150,
                mdlm_lr=3e-4, distill_lr=6e-5,
                judge=["--size", "small", "--steps", "400", "--length", "256", "--batch-size", "16"],
                n=256, eval_batch=64, val_batches=8),
    "tiny": dict(config="tiny-cpu", size="tiny-cpu", length=64, batch=8, mdlm_steps=8, grow_every=2,
                 mdlm_lr=3e-3, distill_lr=1e-3,
                 judge=["--size", "tiny", "--steps", "8", "--length", "32", "--batch-size", "4",
                        "--eval-batches", "4"],
                 n=8, eval_batch=8, val_batches=2),
}


def export_corpus(path: Path) -> None:
    from scale.data.corpora import wiki_articles
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for text in wiki_articles():
            f.write(json.dumps({"text": text}) + "\n")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def corpus_name(path: str) -> str:
    """The exported JSONL when it exists, else the default corpus (which needs gensim)."""
    if Path(path).is_file():
        return str(Path(path).resolve())
    try:
        import gensim  # noqa: F401
    except ImportError:
        raise SystemExit(f"--corpus: {path} does not exist and gensim is not installed; export it with "
                         f"--export-corpus {path} on a machine with gensim") from None
    return "wikipedia"


def stage(name: str, argv: list[str], times: dict) -> None:
    from scale.cli import main
    tic = time.perf_counter()
    rc = main(argv)
    times[name] = time.perf_counter() - tic
    print(f"== {name}: {times[name]:.1f} s", flush=True)
    if rc != 0:
        raise SystemExit(f"stage {name} failed with exit status {rc}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny-cpu sizes: a smoke run of a few seconds per stage")
    p.add_argument("--corpus", default="results/corpus/wikipedia.jsonl")
    p.add_argument("--export-corpus", default=None, metavar="PATH", help="write the corpus JSONL and exit")
    # Shorter runs when less GPU time is left (the defaults are the settings' own).
    p.add_argument("--mdlm-steps", type=int, help="MDLM pre-training steps")
    p.add_argument("--grow-every", type=int, help="IM-SDTT steps per round (2 rounds)")
    p.add_argument("--judge-steps", type=int, help="proxy-judge training steps")
    p.add_argument("--n", type=int, help="samples per checkpoint and step count")
    args = p.parse_args()
    if args.export_corpus:
        export_corpus(Path(args.export_corpus))
        return 0
    s = dict(SETTINGS["tiny" if args.tiny else "gpu"])
    for key in ("mdlm_steps", "grow_every", "n"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if args.judge_steps is not None:
        s["judge"] = [*s["judge"], "--steps", str(args.judge_steps)]  # argparse keeps the last --steps
    out = Path(os.environ.get("OUT") or "results")
    work = Path(os.environ.get("WORK") or "/tmp/gpu_distill_check")
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("IMDM_CACHE", str(work / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data = corpus_name(args.corpus)
    times: dict[str, float] = {}
    mdlm, sdtt = work / "mdlm", work / "imsdtt"
    common = ["--set", f"data.dataset={data}", "--set", "data.tokenizer=gpt2", "--set", f"data.length={s['length']}",
              "--set", f"train.global_batch={s['batch']}", "--set", f"train.micro_batch={s['batch']}",
              "--set", "eval.every=0", "--set", "train.log_every=10"]
    if find_checkpoint(mdlm) is None:
        stage("mdlm", ["train", "--config", s["config"], "--out", str(mdlm), "--set", f"model.size={s['size']}",
                       "--set", "model.labels=none",
                       "--set", f"train.max_steps={s['mdlm_steps']}", "--set", f"train.lr={s['mdlm_lr']}",
                       "--set", "train.warmup=50", "--set", "train.ema=0.999",
                       "--set", f"train.checkpoint_every={s['mdlm_steps']}", *common], times)
    if find_checkpoint(sdtt) is None:
        stage("imsdtt", ["distill", "--method", "imdm-sdtt", "--teacher", str(mdlm), "--out", str(sdtt),
                         "--set", "distill.start_steps=8", "--set", "distill.target_steps=2",
                         "--set", f"distill.grow_every={s['grow_every']}", "--set", f"train.lr={s['distill_lr']}",
                         "--set", "train.warmup=20", "--set", "train.ema=0.999",
                         "--set", f"train.checkpoint_every={2 * s['grow_every']}", "--set", "model.label_dim=768",
                         *common], times)
    if not (work / "judge" / "judge.json").is_file():
        stage("judge", ["train-judge", "--data", data, *s["judge"], "--out", str(work / "judge")], times)
    judge = json.loads((work / "judge" / "judge.json").read_text())
    try:
        import matplotlib  # noqa: F401
        plot = ["--plot", str(out / "gpu_distill_check.png")]
    except ImportError:
        plot = ["--no-plot"]
    stage("evaluate", ["evaluate", "--ckpt", str(mdlm), str(sdtt / "rounds" / "round-1-4-steps"),
                       str(sdtt / "rounds" / "round-2-2-steps"), "--steps", "1,2,4", "--n", str(s["n"]),
                       "--batch-size", str(s["eval_batch"]), "--val-batches", str(s["val_batches"]),
                       "--judge", str(work / "judge"), "--out", str(work / "eval.json"), *plot], times)
    records = [json.loads(line) for line in (sdtt / "metrics.jsonl").read_text().splitlines()]
    result = {
        **json.loads((work / "eval.json").read_text()),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(), "settings": s, "corpus": data,
        "seconds": times, "judge_training": {k: judge[k] for k in ("size", "steps", "val_ppl", "parameters")},
        "sdtt_loss": [{k: r[k] for k in ("step", "loss")} for r in records if "loss" in r],
        "sdtt_tokens_per_s": [r["tokens_per_s"] for r in records if "tokens_per_s" in r][-1:],
    }
    path = out / "gpu_distill_check.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
