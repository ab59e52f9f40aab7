"""Throughput of the trainer itself: `python -m scale train` run for a few steps per variant.

Each variant is a fresh `python -m scale train` (or `torchrun ... -m scale train`) with its own settings,
environment and a temporary --out. Its tokens/s is read from the run's metrics.jsonl: the steps of the
records after the first `--skip` ones (warm-up, compilation) over their summed wall time (each record's
tokens_per_s covers log_every steps). The child's user / system CPU seconds and minor page faults come
from resource.getrusage(RUSAGE_CHILDREN) before and after it (whole process: start-up included).

Model GFLOP/s = tokens/s x benchmarks/dit_throughput.flops_per_token of the run's model (the DiT of the
config in its last checkpoint); the chunked loss's head share is scaled by E[1 - alpha_t] over
t ~ U[t_min, 1] (the rows it sees). Its fraction of this machine's measured float32 GEMM rate
(dit_throughput.cpu_peak_tflops) reads "share of what a bare matrix product reaches here".

The large-vocabulary pair trains with the GPT-2 tokenizer (50 258 classes, chunked loss) with glibc's
malloc defaults (a no-op glibc.malloc tunable, which makes imdm_lab.allocator leave malloc alone)
and with the project's default (imdm_lab.allocator.keep_freed_memory: no mmap, no trim).

    python benchmarks/train_throughput.py --tokenizer DIR --out results.jsonl   # DIR: a 257-token BPE
    python benchmarks/train_throughput.py --quick      # a few steps of tiny-cpu, to check the script
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dit_throughput import cpu_peak_tflops, flops_per_token  # noqa: E402 (beside this script)
from fresh_process import append_jsonl  # noqa: E402

from imdm_lab.schedules import get_schedule  # noqa: E402
from scale.checkpoints.checkpoint import read_state  # noqa: E402
from scale.model.dit import DiT  # noqa: E402
from scale.training.trainer import LOSSES  # noqa: E402

# glibc's malloc as it is by default, imdm_lab.allocator told to leave it alone by a malloc tunable that
# changes nothing (perturb 0 is the default); MALLOC_MMAP_MAX_ would not do: setting it, even to its
# default, turns off glibc's dynamic mmap threshold
GLIBC_DEFAULTS = {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}


@dataclasses.dataclass(frozen=True)
class Variant:
    sets: tuple[str, ...] = ()  # --set overrides
    env: tuple[tuple[str, str], ...] = ()
    procs: int = 1  # > 1: torchrun --standalone --nproc_per_node procs
    large: bool = False  # the GPT-2 vocabulary at --large-size instead of --tokenizer


def _env(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(kw.items())


VARIANTS: dict[str, Variant] = {
    "before": Variant(env=_env(**GLIBC_DEFAULTS)),  # the trainer's defaults with glibc's malloc defaults
    "default": Variant(),
    "threads-1": Variant(env=_env(OMP_NUM_THREADS="1")),
    "threads-2": Variant(env=_env(OMP_NUM_THREADS="2")),
    "compile": Variant(sets=("train.compile=true",)),
    "fused-adamw": Variant(sets=("train.optimizer_impl=fused",)),
    "batch-64": Variant(sets=("train.global_batch=64", "train.micro_batch=64")),
    "micro-16": Variant(sets=("train.micro_batch=16",)),
    "torchrun-2x1": Variant(env=_env(OMP_NUM_THREADS="1"), procs=2),
    "compile+fused": Variant(sets=("train.compile=true", "train.optimizer_impl=fused")),
    "compile+fused+batch-64": Variant(sets=("train.compile=true", "train.optimizer_impl=fused",
                                            "train.global_batch=64", "train.micro_batch=64")),
    # the text8-cpu teacher's model: the local attention bias and PyTorch's init (scale/configs/text8-cpu.toml)
    "local-bias": Variant(sets=("model.local_bias=1", "model.init=torch")),
    "local-bias+compile+fused": Variant(sets=("model.local_bias=1", "model.init=torch", "train.compile=true",
                                              "train.optimizer_impl=fused")),
    "large-before": Variant(env=_env(**GLIBC_DEFAULTS), large=True),
    "large": Variant(large=True),
}
FULL = ",".join(VARIANTS)
QUICK = "before,default,fused-adamw"


def _command(variant: Variant, args, out: Path, steps: int) -> list[str]:
    """The command line of one run of `variant`."""
    data = ([f"data.tokenizer={args.large_tokenizer}", f"model.size={args.large_size}", "train.loss=chunked"]
            if variant.large else [f"data.tokenizer={args.tokenizer}"])
    sets = [f"data.length={args.length}", f"train.log_every={args.log_every}", *data, *variant.sets]
    head = [sys.executable, *(["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={variant.procs}"]
                              if variant.procs > 1 else [])]  # torch.distributed.run: torchrun
    return [*head, "-m", "scale", "train", "--config", args.config, "--out", str(out), "--max-steps", str(steps),
            *[x for s in sets for x in ("--set", s)]]


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _tokens_per_s(metrics: Path, skip: int, log_every: int, tokens_per_step: int) -> float:
    """Steps after the first `skip` logged records over their wall time (each record: log_every steps)."""
    records = [r for r in map(json.loads, metrics.read_text().splitlines()) if "tokens_per_s" in r][skip:]
    if not records:
        raise RuntimeError(f"{metrics}: no record after the first {skip}; run more steps")
    seconds = sum(log_every * tokens_per_step / r["tokens_per_s"] for r in records)
    return len(records) * log_every * tokens_per_step / seconds


def _model_flops_per_token(run: Path) -> tuple[float, dict]:
    """Model FLOPs per token of the run's DiT (its last checkpoint's config) and that config."""
    config = read_state(run).config
    model = DiT(config.model)
    head_fraction = 1.0
    if LOSSES[config.train.loss] == "masked":  # E[1 - alpha_t], t ~ U[t_min, 1]
        t = torch.linspace(config.train.t_min, 1.0, 10_001, dtype=torch.float64)
        head_fraction = float((1 - get_schedule(config.model.schedule).alpha(t)).mean())
    return flops_per_token(model, config.data.length, head_fraction), config.to_dict()


def run_variant(name: str, args, peak_tflops: float) -> dict:
    variant = VARIANTS[name]
    steps = args.large_steps if variant.large else args.steps
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        out = Path(tmp) / "run"
        env = {**os.environ, **dict(variant.env)}
        before = _usage()
        tic = time.perf_counter()
        done = subprocess.run(_command(variant, args, out, steps), env=env, capture_output=True, text=True)
        wall = time.perf_counter() - tic
        user, system, faults = (b - a for a, b in zip(before, _usage(), strict=True))
        if done.returncode:
            lines = done.stderr.strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
        flops, config = _model_flops_per_token(out)
        train = config["train"]
        tokens_per_s = _tokens_per_s(out / "metrics.jsonl", args.skip, args.log_every,
                                     train["global_batch"] * config["data"]["length"])
    gflops = tokens_per_s * flops / 1e9
    return {"variant": name, "tokens_per_s": tokens_per_s, "model_gflops": gflops,
            "peak_fraction": gflops / (1e3 * peak_tflops), "peak_gflops": 1e3 * peak_tflops,
            "user_s": user, "sys_s": system, "minor_faults": faults, "steps": steps, "wall_s": wall,
            "sys_s_per_step": system / steps, "faults_per_step": faults / steps,
            "classes": config["model"]["vocab_size"], "size": config["model"]["size"],
            "length": config["data"]["length"], "global_batch": train["global_batch"],
            "micro_batch": train["micro_batch"], "procs": variant.procs, "sets": list(variant.sets),
            "env": dict(variant.env), "load_average": os.getloadavg()[0], "torch": torch.__version__}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="wiki-cpu", help="the trainer's config (a name of scale/configs or a file)")
    p.add_argument("--tokenizer", default="bert-base-uncased",
                   help="data.tokenizer of the small-vocabulary variants (e.g. a 257-token BPE folder)")
    p.add_argument("--large-tokenizer", default="gpt2", help="data.tokenizer of the large-vocabulary variants")
    p.add_argument("--large-size", default="synthetic", help="model.size of the large-vocabulary variants")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--large-steps", type=int, default=12)
    p.add_argument("--log-every", type=int, default=4)
    p.add_argument("--skip", type=int, default=2, help="logged records left out first (warm-up, compilation)")
    p.add_argument("--variants", default=None, help=f"comma-separated names of {FULL}")
    p.add_argument("--quick", action="store_true", help="tiny-cpu, length 32, a few steps, three variants")
    p.add_argument("--out", default=None, help="append the results as JSON lines")
    args = p.parse_args(argv)
    if args.quick:
        args.config, args.length, args.steps, args.large_steps, args.log_every, args.skip = \
            "tiny-cpu", 32, 4, 4, 2, 1
    names = (args.variants or (QUICK if args.quick else FULL)).split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"--variants: expected names of {FULL}, got {','.join(unknown)}")
    if min(args.steps, args.large_steps) <= args.skip * args.log_every:
        p.error(f"--steps/--large-steps: expected more than --skip x --log-every = {args.skip * args.log_every}")
    peak = cpu_peak_tflops()
    results = []
    for name in names:
        try:
            results.append(run_variant(name, args, peak))
            print(f"{name}: {results[-1]['tokens_per_s']:.0f} tokens/s", file=sys.stderr)
        except RuntimeError as err:
            print(f"{name} failed: {err}", file=sys.stderr)
    first = {}  # classes -> tokens/s of the first variant at that vocabulary: the speed-ups' reference
    print(f"{'variant':<14} {'classes':>7} {'tokens/s':>9} {'speed-up':>8} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'sys s':>6} {'faults':>9}")
    for r in results:
        r["speedup"] = r["tokens_per_s"] / first.setdefault(r["classes"], r["tokens_per_s"])
        print(f"{r['variant']:<14} {r['classes']:>7} {r['tokens_per_s']:>9.0f} {r['speedup']:>7.2f}x "
              f"{r['model_gflops']:>8.1f} {100 * r['peak_fraction']:>7.1f}% {r['sys_s']:>6.2f} {r['minor_faults']:>9}")
    print(f"measured fp32 GEMM peak {1e3 * peak:.0f} GFLOP/s, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.out:
        append_jsonl(args.out, results)
    return results


if __name__ == "__main__":
    main()
