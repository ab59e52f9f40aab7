"""`python -m toy_tasks experiment --preset redi-epochs`: IM-ReDi and ReDi against the number of epochs over
a finite set of coupling pairs, with the mechanism measured next to the outcome.

A finite coupling {(x_t^n, x_0^n, seed_n)} has no conditional total correlation left: given the seed, the
stored x_0 is one sequence. An IMDM student that memorises (x_t, eps(seed)) -> x_0 and, being a smooth
network, carries the stored seeds' completions over to nearby fresh labels, maps label space onto
sequences: a partition, learned from the pairs' seeds, although the ELBO teacher ignored its labels.
An MDM student has no labels to partition and stays at the factorization bound. Measured per model:

- one-step KL(p || q), success and coverage on fresh labels (toy_tasks.evaluate);
- `reproduction`: fraction of stored pairs whose greedy completion of x_t with eps(seed) is x_0;
- `stored`: fraction of fresh-label greedy one-step outputs that are one of the stored x_0;
- `nearest` / `nearest_full`: fraction equal to the x_0 of the stored seed nearest in label space
  (Euclidean over the L x D labels), among all pairs / among the fully masked pairs (on `align` a visible
  token fixes x_0, so only the fully masked pairs' x_0 depend on their seed);
- `eps_output_norm`: RMS variation over eps of the mask embedding.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import torch

from imdm_lab import durable
from imdm_lab.exact import align_success
from imdm_lab.losses import subs_log_probs
from toy_tasks.evaluate import evaluate
from toy_tasks.methods import DEMO_BUDGET, Run
from toy_tasks.task_views import task_view

TASK = ("align", {"V": 16, "L": 4})
SIZE = "demo"
BUDGET = DEMO_BUDGET  # pairs and ReDi steps are varied below, everything else is the demo's
PAIRS = (256, 1024)
EPOCHS = (4, 16, 64, 256, 1024)
STUDENTS = {"imdm-redi": "imdm-elbo", "redi": "mdm"}  # student -> the teacher its pairs come from
SAMPLES = 8192
REFERENCE_STEPS = (1, 2, 4)


class Study(NamedTuple):
    """A preset that is not a methods-by-steps table: how it runs, prints, plots and sums up."""

    run: Callable  # (seed, methods, progress, workers) -> result dict
    table: Callable  # result -> str
    plot: Callable  # (result, path) -> None
    summary: Callable  # result -> str


def _codes(x: torch.Tensor, V: int) -> torch.Tensor:
    """Each row of Long[N, L] as one integer (base V)."""
    return (x * V ** torch.arange(x.shape[1] - 1, -1, -1)).sum(1)


@torch.no_grad()
def mechanism(model, pairs, n: int, generator: torch.Generator) -> dict:
    """Train-set reproduction and how fresh-label one-step outputs relate to the stored pairs (see above)."""
    L, V, mask = model.L, model.V, model.mask_id
    stored_eps = model.process.draw_labels(len(pairs.seeds), L, seeds=pairs.seeds)
    logp = subs_log_probs(model(pairs.x_t, stored_eps, pairs.t.float()), pairs.x_t, mask)
    reproduction = float((logp.argmax(-1) == pairs.x_0).all(1).double().mean())
    eps = model.process.draw_labels(n, L, generator=generator)
    x = torch.full((n, L), mask, dtype=torch.int64)
    out = subs_log_probs(model(x, eps, torch.ones(n)), x, mask).argmax(-1)
    stored = float(torch.isin(_codes(out, V), _codes(pairs.x_0, V)).double().mean())
    row = {"reproduction": reproduction, "stored": stored, "nearest": None, "nearest_full": None}
    if eps is not None:
        full = (pairs.x_t == mask).all(1)
        for key, keep in (("nearest", torch.ones_like(full)), ("nearest_full", full)):
            bank = stored_eps[keep].flatten(1)
            near = torch.cdist(eps.flatten(1), bank).argmin(1)
            row[key] = float((out == pairs.x_0[keep][near]).all(1).double().mean())
    return row


def _one_size(seed: int, pairs: int, students: list[str]) -> list[dict]:
    """Every (student, epochs) at one number of pairs; the teachers are trained once."""
    torch.set_num_threads(1)  # one thread per process, as in toy_tasks.experiment
    view = task_view(TASK[0], **TASK[1])
    base = Run(view, SIZE, BUDGET, seed)
    for teacher in {STUDENTS[s] for s in students}:
        base.get(teacher)
    rows = []
    for student in students:
        for epochs in EPOCHS:
            steps = max(1, round(epochs * pairs / BUDGET.batch))
            budget = dataclasses.replace(BUDGET, redi_pairs=pairs, redi_steps=steps)
            run = Run(view, SIZE, budget, seed, models=dict(base.models))
            start = time.perf_counter()
            model = run.get(student)
            seconds = round(time.perf_counter() - start, 1)
            salt = seed * 100_003 + zlib.crc32(f"{student}/{pairs}/{epochs}".encode())
            ev = evaluate(model, view, 1, SAMPLES, seed=salt)
            mech = mechanism(model, run.couplings[STUDENTS[student]], SAMPLES,
                             torch.Generator().manual_seed(salt + 1))
            rows.append({"method": student, "pairs": pairs, "epochs": budget.redi_epochs, "train_steps": steps,
                         "kl": ev["kl"], "kl_ci": ev["kl_ci"], "success": ev["success"],
                         "coverage": ev["coverage"], "kl_estimator": ev["kl_estimator"], **mech,
                         "eps_output_norm": model.eps_output_norm(generator=torch.Generator().manual_seed(seed)),
                         "train_seconds": seconds})
    return rows


def run_study(seed: int = 0, methods: list[str] | None = None, progress: bool = True, workers: int = 1) -> dict:
    """Train and measure every (student, pairs, epochs); the sizes run in parallel processes with workers > 1."""
    students = [s for s in STUDENTS if methods is None or s in methods]
    if not students:
        raise ValueError(f"method: preset 'redi-epochs' trains {', '.join(STUDENTS)}, got {methods}")
    if workers <= 1:
        parts = [_one_size(seed, n, students) for n in PAIRS]
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(PAIRS)), mp_context=ctx) as pool:
            parts = list(pool.map(_one_size, [seed] * len(PAIRS), PAIRS, [students] * len(PAIRS)))
    view = task_view(TASK[0], **TASK[1])
    V, L = view.V, view.L
    return {"preset": "redi-epochs", "seed": seed, "task": TASK[0], "V": V, "L": L, "batch": BUDGET.batch,
            "lr": BUDGET.finetune_lr, "total_correlation": view.total_correlation,
            "mdm_exact_kl": {str(k): view.mdm_kl(k) for k in REFERENCE_STEPS},
            "mdm_exact_success": {str(k): align_success(V, L, k) for k in REFERENCE_STEPS},
            "rows": [r for part in parts for r in part]}


def _f(x, digits=3):
    return "      -" if x is None else f"{x:7.{digits}f}"


def format_table(result: dict) -> str:
    lines = [f"\n{result['task']} V={result['V']} L={result['L']}  TC = {result['total_correlation']:.3f} nats; "
             f"one step, {SAMPLES} fresh labels; batch {result['batch']}, lr {result['lr']:g}",
             "exact MDM: " + ", ".join(f"{k} step{'s' * (k > 1)} KL {result['mdm_exact_kl'][str(k)]:.3f} "
                                       f"success {result['mdm_exact_success'][str(k)]:.4f}" for k in REFERENCE_STEPS),
             f"{'method':<10}{'pairs':>6}{'epochs':>7}{'KL@1':>8}{'succ':>8}{'cov':>8}{'repro':>8}{'stored':>8}"
             f"{'near':>8}{'nearF':>8}{'epsRMS':>8}{'train s':>8}"]
    for r in result["rows"]:
        lines.append(f"{r['method']:<10}{r['pairs']:>6}{r['epochs']:>7.0f} " + " ".join(
            _f(r[k]) for k in ("kl", "success", "coverage", "reproduction", "stored", "nearest", "nearest_full",
                               "eps_output_norm")) + f"{r['train_seconds']:>8.1f}")
    return "\n".join(lines)


def summary(result: dict) -> str:
    tc = result["total_correlation"]
    parts = []
    for (method, pairs) in dict.fromkeys((r["method"], r["pairs"]) for r in result["rows"]):
        rows = sorted((r for r in result["rows"] if r["method"] == method and r["pairs"] == pairs),
                      key=lambda r: r["epochs"])
        best = min(rows, key=lambda r: r["kl"] if r["kl"] is not None else float("inf"))
        parts.append(f"{method} on {pairs} pairs goes from {rows[0]['kl']:.2f} nats at {rows[0]['epochs']:.0f} "
                     f"epochs to {best['kl']:.2f} ({best['kl'] / tc:.2f} TC, success {best['success']:.2f}, "
                     f"coverage {best['coverage']:.2f}) at {best['epochs']:.0f}")
    return f"One-step KL against epochs over the pairs (TC {tc:.2f} nats): " + "; ".join(parts) + "."


# How plot() names and draws each quantity: key -> (panel title, y label, y limits or None for a log axis).
PANELS = {
    "kl": ("one-step KL on fresh labels", "KL(p || model) [nats]", None),
    "success": ("one-step success on fresh labels", "P(all tokens equal)", (-0.02, 1.02)),
    "coverage": ("one-step coverage on fresh labels", "fraction of the support drawn", (-0.02, 1.02)),
    "reproduction": ("memorisation: stored pairs reproduced", "fraction of the N pairs (greedy, eps(seed))",
                     (-0.02, 1.02)),
    "nearest_full": ("imdm-redi: fresh labels -> nearest stored seed?",
                     "fraction equal to the x_0 of the nearest\nfully masked pair's seed", (-0.02, 1.02)),
    "eps_output_norm": ("imdm-redi: how much the mask embedding reads eps", "RMS over eps [embedding units]",
                        (0.0, None)),
}
COLORS = {"imdm-redi": "#d62728", "redi": "#1f77b4"}  # the IMDM and the MDM family, as in toy_tasks.plot
LINES = {256: ("-", "o"), 1024: ("--", "s")}  # N pairs -> line style, marker


def plot(result: dict, path: str) -> None:
    """Six panels against epochs: the one-step outcome (KL, success, coverage) and the mechanism
    (reproduction of the stored pairs, agreement with the nearest stored seed, the eps-path RMS); colour
    = student, line style = number of pairs; the exact MDM's 1, 2 and 4 steps as dotted references."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    greys = {1: "0.2", 2: "0.45", 4: "0.7"}
    for ax, (key, (title, ylabel, ylim)) in zip(axes.flat, PANELS.items(), strict=True):
        if key in ("kl", "success"):
            ref = result["mdm_exact_kl" if key == "kl" else "mdm_exact_success"]
            for k in REFERENCE_STEPS:
                ax.axhline(ref[str(k)], color=greys[k], ls=":", lw=1.2, label=f"exact MDM, {k} step{'s' * (k > 1)}")
        for (method, pairs) in dict.fromkeys((r["method"], r["pairs"]) for r in result["rows"]):
            rows = [r for r in result["rows"] if r["method"] == method and r["pairs"] == pairs and r[key] is not None]
            if method == "redi" and key == "eps_output_norm":
                continue  # an MDM has no labels: 0 by construction
            style, marker = LINES.get(pairs, ("-.", "^"))
            ax.plot([r["epochs"] for r in rows], [r[key] for r in rows], ls=style, marker=marker, ms=5,
                    color=COLORS.get(method, "k"), label=f"{method}, N = {pairs} pairs")
        if key == "nearest_full":  # a fresh label's output equal to a random aligned sequence's
            ax.axhline(1 / result["V"], color="0.5", ls="-.", lw=1, label=f"chance, 1/V = {1 / result['V']:.3f}")
        ax.set(xscale="log", xlabel="epochs over the N pairs", ylabel=ylabel)
        ax.set_title(title, fontsize=10)
        if ylim is None:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "1246" else ""))
        else:
            ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"{result['task']} V={result['V']} L={result['L']}: ReDi (MDM) and IM-ReDi (IMDM) against epochs "
                 f"over a finite coupling, {SAMPLES} fresh labels per point", fontsize=11)
    fig.tight_layout()
    durable.write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


STUDY = Study(run_study, format_table, plot, summary)
