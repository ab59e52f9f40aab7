"""Intervals, references and the quality-diversity frontier of an evaluation (behind `python -m scale
report`).

For every (checkpoint, steps) entry of `python -m scale evaluate` (which stores per-sample judge NLL,
judge token counts and unigram entropies):
- gen PPL = exp(sum_i nll_i / sum_i tokens_i) and entropy = mean_i H_i, each with a percentile
  bootstrap 95 % interval over samples: B resamples of the n samples with replacement (seeded), the
  same resample for both numbers, the 2.5 and 97.5 percentiles of the B statistics;
- references under the same judge and protocol: n real validation blocks of the first checkpoint's
  corpus, tokenizer and length (text no model trained on and the judge never counted), and the same
  blocks with their tokens shuffled within each block (equal entropy, no word order).
One row per (method, steps) (the entries' method and seed, scale.evaluation.eval_json.identity): its
`seeds`, each seed's values and bootstrap interval; gen PPL and entropy as the mean over seeds, with
the bootstrap interval of that mean (each seed's samples resampled on their own, the mean of the
seeds' statistics taken per resample: sampling noise only); `seed_range`, the min-max of the seeds'
values (the variation between training runs); `position` (the function `position`) of the gen PPL
between the two references. A row of one seed is that seed's entry, as before seeds.
Writes OUT (JSON), OUT with .png (gen PPL against entropy: a method that lowers PPL by repeating
tokens moves left, one that only raises entropy moves up) and OUT with .md (a table).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from imdm_lab import durable
from imdm_lab.checks import check_cost, check_int
from imdm_lab.counter_rng import derive_seed
from scale.checkpoints.checkpoint import read_state
from scale.data.blocks import open_blocks
from scale.data.json_fields import check_numbers
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.eval_json import identity, read_evaluation
from scale.evaluation.judge import judge_info, judge_label, load_judge
from scale.evaluation.metrics import decode_samples, gen_ppl, sample_entropy
from scale.model.cost import device_memory

# Checkpoint folders of the pipeline's stages -> method names in tables and plots.
METHOD_NAMES = {
    "mdlm": "MDLM (teacher)",
    "sdtt": "SDTT",
    "imsdtt": "IM-SDTT",
    "redi": "ReDi (MDLM coupling)",
    "imredi-mdlm": "IM-ReDi (MDLM coupling)",
    "imredi": "IM-SDTT -> IM-ReDi",
    "epscoup": "IMDM eps-driven coupling",
}


def bootstrap_bytes(n_boot: int, n: int) -> int:
    """Peak memory of `bootstrap` on n samples: the resample indices and one resampled per-sample array
    (int64 / float64 [n_boot, n]), and the statistics of every resample with their sorted copies."""
    return 8 * n_boot * (2 * n + 4)


def check_boot_memory(n_boot: int, n: int, memory: int) -> int:
    """n_boot, refused (naming the largest that fits) when bootstrapping n samples exceeds `memory` bytes."""
    return check_cost("--n-boot", n_boot, lambda b: bootstrap_bytes(b, n), memory,
                      f"the bootstrap of {n} samples")


def resample(nll, tokens, entropy, n_boot: int, seed: int) -> dict:
    """Point values and bootstrap statistics of gen PPL and mean entropy.

    nll, tokens, entropy: [n] per sample -> {"gen_ppl": (point, Float64[n_boot]), "entropy": (...)}, the
    statistics of n_boot resamples with replacement (one resample for both), seeded by `seed`."""
    nll, tokens, entropy = (np.asarray(a, dtype=np.float64) for a in (nll, tokens, entropy))
    if not len(nll) == len(tokens) == len(entropy) or len(nll) == 0:
        raise ValueError(f"per-sample arrays: expected equal non-zero lengths, got {len(nll)}, {len(tokens)}, "
                         f"{len(entropy)}")
    idx = np.random.default_rng(seed).integers(0, len(nll), size=(n_boot, len(nll)))
    ppl_b = np.exp(nll[idx].sum(1) / tokens[idx].sum(1))
    ent_b = entropy[idx].mean(1)
    return {"gen_ppl": (float(np.exp(nll.sum() / tokens.sum())), ppl_b), "entropy": (float(entropy.mean()), ent_b)}


def interval(point: float, stats: np.ndarray) -> list[float]:
    """[point, lo, hi]: the 2.5 and 97.5 percentiles of the bootstrap statistics Float64[B]."""
    return [point, *map(float, np.percentile(stats, [2.5, 97.5]))]


def bootstrap(nll, tokens, entropy, n_boot: int, seed: int) -> dict:
    """Point values and percentile-bootstrap 95 % intervals of gen PPL and mean entropy.

    nll, tokens, entropy: [n] per sample -> {"gen_ppl": [point, lo, hi], "entropy": [point, lo, hi]}."""
    return {k: interval(point, stats) for k, (point, stats) in resample(nll, tokens, entropy, n_boot, seed).items()}


def position(gen_ppl, real: float, shuffled: float):
    """Where a gen PPL g sits between the references: (ln g - ln real) / (ln shuffled - ln real).

    0 at real validation text, 1 at the same text shuffled, below 0 better than real text by the judge,
    above 1 worse than shuffled; g a number or an array (elementwise; the frontier's second axis)."""
    if not (real > 0 and shuffled > 0 and shuffled != real):
        raise ValueError(f"references: expected two different positive perplexities, got real {real!r} and "
                         f"shuffled {shuffled!r}")
    with np.errstate(divide="ignore", invalid="ignore"):  # the axis machinery probes values <= 0 too
        return (np.log(gen_ppl) - np.log(real)) / (np.log(shuffled) - np.log(real))


def ppl_at(pos, real: float, shuffled: float):
    """The inverse of `position`: g = real * (shuffled / real) ** pos."""
    with np.errstate(over="ignore"):  # the axis machinery probes far positions too (inf, not an error)
        return np.exp(np.log(real) + np.asarray(pos, dtype=np.float64) * (np.log(shuffled) - np.log(real)))


def _mean(values: list) -> float | None:
    return None if any(v is None for v in values) else sum(values) / len(values)


def seed_rows(entries: list[dict], n_boot: int, seed: int) -> list[dict]:
    """One row per (method, steps) of the entries, in the order they first appear (module docstring)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for e in entries:
        groups.setdefault((identity(e)[0], e["steps"]), []).append(e)
    rows = []
    for (method, steps), members in groups.items():
        stats = [resample(e["per_sample_nll"], e["per_sample_tokens"], e["per_sample_entropy"], n_boot,
                          derive_seed(seed, e["label"], e["steps"])) for e in members]
        mean = {k: interval(sum(s[k][0] for s in stats) / len(stats), np.mean([s[k][1] for s in stats], axis=0))
                for k in ("gen_ppl", "entropy")}
        seeds = [{"seed": identity(e)[1], "label": e["label"], "gen_ppl": s["gen_ppl"][0],
                  "gen_ppl_ci": interval(*s["gen_ppl"])[1:], "entropy": s["entropy"][0],
                  "entropy_ci": interval(*s["entropy"])[1:], "val_ppl": e["val_ppl"],
                  "bits_per_char": e.get("bits_per_char"), "nfe": e["nfe"]}
                 for e, s in zip(members, stats, strict=True)]
        rows.append({"label": method, "method": METHOD_NAMES.get(method, method), "steps": steps,
                     "nfe": _mean([e["nfe"] for e in members]), "n": len(members[0]["per_sample_nll"]),
                     "val_ppl": _mean([e["val_ppl"] for e in members]), **mean, "sample": members[0]["sample"],
                     "bits_per_char": _mean([e.get("bits_per_char") for e in members]), "seeds": seeds,
                     "seed_range": {k: [min(x[k] for x in seeds), max(x[k] for x in seeds)]
                                    for k in ("gen_ppl", "entropy")}})
    return rows


def references(checkpoint: str, judge, n: int, n_boot: int, seed: int) -> list[dict]:
    """Real validation blocks and their token-shuffled copies, scored like samples."""
    state = read_state(checkpoint)
    blocks = open_blocks(state.config.data, "validation")
    rng = np.random.default_rng(derive_seed(seed, "report-reference"))
    real = blocks.get_batch(np.sort(rng.permutation(len(blocks))[:min(n, len(blocks))]))
    shuffled = torch.stack([row[torch.from_numpy(rng.permutation(len(row)))] for row in real])
    tok = load_tokenizer(state.tokenizer)
    out = []
    for name, tokens in (("real validation text", real), ("shuffled validation text", shuffled)):
        scored = gen_ppl(decode_samples(tokens, tok), judge, max_length=state.config.data.length)
        out.append({"label": name, "n": len(tokens), **bootstrap(scored.per_sample_nll, scored.per_sample_tokens,
                                                                 sample_entropy(tokens), n_boot, seed)})
    return out


def report(eval_path: str | Path, judge_name: str, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The report of the evaluation file `eval_path` (module docstring). Every input is opened and checked
    before any resampling or scoring: the evaluation (scale.evaluation.eval_json.read_evaluation), the judge
    and its summary (scale.evaluation.judge), the first checkpoint's state.json and tokenizer."""
    check_int("--n-boot", n_boot, 10)
    result = read_evaluation(eval_path)
    # every entry holds n samples (read_evaluation), as do the references: checked before the judge is loaded
    check_boot_memory(n_boot, result["n"], device_memory("cpu"))
    info = judge_info(judge_name)
    judge = load_judge(judge_name, device="cpu")
    load_tokenizer(read_state(result["checkpoints"][0]["checkpoint"]).tokenizer)  # the references' own
    rows = seed_rows(result["entries"], n_boot, seed)
    refs = references(result["checkpoints"][0]["checkpoint"], judge, result["n"], n_boot, seed)
    real, shuffled = (r["gen_ppl"][0] for r in refs)
    for r in [*rows, *refs]:
        r["position"] = float(position(r["gen_ppl"][0], real, shuffled))
    for one in (one for r in rows for one in r["seeds"]):
        one["position"] = float(position(one["gen_ppl"], real, shuffled))
    rep = {"judge": judge_name, "judge_info": info, "eval": str(eval_path), "n_boot": n_boot,
           "seed": seed, "interval": "percentile bootstrap 95 % over samples", "rows": rows, "references": refs,
           "seed_range": "min-max of the seeds' values (training runs); a row's interval is over samples",
           "position": "(ln gen PPL - ln real) / (ln shuffled - ln real): 0 real text, 1 shuffled text"}
    check_numbers(rep, "report")  # no NaN or infinity is written as a measurement
    return rep


def table(rep: dict) -> str:
    """Markdown table: one line per method and step count (the seeds' range and count after the interval
    where a row has several), then the references."""
    def fmt(r, key, digits):
        v, seeds = r[key], r.get("seeds", [])
        text = f"{v[0]:.{digits}f} [{v[1]:.{digits}f}, {v[2]:.{digits}f}]"
        if len(seeds) > 1:
            lo, hi = r["seed_range"][key]
            text += f" seeds {lo:.{digits}f}-{hi:.{digits}f} ({len(seeds)})"
        return text
    lines = ["| method | steps | gen PPL [95 % CI] | position | entropy, nats [95 % CI] | ELBO PPL | bits/char |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rep["rows"]:
        bpc = "-" if r.get("bits_per_char") is None else f"{r['bits_per_char']:.3f}"
        lines.append(f"| {r['method']} | {r['steps']} | {fmt(r, 'gen_ppl', 1)} | {r['position']:.3f} | "
                     f"{fmt(r, 'entropy', 3)} | {r['val_ppl']:.1f} | {bpc} |")
    for r in rep["references"]:
        lines.append(f"| {r['label']} | - | {fmt(r, 'gen_ppl', 1)} | {r['position']:.3f} | {fmt(r, 'entropy', 3)} "
                     f"| - | - |")
    return "\n".join(lines) + "\n"


STEP_MARKERS = "os^Dv*Ph<>"  # one marker per step count, in increasing order
# Colours by family: the MDM-family students in blues, the IMDM-family ones in reds (as the toy figures).
METHOD_COLORS = {"mdlm": "#1f77b4", "sdtt": "#6baed6", "redi": "#08306b", "imsdtt": "#ff7f0e",
                 "imredi-mdlm": "#d62728", "imredi": "#8c564b", "epscoup": "#e377c2"}


def plot(rep: dict, path: str | Path) -> None:
    """Gen PPL (log) against entropy: one line per method through its step counts, the step count as the
    marker's shape (no text labels, which overlap where methods cluster), bootstrap 95 % intervals as
    bars, each seed of a row of several as a small dot, the references as large black markers, and on the
    right the position scale between them (`position`); the legends sit outside the axes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    steps = sorted({r["steps"] for r in rep["rows"]})
    marker = {k: STEP_MARKERS[i % len(STEP_MARKERS)] for i, k in enumerate(steps)}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    methods = []
    for i, label in enumerate(dict.fromkeys(r["label"] for r in rep["rows"])):
        rows = sorted((r for r in rep["rows"] if r["label"] == label), key=lambda r: r["steps"])
        color = METHOD_COLORS.get(label, plt.cm.tab10(i % 10))
        x, y = [r["entropy"][0] for r in rows], [r["gen_ppl"][0] for r in rows]
        xerr = [[r["entropy"][0] - r["entropy"][1] for r in rows], [r["entropy"][2] - r["entropy"][0] for r in rows]]
        yerr = [[r["gen_ppl"][0] - r["gen_ppl"][1] for r in rows], [r["gen_ppl"][2] - r["gen_ppl"][0] for r in rows]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=0.8, alpha=0.6, capsize=0)
        ax.plot(x, y, "-", color=color, lw=1.3, alpha=0.8)
        for r, xi, yi in zip(rows, x, y, strict=True):
            ax.plot(xi, yi, marker[r["steps"]], color=color, ms=6, mec="white", mew=0.6)
            seeds = r.get("seeds", [])  # reports made before seeds hold none
            if len(seeds) > 1:
                ax.plot([one["entropy"] for one in seeds], [one["gen_ppl"] for one in seeds], ".", color=color,
                        ms=3, alpha=0.7)
        methods.append(Line2D([], [], color=color, lw=1.5, label=rows[0]["method"]))
    refs = []
    for r, shape in zip(rep["references"], ("*", "X"), strict=False):
        ax.plot(r["entropy"][0], r["gen_ppl"][0], shape, ms=13, color="k", linestyle="none")
        refs.append(Line2D([], [], marker=shape, ms=10, color="k", ls="none", label=r["label"]))
    shapes = [Line2D([], [], marker=marker[k], color="0.3", ls="none", ms=6, label=f"{k} step{'s' * (k > 1)}")
              for k in steps]
    ax.set_yscale("log")
    ax.set_xlabel("unigram entropy of a sample (nats)")
    ax.set_ylabel(f"generative perplexity\n({judge_label(rep['judge'], rep.get('judge_info'))})", fontsize=9)
    several = any(len(r.get("seeds", [])) > 1 for r in rep["rows"])
    ax.set_title("bars: bootstrap 95 % intervals over samples" + ("; dots: seeds" if several else ""), fontsize=9)
    ax.grid(alpha=0.3)
    real, shuffled = (r["gen_ppl"][0] for r in rep["references"][:2])
    scale = ax.secondary_yaxis("right", functions=(lambda g: position(g, real, shuffled),
                                                   lambda p: ppl_at(p, real, shuffled)))
    # position is affine in ln g, so a linear scale lines up with the log parent (its limits are the
    # parent's mapped by position); the default for a log parent, functionlog, would clip positions <= 0
    scale.set_yscale("linear")
    scale.set_ylabel("position: 0 real text, 1 shuffled", fontsize=9)
    first = ax.legend(handles=methods + refs, fontsize=8, loc="upper left", bbox_to_anchor=(1.16, 1.0),
                      title="method", title_fontsize=8, frameon=False)
    ax.add_artist(first)
    ax.legend(handles=shapes, fontsize=8, loc="lower left", bbox_to_anchor=(1.16, 0.0), title="sampling steps",
              title_fontsize=8, frameon=False)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}".replace(",", " ")))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}".replace(",", " ")
                                               if f"{v:.0f}"[0] in "25" else ""))
    fig.tight_layout()
    durable.write_figure(fig, path, dpi=120, bbox_inches="tight", bbox_extra_artists=[first])
    plt.close(fig)
