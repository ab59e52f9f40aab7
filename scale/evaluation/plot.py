"""A run's metrics.jsonl against optimizer steps (behind `python -m scale plot RUN [--out PNG]`).

RUN is a run folder (train / distill --out) or its metrics.jsonl. One panel per quantity the log holds:
training loss (`loss`), validation ELBO in nats per token (`val_nll`), and, where recorded, generative
perplexity (`gen_ppl`, log scale) and unigram entropy (`entropy`). Default output: RUN/metrics.png.
"""
from __future__ import annotations

from pathlib import Path

from imdm_lab import durable
from scale.checkpoints.metrics_log import read_records

# metrics.jsonl key -> (panel title, log-scale y)
PANELS = {
    "loss": ("training loss (ELBO, nats / token)", False),
    "val_nll": ("validation ELBO (nats / token)", False),
    "gen_ppl": ("generative perplexity", True),
    "entropy": ("unigram entropy (nats)", False),
}


def read_metrics(run: str | Path) -> tuple[Path, list[dict]]:
    """(the metrics.jsonl path, its records, each checked by scale.checkpoints.metrics_log.read_records);
    a missing log or a bad line is a ValueError naming RUN, the file and the line."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"RUN: expected a run folder with metrics.jsonl or the file itself, got {str(run)!r}")
    return path, read_records(path, "RUN")


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of every record holding `key` (a finite number there: read_records checked it), in
    step order."""
    points = sorted((r["step"], float(r[key])) for r in records if key in r)
    return [s for s, _ in points], [v for _, v in points]


def single_point_limits(value: float, log: bool) -> tuple[float, float]:
    """y limits for a panel of one point: from 0 to 1.3 x the value (so its size reads against zero), or a
    decade either side on a log axis; a value <= 0 gets a symmetric span around it."""
    if log and value > 0:
        return value / 10, value * 10
    if value > 0:
        return 0.0, 1.3 * value
    return (1.3 * value, -0.3 * value) if value < 0 else (-1.0, 1.0)


def plot(records: list[dict], out: str | Path, title: str = "") -> list[str]:
    """Write the panels of the quantities present to `out`; returns their keys."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [k for k in PANELS if series(records, k)[0]]
    if not present:
        raise ValueError(f"RUN: the log holds none of {sorted(PANELS)} yet")
    last = max(max(series(records, k)[0]) for k in present) or 1
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.6), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        steps, values = series(records, key)
        label, log = PANELS[key]
        if len(steps) == 1:  # one evaluation so far: a visible point, its value, an axis from 0 (or a decade)
            ax.plot(steps, values, "o", markersize=7)
            ax.annotate(f"{values[0]:.4g}", (steps[0], values[0]), textcoords="offset points", xytext=(-6, 6),
                        ha="right", fontsize=9)
            ax.set_ylim(*single_point_limits(values[0], log))
        else:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3)
        if log:
            ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.set_xlim(0, last * 1.04)  # every panel on the run's step axis, so a lone point sits where it was taken
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    durable.write_figure(fig, out, dpi=110)
    plt.close(fig)
    return present



