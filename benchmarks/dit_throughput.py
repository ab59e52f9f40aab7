"""Training throughput of the DiT: tokens/s, model FLOPs utilisation and peak memory of one step.

One timed iteration = the shared ELBO kernel (masking, eps draw, forward, SUBS, weighted NLL), the
backward pass and a fused (CUDA) / default (CPU) AdamW step on a batch of random tokens. Each variant
runs in a fresh subprocess: eager or torch.compile'd model, full logits or the chunked head
(train.loss = full / chunked / chunked-all).

Model FLOPs per token: 6 x (the weights of every per-token matrix product: qkv, out, MLP, the eps-MLP and
the output projection) + 12 x blocks x L x d for attention scores and values; the per-sequence matrix
products (adaLN modulations, timestep MLP) are counted once per sequence, i.e. divided by L. The chunked
loss applies the output projection to masked rows only, so its share is scaled by the masked fraction
E[1 - alpha_t] of the drawn times (its recomputation in the backward is not model work and not counted);
chunked-all applies it to every row, so its share is not scaled.

MFU = achieved model FLOP/s / peak. On CUDA the peak is the card's dense bf16 (or fp32) figure from the
table below (or --peak-tflops); on a CPU it is the measured float32 matrix-product rate of the same
machine (so the CPU MFU reads "fraction of what this CPU's GEMM reaches"). Peak memory: CUDA
max_memory_allocated; CPU the process's maximum resident set.

    python benchmarks/dit_throughput.py --device cpu --size tiny-cpu --length 128 --batch 8 --vocab 30522
    python benchmarks/dit_throughput.py --device cuda --size small --length 1024 --batch 32   # bf16
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fresh_process import append_jsonl, fresh_process_result  # noqa: E402 (beside this script)

from imdm_lab.losses import elbo  # noqa: E402
from imdm_lab.schedules import get_schedule  # noqa: E402
from scale.model.dit import SIZES, DiT, DiTConfig  # noqa: E402
from scale.training.trainer import LOSSES  # noqa: E402

# Dense (no sparsity) peak TFLOP/s by device-name fragment: (bf16, fp32 / tf32-free).
PEAK_TFLOPS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
               "L40S": (362.0, 91.6), "A10G": (125.0, 31.2), "RTX 4090": (165.0, 82.6)}


def _per_sequence(name: str) -> bool:
    """Linears applied to the conditioning vector c [B, cond] (once per sequence, not per token)."""
    return "adaLN_modulation" in name or name.startswith("sigma_map")


def matmul_flops(model: DiT) -> tuple[int, int, int]:
    """Weights in matrix products: (per token, except the output projection; the output projection;
    per sequence)."""
    head = model.output_layer.linear
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    per_seq = sum(m.weight.numel() for n, m in linears if _per_sequence(n))
    per_token = sum(m.weight.numel() for n, m in linears if not _per_sequence(n) and m is not head)
    return per_token, head.weight.numel(), per_seq


def flops_per_token(model: DiT, length: int, head_fraction: float = 1.0) -> float:
    """Model FLOPs per token of forward + backward; head_fraction: share of rows the output projection sees."""
    dims = model.config.dims
    per_token, head, per_seq = matmul_flops(model)
    return 6 * (per_token + head_fraction * head + per_seq / length) + 12 * dims.blocks * length * dims.hidden


def cpu_peak_tflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    tic = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - tic) / 1e12


def peak_tflops(device: torch.device, bf16: bool, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "given"
    if device.type == "cpu":
        return cpu_peak_tflops(), "measured fp32 GEMM"
    name = torch.cuda.get_device_name(device)
    for key, (p16, p32) in PEAK_TFLOPS.items():
        if key in name:
            return (p16 if bf16 else p32), f"{name} dense {'bf16' if bf16 else 'fp32'}"
    return None, f"{name} (no peak known; pass --peak-tflops)"


def measure(args) -> dict:
    """One variant in this process."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = DiTConfig(vocab_size=args.vocab, mask_id=args.vocab - 1, size=args.size, labels=args.labels,
                       label_dim=args.label_dim, bf16=not args.fp32)
    model = DiT(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True if device.type == "cuda" else None)
    forward = torch.compile(model) if args.compile else model
    rows = LOSSES[args.loss]  # the head's rows: masked / all, None for the full logits
    efficient = rows is not None
    if efficient:
        forward = functools.partial(forward, head_rows=rows)
    x0 = torch.randint(0, args.vocab - 1, (args.batch, args.length), device=device)
    gen = torch.Generator(device).manual_seed(0)
    masked_fraction = []

    def step():
        t = torch.rand(args.batch, device=device, generator=gen) * 0.999 + 1e-3
        masked_fraction.append(1.0 - get_schedule(config.schedule).alpha(t))
        loss = elbo(forward, x0, t, process=model.process, generator=gen,
                    efficient=efficient, validate=False).mean
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    masked_fraction.clear()
    tic = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - tic) / args.iters
    tokens_per_s = args.batch * args.length / seconds
    head_fraction = float(torch.cat(masked_fraction).mean()) if rows == "masked" else 1.0
    achieved = tokens_per_s * flops_per_token(model, args.length, head_fraction) / 1e12
    bf16 = device.type == "cuda" and not args.fp32
    peak, peak_source = peak_tflops(device, bf16, args.peak_tflops)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**30
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {
        "size": args.size, "length": args.length, "batch": args.batch, "vocab": args.vocab, "labels": args.labels,
        "compile": args.compile, "loss": args.loss,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "precision": "bf16 autocast" if bf16 else "fp32", "parameters": sum(q.numel() for q in model.parameters()),
        "seconds_per_iter": seconds, "tokens_per_s": tokens_per_s, "head_fraction": head_fraction,
        "model_tflops": achieved, "peak_tflops": peak, "peak_source": peak_source,
        "mfu": None if peak is None else achieved / peak, "peak_memory_gib": memory, "torch": torch.__version__}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", default="tiny-cpu", choices=sorted(SIZES))
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=50258, help="classes C (GPT-2 + mask: 50258)")
    p.add_argument("--labels", default="rand", help="the label law: none (MDLM), rand, randn, learnable")
    p.add_argument("--label-dim", type=int, default=None, help="D of continuous labels (default: the hidden size)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens there)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--variants", default="eager:full,eager:chunked,compile:full,compile:chunked",
                   help="comma-separated eager|compile:full|chunked|chunked-all, each run in a fresh subprocess")
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)  # one variant, in this process
    p.add_argument("--loss", choices=sorted(LOSSES), default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="append the results as JSON lines")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device: expected a device this machine has, got cuda (no CUDA device)")
    if args.loss is not None:
        result = measure(args)
        print(json.dumps(result))
        return [result]
    variants = [v.split(":") for v in args.variants.split(",")]
    if any(len(v) != 2 or v[0] not in ("eager", "compile") or v[1] not in LOSSES for v in variants):
        p.error(f"--variants: expected eager|compile:full|chunked|chunked-all items, got {args.variants!r}")
    passed = list(argv if argv is not None else sys.argv[1:])
    results = []
    for mode, loss in variants:
        extra = ["--loss", loss] + (["--compile"] if mode == "compile" else [])
        try:
            results.append(fresh_process_result(__file__, [*passed, *extra]))
        except RuntimeError as err:
            print(f"{mode}:{loss} failed: {err}", file=sys.stderr)
    print(f"{'variant':<16} {'tokens/s':>10} {'model TFLOP/s':>13} {'MFU':>7} {'peak GiB':>9}")
    for r in results:
        mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
        name = f"{'compile' if r['compile'] else 'eager'}:{r['loss']}"
        print(f"{name:<16} {r['tokens_per_s']:>10.0f} {r['model_tflops']:>13.4g} {mfu:>7} {r['peak_memory_gib']:>9.2f}")
    if results:
        print(f"device {results[0]['device']}, {results[0]['precision']}, peak {results[0]['peak_tflops']} TFLOP/s "
              f"({results[0]['peak_source']})")
    if args.out:
        append_jsonl(args.out, results)
    return results


if __name__ == "__main__":
    main()
