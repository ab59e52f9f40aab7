"""The demo figure: KL(p || model law) against sampling steps, one panel per task, with the exact MDM
curve and the stepwise factorization bound; success rate against steps for `align`."""
from __future__ import annotations

import io
from pathlib import Path

# No backend is forced here: matplotlib falls back to Agg on a machine without a display, and a
# notebook that imports this module keeps its inline backend.
import matplotlib.pyplot as plt
from matplotlib.backend_bases import FigureCanvasBase

from imdm_lab.checks import check_figure
from toy_tasks.studies import STUDIES

FLOOR = 1e-3  # KL values below this are drawn at the floor of the log axis


def _colors(task: dict) -> dict:
    """One colour per method, the same in every panel (tab20 has room for every method)."""
    methods = [m for m in dict.fromkeys(r["method"] for r in task["results"]) if "+greedy" not in m]
    return {m: plt.cm.tab20(i % 20) for i, m in enumerate(methods)}


def plot_results(result: dict, path: str) -> None:
    if result.get("preset") in STUDIES:
        return STUDIES[result["preset"]].plot(result, path)
    tasks = result["tasks"]
    aligned = [t for t in tasks if t["task"] == "align"]
    fig, axes = plt.subplots(1, len(tasks) + len(aligned), figsize=(5.2 * (len(tasks) + len(aligned)), 4.4),
                             squeeze=False)
    axes = list(axes[0])
    for ax, task in zip(axes, tasks, strict=False):
        steps = sorted(int(k) for k in task["mdm_exact_kl"])
        ax.plot(steps, [max(task["mdm_exact_kl"][str(k)], FLOOR) for k in steps], "k-", lw=2.5, alpha=0.6,
                label="exact MDM")
        bound = [(k, task["stepwise_bound"][str(k)]) for k in steps if task["stepwise_bound"].get(str(k)) is not None]
        if bound:
            ax.plot(*zip(*[(k, max(b, FLOOR)) for k, b in bound], strict=False), "k--", lw=1.5, label="stepwise bound")
        ax.axhline(task["total_correlation"], color="grey", ls=":", label="TC(p)")
        for method, color in _colors(task).items():
            rows = [r for r in task["results"] if r["method"] == method and r["kl"] is not None]
            if rows:
                ax.plot([r["steps"] for r in rows], [max(r["kl"], FLOOR) for r in rows], "o-", ms=3, lw=1,
                        color=color, label=method)
        ax.set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="KL(p || model) [nats]",
               title=f"{task['task']} V={task['V']} L={task['L']}")
        ax.set_xticks(steps, [str(k) for k in steps])
    for ax, task in zip(axes[len(tasks):], aligned, strict=False):
        exact = task.get("mdm_exact_success", {})
        if exact:
            ks = sorted(int(k) for k in exact)
            ax.plot(ks, [exact[str(k)] for k in ks], "k-", lw=2.5, alpha=0.6, label="exact MDM")
        for method, color in _colors(task).items():
            rows = [r for r in task["results"] if r["method"] == method]
            ax.plot([r["steps"] for r in rows], [r["success"] for r in rows], "o-", ms=3, lw=1, color=color,
                    label=method)
            greedy = [r for r in task["results"] if r["method"] == method + "+greedy"]
            if greedy:  # the one-step greedy last step: a hollow marker of the method's colour
                ax.plot([1], [greedy[0]["success"]], "o", ms=6, mfc="none", color=color)
        steps = sorted({r["steps"] for r in task["results"]})
        ax.set(xscale="log", xlabel="sampling steps", ylabel="P(all tokens equal)", ylim=(-0.02, 1.02),
               title=f"align V={task['V']} L={task['L']}: success (o greedy, 1 step)")
        ax.set_xticks(steps, [str(k) for k in steps])
    axes[0].legend(fontsize=7, loc="lower left")
    if aligned:
        axes[len(tasks)].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _render(fmt: str) -> None:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.set_title("x")  # text: some formats need a text system (pgf: LaTeX)
    try:
        fig.savefig(io.BytesIO(), format=fmt)
    finally:
        plt.close(fig)


def check_figure_path(name: str, path) -> Path:
    """path as a writable figure file in a format matplotlib writes on this machine (imdm_lab.checks.check_figure:
    a small figure is drawn in it to memory first)."""
    return check_figure(name, path, FigureCanvasBase.get_supported_filetypes(), _render)
