"""Figures of the exact theory for any notebook or command: the k-step error of the exact MDM against its
stepwise bound with the exact IMDM on the same axes, and the one-step partition-and-map picture.

    fig = plot_bound("align", V=8, L=4, steps=[1, 2, 4, 8, 16])     # a matplotlib Figure
    save_bound_plot("bound.png", "markov", steps=[1, 2, 4])          # what `bound --plot FILE` writes

What is drawn, in nats (imdm_lab.exact):
- KL(p || p_k) of the exact k-step MDM, the MDM whose per-position laws are the true conditionals;
- B_k, the stepwise bound: the path KL of that MDM, the least path KL of any MDM with per-token
  factorised steps on the schedule, and an upper bound on its final-sample error, KL(p || p_k) <= B_k;
- TC(p) at k = 1: a one-step MDM draws the positions independently, and the product of marginals is the
  best product law, so every one-step MDM has KL >= TC(p) (= KL(p || p_1) = B_1);
- the exact IMDM, the partition-and-map oracle (toy_tasks.oracle.OracleIMDM): one shared uniform read
  from its labels is mapped to a sequence, so one step, or any k with its labels kept (fix_eps), samples
  the push-forward law of exact.partition_and_map(p), which is p: its KL is 0 up to float64 rounding and
  is drawn at the floor of the log axis.

Figures are built with matplotlib.figure.Figure, not pyplot: nothing is shown twice in a notebook (the
returned Figure displays itself as a cell's last value) and a command leaves no figure open.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from imdm_lab import durable
from imdm_lab.checks import check_figure_path
from imdm_lab.exact import (
    Marginals,
    check_steps_cost,
    kl,
    mdm_law,
    partition_and_map,
    stepwise_bound,
    total_correlation,
)
from imdm_lab.schedules import check_steps, get_schedule
from toy_tasks.distributions import ToyTask, make_task

DEFAULT_STEPS = (1, 2, 4, 8, 16, 32)
# sequences whose interval is narrower than this share of [0, 1) get no text label in the partition picture
LABEL_WIDTH = 0.04


@dataclass(frozen=True)
class BoundCurves:
    """The numbers of a bound figure (nats), one entry per step count of `steps` (increasing)."""

    label: str  # the task, e.g. "align V=8 L=4"
    schedule: str
    steps: tuple[int, ...]
    mdm_kl: tuple[float, ...]  # KL(p || p_k) of the exact k-step MDM
    bound: tuple[float, ...]  # B_k, the stepwise (path-KL) bound
    total_correlation: float  # TC(p) = KL(p || p_1) = B_1
    imdm_kl: float  # KL(p || q) of the partition-and-map push-forward q: 0 up to rounding


def _joint(task, params: dict) -> tuple[str, Marginals]:
    """(label, marginal tables) of a task name (built with params), a ToyTask, a joint or its Marginals."""
    if isinstance(task, str):
        task = make_task(task, **params)
    elif params:
        raise ValueError(f"{sorted(params)[0]}: task parameters go with a task name, got a {type(task).__name__}")
    if isinstance(task, ToyTask):
        described = " ".join(f"{k}={v}" for k, v in task.params.items() if k in ("V", "L"))
        return f"{task.name} {described}", Marginals(task.probs)
    m = task if isinstance(task, Marginals) else Marginals(task)
    return f"joint V={m.V} L={m.L}", m


def _steps(steps, m: Marginals) -> tuple[int, ...]:
    """Distinct step counts in increasing order, each within the exact engine's budgets (checked first)."""
    try:
        ks = sorted({check_steps(k) for k in steps})
    except TypeError:
        raise ValueError(f"steps: expected a sequence of integers >= 1, got {steps!r}") from None
    if not ks:
        raise ValueError("steps: expected at least one step count, got none")
    for k in ks:
        check_steps_cost(m.V, m.L, k, law=True)
    return tuple(ks)


def partition_law(p) -> np.ndarray:
    """The push-forward of U[0, 1) under g = exact.partition_and_map(p): Float64[(V,)*L], the law of the
    partition-and-map oracle's one-step sample; each x of the support gets the length of its interval."""
    m = p if isinstance(p, Marginals) else Marginals(p)
    g = partition_and_map(m)
    q = np.zeros_like(m.p)
    q[tuple(g.support.T)] = np.diff(g.edges)
    return q


def bound_curves(task, steps=DEFAULT_STEPS, schedule: str = "linear", **params) -> BoundCurves:
    """The exact curves of a task: a name of toy_tasks.distributions.TASKS (with its parameters, e.g.
    V=8, L=4), a ToyTask, a joint Float64[(V,)*L] or its exact.Marginals. Every step count is checked
    against the exact engine's budgets before the first law is computed."""
    schedule = get_schedule(schedule).name
    label, m = _joint(task, params)
    ks = _steps(steps, m)
    return BoundCurves(label, schedule, ks, tuple(kl(m, mdm_law(m, k, schedule)) for k in ks),
                       tuple(stepwise_bound(m, k, schedule) for k in ks), total_correlation(m),
                       kl(m, partition_law(m)))


