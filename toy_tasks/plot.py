"""The experiment figures: KL(p || model law) against sampling steps, one panel per task, with the exact
MDM curve and the stepwise factorization bound; success rate against steps for `align`; and the headline
figure of the README (`plot_headline`).

Colours say the family: MDMs (one deterministic mask state: `mdm`, `sdtt`, `redi`) in blues, IMDMs
(random mask labels, every `imdm-*`) in reds and oranges; markers tell the methods of a family apart.
Uncertainty is drawn where the JSON has it: a bootstrap 95 % interval of one seed's draws (`kl_ci`) as an
error bar, the range over training seeds (`kl_range`, `success_range`, from `--seeds`) as a band. Every
legend sits outside the axes, so no data point is hidden under it.
"""
from __future__ import annotations

# No backend is forced here: matplotlib falls back to Agg on a machine without a display, and a
# notebook that imports this module keeps its inline backend.
import matplotlib.pyplot as plt

from imdm_lab import durable
from toy_tasks.studies import STUDIES

FLOOR = 1e-3  # KL values below this are drawn at the floor of the log axis
MARKERS = "osD^v<>Ph*X"
# What a legend must say about a method to be read right (the rest is in docs/toy-demo.md).
NOTES = {"imdm-exact-kV": "imdm-exact-kV (learns from the exact teacher, tied start)"}


def is_imdm(method: str) -> bool:
    """IMDM family: every method whose model carries random mask labels."""
    return method.startswith("imdm")


# Shades of one hue per family, ordered so that neighbours in a legend differ.
MDM_COLORS = ("#1f77b4", "#08306b", "#6baed6", "#4292c6")
IMDM_COLORS = ("#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#67000d", "#e6ab02", "#fb9a99", "#ae017e", "#bf812d")


def styles(methods: list[str]) -> dict:
    """method -> (colour, marker): blues for the MDM family, reds and oranges for the IMDM family, each
    method its own shade and marker, the same in every panel of a figure."""
    out = {}
    for family, colors in (([m for m in methods if not is_imdm(m)], MDM_COLORS),
                           ([m for m in methods if is_imdm(m)], IMDM_COLORS)):
        for i, m in enumerate(family):
            out[m] = (colors[i % len(colors)], MARKERS[len(out) % len(MARKERS)])
    return out


def _methods(task: dict) -> list[str]:
    return [m for m in dict.fromkeys(r["method"] for r in task["results"]) if "+greedy" not in m]


def _draw(ax, rows: list[dict], key: str, color, marker: str, label: str, floor: float | None = None) -> None:
    """One method's line of `key` against steps: the seed band where there is one, else the CI bars."""
    def clip(v):
        return v if floor is None else max(v, floor)
    rows = [r for r in rows if r[key] is not None]
    if not rows:
        return
    x = [r["steps"] for r in rows]
    y = [clip(r[key]) for r in rows]
    spans = [r.get(f"{key}_range") for r in rows]
    if all(spans) and any(lo != hi for lo, hi in spans):
        ax.fill_between(x, [clip(lo) for lo, _ in spans], [clip(hi) for _, hi in spans], color=color, alpha=0.2,
                        lw=0)
        if len(x) == 1:  # a band of one step is invisible: a bar instead
            ax.errorbar(x, y, yerr=[[y[0] - clip(spans[0][0])], [clip(spans[0][1]) - y[0]]], color=color, capsize=3)
    cis = [r.get("kl_ci") if key == "kl" else None for r in rows]
    if any(cis):
        # a percentile interval need not hold the point estimate (a plug-in KL is biased): clipped at it
        low = [max(y_i - clip(ci[0]), 0.0) if ci else 0.0 for y_i, ci in zip(y, cis, strict=True)]
        high = [max(clip(ci[1]) - y_i, 0.0) if ci else 0.0 for y_i, ci in zip(y, cis, strict=True)]
        ax.errorbar(x, y, yerr=[low, high], fmt="none", color=color, capsize=2, lw=1)
    ax.plot(x, y, marker=marker, ms=4, lw=1.2, color=color, label=label)


def _references(ax, task: dict, steps: list[int]) -> None:
    ax.plot(steps, [max(task["mdm_exact_kl"][str(k)], FLOOR) for k in steps], "k-", lw=2.5, alpha=0.6,
            label="exact MDM")
    bound = [(k, task["stepwise_bound"][str(k)]) for k in steps if task["stepwise_bound"].get(str(k)) is not None]
    if bound:
        ax.plot(*zip(*[(k, max(b, FLOOR)) for k, b in bound], strict=True), "k--", lw=1.5,
                label="stepwise bound (path KL)")


def _kl_panel(ax, task: dict, style: dict) -> None:
    steps = sorted(int(k) for k in task["mdm_exact_kl"])
    _references(ax, task, steps)
    ax.axhline(task["total_correlation"], color="grey", ls=":", label="TC(p)")
    for method in _methods(task):
        color, marker = style[method]
        _draw(ax, [r for r in task["results"] if r["method"] == method], "kl", color, marker,
              NOTES.get(method, method), floor=FLOOR)
    ax.set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="KL(p || model) [nats]",
           title=f"{task['task']} V={task['V']} L={task['L']}: KL")
    ax.set_xticks(steps, [str(k) for k in steps])


