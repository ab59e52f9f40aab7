"""Sampler overhead per step (posterior + categorical draw + bookkeeping) vs one network forward.

    python benchmarks/sampler_overhead.py [--device cpu] [--batch 64] [--length 128] [--vocab 30522]
        [--dim 256] [--layers 8] [--heads 8] [--steps 8,128] [--repeats 3] [--threads N]

The network is a minimal pre-LN transformer (IMDM mask embedding -> nn.TransformerEncoder -> linear
head over the vocabulary), by default the size of the DiT "tiny" config (d = 256, 8 blocks). The
sampler's own time is measured by replaying one precomputed logits tensor (a denoiser that costs
nothing), so overhead/step = sampler time / steps and the ratio is overhead/step over one forward.
BERT-like token convention: mask id 103 inside the vocabulary. IMDM rows use U(-1, 1)^d labels hashed
from per-sample seeds, with resets (fix_eps off), as the official sampler does.
"""
import argparse
import os
import statistics
import time

import torch
from torch import nn

from imdm_lab.embedding import MaskEmbedding
from imdm_lab.labels import MaskLabels
from imdm_lab.process import Process
from imdm_lab.sampling import SamplerOptions, sample

MASK_ID = 103


class TinyTransformer(nn.Module):
    """(x_t, eps, t) -> logits Float[B, L, V]; no time conditioning (as MDLM / IMDM)."""

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, labels: MaskLabels):
        super().__init__()
        self.embed = MaskEmbedding(vocab, dim, MASK_ID, labels=labels)
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x_t, eps, t):
        return self.head(self.norm(self.blocks(self.embed(x_t, eps))))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, device, repeats):
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--steps", default="8,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B, L, V = args.batch, args.length, args.vocab
    labels = MaskLabels("rand", dim=args.dim)
    net = TinyTransformer(V, args.dim, args.layers, args.heads, labels).to(device).eval()
    # a trained-looking eps path, so IMDM forwards are not trivially MDLM's
    nn.init.normal_(net.embed.imdm_mlp[2].weight, std=0.02)
    x = torch.full((B, L), MASK_ID, device=device)
    eps = labels.from_seeds(torch.arange(B, device=device), L)
    t = torch.ones(B, device=device)
    with torch.no_grad():
        logits = net(x, eps, t)
        forward = _median_time(lambda: net(x, eps, t), device, args.repeats)

    def replay(x_t, e, tt):
        return logits

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"device {device} ({threads} threads), B={B}, L={L}, V={V}, net d={args.dim} x {args.layers} "
          f"blocks ({sum(p.numel() for p in net.parameters()) / 1e6:.1f}M params), "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"one forward: {forward * 1e3:.1f} ms\n")
    print("| model | draws | steps | network calls | sampler overhead / step (ms) | overhead / forward |")
    print("|---|---|---|---|---|---|")
    for k in (int(s) for s in args.steps.split(",")):
        for model, nz in (("MDM", None), ("IMDM", labels)):
            for dtype in (torch.float64, torch.float32):
                seeds = torch.arange(B, device=device) if nz is not None else None
                process = Process(mask_id=MASK_ID, schedule="loglinear", labels=nz)
                options, result = SamplerOptions(dtype=dtype), {}

                def run(k=k, process=process, seeds=seeds, options=options, result=result):
                    g = torch.Generator(device=device).manual_seed(0)
                    result["out"] = sample(replay, batch_size=B, length=L, steps=k, process=process,
                                           seeds=seeds, generator=g, device=device, options=options)
                total = _median_time(run, device, args.repeats)
                per_step = total / k
                print(f"| {model} | {str(dtype).replace('torch.', '')} | {k} | {result['out'].nfe} | "
                      f"{per_step * 1e3:.2f} | {100 * per_step / forward:.1f}% |")


if __name__ == "__main__":
    main()
