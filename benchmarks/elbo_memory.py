"""Peak memory and time of one DiT training step (forward + ELBO + backward): full logits vs chunked head.

    python benchmarks/elbo_memory.py --size small --length 1024 --batch 2 --vocab 50258
    python benchmarks/elbo_memory.py --device cuda --size small --length 1024 --batch 32

Each variant runs in a fresh subprocess, so no allocator cache carries over:
  full     elbo(model, ...): float32 logits Float[B, L, C], SUBS log-probs and their gradients
  chunked  elbo(model, ..., efficient=True): the head's NLL at masked rows only, 1024 rows at a time,
           recomputed in the backward (imdm_lab.head_nll)
  trunk    the same step with the head and the loss replaced by h.sum(): what the rest of the step needs
A first step creates the parameter gradients (kept, zeroed, from then on); the second is measured:
peak = the most memory its tensors held at once above what was held before it (CPU: the running total
of the profiler's allocation events, torch.profiler profile_memory; CUDA: max_memory_allocated minus
memory_allocated), i.e. activations and temporaries, not weights or gradients. The loss's own peak is a
variant's peak minus the trunk's. Time: median of --iters further steps (not profiled).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fresh_process import append_jsonl, fresh_process_result  # noqa: E402 (beside this script)

from imdm_lab.losses import elbo  # noqa: E402
from imdm_lab.masking import q_sample  # noqa: E402
from scale.model.dit import SIZES, DiT, DiTConfig  # noqa: E402


def _full(model, x0, t, gen):
    return elbo(model, x0, t, generator=gen,
                validate=False).mean


def _chunked(model, x0, t, gen):
    return elbo(model, x0, t, generator=gen,
                efficient=True, validate=False).mean


def _trunk(model, x0, t, gen):
    x_t, _ = q_sample(x0, t, model.config.schedule, model.config.mask_id, generator=gen, validate=False)
    eps = model.process.draw_labels(*x0.shape, generator=gen, device=x0.device)
    h, _ = model.hidden(x_t, eps, t, validate=False)
    return h.float().sum()


# variant -> loss of one micro-batch
VARIANTS = {"full": _full, "chunked": _chunked, "trunk": _trunk}


def _profiled_peak_bytes(fn) -> int:
    """Most bytes allocated at once while fn() runs, net of what was allocated before (CPU tensors)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.load(open(f.name))["traceEvents"]
    totals = [e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"]
    return max(totals, default=0)


def run_variant(args) -> dict:
    """One variant in this process: the first step's peak, then the median time of --iters steps."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = DiTConfig(vocab_size=args.vocab, mask_id=args.vocab - 1, size=args.size, labels=args.labels)
    model = DiT(config).to(device).train()
    x0 = torch.randint(0, args.vocab - 1, (args.batch, args.length), device=device)
    gen = torch.Generator(device).manual_seed(0)
    loss_fn = VARIANTS[args.variant]

    def step():
        t = torch.rand(args.batch, device=device, generator=gen) * 0.999 + 1e-3
        loss_fn(model, x0, t, gen).backward()
        model.zero_grad(set_to_none=False)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _profiled_peak_bytes(step)
    times = []
    for _ in range(args.iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    return {"variant": args.variant, "peak_gib": peak / 2**30, "step_s": statistics.median(times)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="small", choices=sorted(SIZES))
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--vocab", type=int, default=50258, help="classes C (GPT-2 + mask: 50258)")
    p.add_argument("--labels", default="rand", help="the label law: none (MDLM), rand, randn, learnable")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=1)
    p.add_argument("--variant", choices=sorted(VARIANTS), help="run one variant in this process")
    p.add_argument("--out", default=None, help="append the results as JSON lines")
    args = p.parse_args(argv)
    if args.variant:
        result = run_variant(args)
        print(json.dumps(result))
        return [result]
    results = []
    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    for variant in ("trunk", "full", "chunked"):
        results.append(fresh_process_result(__file__, [*passed, "--variant", variant]))
    trunk = results[0]["peak_gib"]
    for r in results:
        r["loss_peak_gib"] = r["peak_gib"] - trunk
        r.update(size=args.size, length=args.length, batch=args.batch, vocab=args.vocab, device=args.device,
                 threads=torch.get_num_threads(), torch=torch.__version__)
    full, chunked = results[1], results[2]
    print(f"{'variant':<8} {'step peak GiB':>13} {'loss peak GiB':>13} {'step s':>7}")
    for r in results:
        print(f"{r['variant']:<8} {r['peak_gib']:>13.2f} {r['loss_peak_gib']:>13.2f} {r['step_s']:>7.2f}")
    print(f"chunked / full: loss peak {chunked['loss_peak_gib'] / full['loss_peak_gib']:.3f}, "
          f"step time {chunked['step_s'] / full['step_s']:.3f}")
    if args.out:
        append_jsonl(args.out, results)
    return results


if __name__ == "__main__":
    main()