def _success_panel(ax, task: dict, style: dict) -> None:
    exact = task.get("mdm_exact_success", {})
    if exact:
        ks = sorted(int(k) for k in exact)
        ax.plot(ks, [exact[str(k)] for k in ks], "k-", lw=2.5, alpha=0.6, label="exact MDM")
    for method in _methods(task):
        color, marker = style[method]
        _draw(ax, [r for r in task["results"] if r["method"] == method], "success", color, marker,
              NOTES.get(method, method))
        greedy = [r for r in task["results"] if r["method"] == method + "+greedy"]
        if greedy:  # the one-step greedy last step: a hollow marker of the method's colour, right of step 1
            ax.plot([1.12], [greedy[0]["success"]], marker, ms=7, mfc="none", color=color)
    if not _has_kl_curve(task):  # no KL panel: its one number goes here
        one = [(r["method"], r["kl"]) for r in task["results"] if r["steps"] == 1 and r["kl"] is not None]
        ax.text(0.2, 0.7, "\n".join([f"one-step KL, where exact: {m} {kl:.2f} nats" for m, kl in one]
                                      + [f"TC(p) = {task['total_correlation']:.2f} nats (the bound at one step)"]),
                transform=ax.transAxes, ha="left", va="center", fontsize=8)
    steps = sorted({r["steps"] for r in task["results"]} | {int(k) for k in exact})
    ax.set(xscale="log", xlabel="sampling steps", ylabel="P(all tokens equal)", ylim=(-0.02, 1.02),
           title=f"align V={task['V']} L={task['L']}: success (hollow: greedy last step, 1 step)")
    ax.set_xticks(steps, [str(k) for k in steps])


def _has_kl_curve(task: dict) -> bool:
    """A KL panel says something only where a learned model has a KL at two step counts or more."""
    return any(sum(r["kl"] is not None for r in task["results"] if r["method"] == m) > 1 for m in _methods(task))


def plot_results(result: dict, path: str) -> None:
    if result.get("preset") in STUDIES:
        return STUDIES[result["preset"]].plot(result, path)
    panels = [(_kl_panel, t) for t in result["tasks"] if _has_kl_curve(t)]
    panels += [(_success_panel, t) for t in result["tasks"] if t["task"] == "align"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels) + 2.6, 4.4), squeeze=False)
    methods = list(dict.fromkeys(m for t in result["tasks"] for m in _methods(t)))
    style = styles(methods)
    for ax, (draw, task) in zip(axes[0], panels, strict=True):
        draw(ax, task, style)
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    has_ci = any(r.get("kl_ci") for draw, t in panels if draw is _kl_panel for r in t["results"])
    title = (f"mean over seeds {', '.join(map(str, result['seeds']))}; band: their range" if "seeds" in result
             else "bars: bootstrap 95 % interval of the draws" if has_ci else None)
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title=title, title_fontsize=7, frameon=False)
    fig.tight_layout()
    durable.write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def best_imdm(task: dict) -> str:
    """The IMDM with the smallest one-step KL (mean over seeds where there are several)."""
    one = {r["method"]: r["kl"] for r in task["results"] if r["steps"] == 1 and r["kl"] is not None}
    return min((m for m in one if is_imdm(m) and "+greedy" not in m), key=one.__getitem__)


def plot_headline(result: dict, path: str) -> None:
    """The README's figure: per task, KL against steps for the stepwise bound, the exact MDM, the learned
    MDM (`mdm`) and the best IMDM, each learned model with the range over the training seeds as a band."""
    tasks = result["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks) + 2.4, 4.0), squeeze=False)
    seeds = result.get("seeds")
    for ax, task in zip(axes[0], tasks, strict=True):
        steps = sorted(int(k) for k in task["mdm_exact_kl"])
        _references(ax, task, steps)
        best = best_imdm(task)
        for method, color, marker, label in (("mdm", MDM_COLORS[0], "o", "learned MDM (mdm)"),
                                             (best, IMDM_COLORS[0], "s", "best IMDM (named in the title)")):
            _draw(ax, [r for r in task["results"] if r["method"] == method], "kl", color, marker, label, floor=FLOOR)
        ax.set(xscale="log", yscale="log", xlabel="sampling steps", ylabel="KL(p || model) [nats]")
        ax.set_title(f"{task['task']} (V={task['V']}, L={task['L']}, TC {task['total_correlation']:.2f} nats)\n"
                     f"best IMDM in one step: {best}", fontsize=10)
        ax.set_xticks(steps, [str(k) for k in steps])
        ax.grid(alpha=0.3, which="major")
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, h)
    note = (f"lines: mean over training seeds {', '.join(map(str, seeds))}; bands: min-max over them"
            if seeds else "one training seed; bars: bootstrap 95 % interval of the draws")
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
               title=note.replace("; ", ";\n"), title_fontsize=7, frameon=False)
    fig.suptitle("In one sampling step the MDM sits at the factorization bound (KL = TC); the best IMDM goes below it",
                 fontsize=10)
    fig.tight_layout()
    durable.write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