def _new_axes(ax, size=(6.4, 5.6)):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def draw_bound(curves: BoundCurves, ax=None, k: int | None = None, legend: bool = True):
    """Draw the curves of `curves` on ax (default: a new Figure) with log axes; k: a step count of
    curves.steps to mark with its values; legend=False leaves the legend to the caller (one for several
    panels: fig.legend(*ax.get_legend_handles_labels())). Returns the Figure."""
    fig, ax = _new_axes(ax)
    ks = np.array(curves.steps)
    values = [v for v in (*curves.mdm_kl, *curves.bound, curves.total_correlation) if v > 0]
    # the floor of the log axis: a decade below the smallest positive value drawn
    floor = 10.0 ** (math.floor(math.log10(min(values))) - 1) if values else 1e-3
    ax.plot(ks, np.maximum(curves.bound, floor), "k--", lw=1.5,
            label=r"$B_k$, the path-KL bound: least path KL of any factorised MDM, "
                  "\nan upper bound on KL(p || $p_k$)")
    ax.plot(ks, np.maximum(curves.mdm_kl, floor), "o-", color="C0", lw=2, ms=4,
            label=r"exact MDM (true conditionals): KL(p || $p_k$)")
    if curves.total_correlation > 0:
        ax.plot([1], [curves.total_correlation], "*", color="C3", ms=11, zorder=3,
                label="TC(p): every 1-step MDM has KL >= TC(p)")
    ax.plot(ks, np.full(len(ks), floor), "s-", color="C2", lw=2, ms=4,
            label="exact IMDM, partition-and-map (1 step, or k steps with labels kept): "
                  "\nKL = 0 up to float64 rounding, drawn at the floor")
    if k is not None:
        j = curves.steps.index(k)
        ax.axvline(k, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{curves.label}, {curves.schedule} schedule\nk = {k}: KL(p || p_k) = "
                     f"{curves.mdm_kl[j]:.4f}, B_k = {curves.bound[j]:.4f} nats", fontsize=9)
    else:
        ax.set_title(f"{curves.label}, {curves.schedule} schedule", fontsize=9)
    ax.set(xscale="log", yscale="log", xlabel="sampling steps k", ylabel="KL [nats]", ylim=(floor / 2, None))
    ax.set_xticks(ks, [str(s) for s in ks])
    ax.minorticks_off()
    if legend:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: never over a curve
    return fig


def plot_bound(task, steps=DEFAULT_STEPS, schedule: str = "linear", ax=None, **params):
    """bound_curves(task, steps, schedule, **params) drawn by draw_bound on ax (default: a new Figure);
    returns the Figure. In a notebook `plot_bound("align", V=8, L=4)` as a cell's last line shows it."""
    return draw_bound(bound_curves(task, steps, schedule, **params), ax)


def draw_partition(task, ax=None, **params):
    """The one-step picture: [0, 1) cut into one interval of length p(x) per sequence x of the support
    (partition-and-map: u in the interval -> x), above the mass the best one-step MDM, the product of
    marginals, puts on the same sequences, and in grey what it puts off the support. Returns the Figure."""
    label, m = _joint(task, params)
    fig, ax = _new_axes(ax, size=(6.4, 2.6))
    g = partition_and_map(m)
    product = mdm_law(m, 1)[tuple(g.support.T)]
    colours = [f"C{n % 10}" for n in range(len(g.support))]
    widths = np.diff(g.edges)
    ax.broken_barh(list(zip(g.edges[:-1], widths, strict=True)), (1.1, 0.8), facecolors=colours, edgecolor="white")
    starts = np.concatenate([[0.0], np.cumsum(product)[:-1]])
    ax.broken_barh(list(zip(starts, product, strict=True)), (0.1, 0.8), facecolors=colours, edgecolor="white")
    off = max(0.0, 1.0 - product.sum())
    ax.broken_barh([(1.0 - off, off)], (0.1, 0.8), facecolors="0.85")
    for n, seq in enumerate(g.support):
        text = "".join(map(str, seq)) if m.V <= 10 else ",".join(map(str, seq))
        if widths[n] >= LABEL_WIDTH:
            ax.text(g.edges[n] + widths[n] / 2, 1.5, text, ha="center", va="center", fontsize=7)
        if product[n] >= LABEL_WIDTH:
            ax.text(starts[n] + product[n] / 2, 0.5, text, ha="center", va="center", fontsize=7)
    if off >= LABEL_WIDTH:
        ax.text(1.0 - off / 2, 0.5, f"off the support: {off:.0%}", ha="center", va="center", fontsize=8)
    ax.set(xlim=(0, 1), ylim=(0, 2), xlabel="u in [0, 1)")
    ax.set_title(f"{label}: one step, [0, 1) cut by the mass on each sequence", fontsize=9)
    ax.set_yticks([0.5, 1.5], [f"best 1-step MDM,\nproduct of marginals\nKL = TC = {total_correlation(m):.3f}",
                               "IMDM,\npartition-and-map\nKL = 0 (up to rounding)"], fontsize=8)
    return fig


def save_figure(fig, path, name: str = "path") -> Path:
    """Write fig to path atomically (imdm_lab.durable: a killed run leaves no truncated figure), in the
    format its extension names (imdm_lab.checks.check_figure_path); the folder is made if missing."""
    out = check_figure_path(name, path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return durable.write_figure(fig, out, dpi=120)


def save_bound_plot(path, task, steps=DEFAULT_STEPS, schedule: str = "linear", *, name: str = "--plot",
                    **params) -> BoundCurves:
    """Write the bound figure of a task to path (.png, .pdf, .svg or another format matplotlib writes here);
    returns its curves.

    The path is checked first (a ValueError naming `name`), then the steps against the engine's budgets,
    before any law is computed."""
    check_figure_path(name, path)
    curves = bound_curves(task, steps, schedule, **params)
    save_figure(draw_bound(curves), path, name)
    return curves
