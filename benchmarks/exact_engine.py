"""Time the exact engine on a joint of V^L = 10^6 states: TC + the k-step law + KL + the stepwise bound.

    python benchmarks/exact_engine.py [--V 10] [--L 6] [--steps 1,2,3,4] [--seed 0]

Each row starts from a fresh joint (no cached marginal tables), so it is the full cost of one k.
Prints a markdown table and the machine's load average (the engine is single-threaded numpy).
"""
import argparse
import os
import sys
import time

import numpy as np

from imdm_lab.checks import check_int, parse_steps
from imdm_lab.exact import Marginals, check_size, kl, mdm_law, stepwise_bound, total_correlation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--V", type=int, default=10)
    parser.add_argument("--L", type=int, default=6)
    parser.add_argument("--steps", default="1,2,3,4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    check_size(check_int("V", args.V, 2), check_int("L", args.L, 1))
    steps = parse_steps("steps", args.steps)
    rng = np.random.default_rng(args.seed)
    p = rng.dirichlet(np.ones(args.V**args.L)).reshape((args.V,) * args.L)
    print(f"Dirichlet(1) joint, V={args.V}, L={args.L} ({args.V ** args.L:,} states), linear schedule\n")
    print("| k | TC (nats) | KL(p ‖ p_k) (nats) | stepwise bound (nats) | time (s) |")
    print("|---|---|---|---|---|")
    for k in steps:
        start = time.perf_counter()
        m = Marginals(p.copy())
        tc = total_correlation(m)
        divergence = kl(m, mdm_law(m, k))
        bound = stepwise_bound(m, k)
        elapsed = time.perf_counter() - start
        print(f"| {k} | {tc:.6f} | {divergence:.6f} | {bound:.6f} | {elapsed:.2f} |")
    print(f"\nload average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        sys.exit(2)

