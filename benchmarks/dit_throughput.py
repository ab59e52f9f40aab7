"""Training throughput of the DiT: tokens/s and model FLOPs utilisation of forward + backward.

One timed iteration = the shared ELBO kernel (masking, eps draw, forward, SUBS, weighted NLL) and the
backward pass on a batch of random tokens; no optimizer step. Model FLOPs per token follow the usual
count for transformers: 6 N (N = weights used in matrix products: every Linear, the output projection
and the eps-MLP; not the embedding lookup) plus 12 * blocks * L * d for the attention scores and
values (forward 1/3, backward 2/3).

MFU = achieved model FLOP/s / peak. On CUDA the peak is the card's dense bf16 (or fp32) figure from the
table below (or --peak-tflops); on a CPU it is the measured float32 matrix-product rate of the same
machine (so the CPU MFU reads "fraction of what this CPU's GEMM reaches").

    python benchmarks/dit_throughput.py --size tiny-cpu --length 128 --batch 8
    python benchmarks/dit_throughput.py --size small --length 1024 --batch 32    # GPU, bf16
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imdm_lab.losses import elbo  # noqa: E402
from scale.model import SIZES, DiT, DiTConfig  # noqa: E402

# Dense (no sparsity) peak TFLOP/s by device-name fragment: (bf16, fp32 / tf32-free).
PEAK_TFLOPS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
               "L40S": (362.0, 91.6), "A10G": (125.0, 31.2), "RTX 4090": (165.0, 82.6)}


def matmul_flops(model: DiT) -> int:
    """N: weights that take part in a matrix product per token (all Linear weights)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def flops_per_token(model: DiT, length: int) -> float:
    dims = model.config.dims
    return 6 * matmul_flops(model) + 12 * dims.blocks * length * dims.hidden


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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="tiny-cpu", choices=sorted(SIZES))
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--vocab", type=int, default=50258, help="classes C (GPT-2 + mask: 50258)")
    p.add_argument("--noise", default="rand", help="none (MDLM) or an eps kind")
    p.add_argument("--noise-dim", type=int, default=0)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--out", default=None, help="append the result as one JSON line")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    config = DiTConfig(vocab_size=args.vocab, mask_id=args.vocab - 1, size=args.size, noise=args.noise,
                       noise_dim=args.noise_dim, bf16=not args.fp32)
    model = DiT(config).to(device).train()
    x0 = torch.randint(0, args.vocab - 1, (args.batch, args.length), device=device)
    gen = torch.Generator(device).manual_seed(0)

    def step():
        t = torch.rand(args.batch, device=device, generator=gen) * 0.999 + 1e-3
        loss = elbo(model, x0, t, config.schedule, config.mask_id, noise=model.noise, generator=gen).mean
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - tic) / args.iters
    tokens_per_s = args.batch * args.length / seconds
    achieved = tokens_per_s * flops_per_token(model, args.length) / 1e12
    bf16 = device.type == "cuda" and not args.fp32
    peak, peak_source = peak_tflops(device, bf16, args.peak_tflops)
    result = {
        "size": args.size, "length": args.length, "batch": args.batch, "vocab": args.vocab, "noise": args.noise,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "precision": "bf16 autocast" if bf16 else "fp32", "parameters": sum(q.numel() for q in model.parameters()),
        "seconds_per_iter": seconds, "tokens_per_s": tokens_per_s, "model_tflops": achieved,
        "peak_tflops": peak, "peak_source": peak_source, "mfu": None if peak is None else achieved / peak,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "torch": torch.__version__}
    print(json.dumps(result))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    main()
