"""The few-step evaluation protocol (Ugness/IMDM metrics.py, Metrics.record_generative_perplexity;
eval_mauve.py), behind `python -m scale evaluate`.

For every checkpoint (EMA weights) and step count k:
- n unconditional samples from the shared ancestral sampler (float64 draws, seeded labels, ancestral
  last step, temperature 1), drawn in batches by scale.evaluation.samples.draw (the seed recipe of `scale sample`
  and of the training-time samples: the same seed and batch size give the same tokens); `nfe` is the
  mean number of network calls a sample saw, `seconds_per_sample` the sampling wall time (no scoring)
  divided by n;
- `gen_ppl`: generative perplexity under the judge (scale.evaluation.metrics.gen_ppl: decode with the model's
  tokenizer, retokenise with the judge's, truncate to the model's length, score in chunks of the
  judge's context, corpus-level exp(mean NLL)); `entropy`: mean per-sample unigram entropy of the
  model-tokenizer ids (nats);
- with `mauve`: `prompts` validation blocks, their first `prefix_len` tokens held fixed, `continuations`
  samples each; the first `mauve_len` tokens of each sample (prefix included) against the first
  `mauve_len` tokens of the true blocks, MAUVE on judge features averaged over seeds 42..46
  (`cond_gen_ppl` and `cond_entropy` of those texts too); otherwise `mauve` is null.
Per checkpoint: the validation ELBO perplexity (`val_ppl`), the same ELBO in bits per character of the
decoded blocks (`bits_per_char`, scale.evaluation.validation.bits_per_char) and, with `zero_shot`, the
ELBO perplexity on other corpora's validation splits (null where a corpus cannot be loaded, e.g.
offline); its `method` and `seed` (method_and_seed: the folder name less a pipeline's -s<seed>, the
train.seed of its state.json), which `python -m scale report` groups by.
The JSON lists one entry per checkpoint x steps, each naming its judge, method and seed; a PNG shows gen
PPL and entropy against steps, one line per checkpoint.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imdm_lab import durable
from imdm_lab.checks import check_int, check_seed
from imdm_lab.counter_rng import derive_seed
from scale.checkpoints.checkpoint import load_model
from scale.checkpoints.config import DataSection
from scale.checkpoints.hub import resolve_checkpoint
from scale.data.blocks import open_blocks
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.judge import judge_label, load_judge
from scale.evaluation.metrics import (
    decode_samples,
    gen_ppl,
    judge_features,
    mauve_score,
    sample_entropy,
    unigram_entropy,
)
from scale.evaluation.samples import BATCH, COND, UNCOND, draw
from scale.evaluation.samples_file import SampleCell
from scale.evaluation.validation import bits_per_char, scored_batches, validation_elbo

MAUVE_SEEDS = (42, 43, 44, 45, 46)


@dataclass(frozen=True)
class EvalSettings:
    """How `evaluate` measures (the options of `python -m scale evaluate`, the module docstring says what
    each number is): step counts, n unconditional samples per step count, the judge and its batch size,
    the gen PPL token rule (scale.evaluation.metrics.EOS_RULES), the weights of each checkpoint, the seed; with
    mauve, `prompts` x `continuations` prefix-conditioned samples compared on `mauve_len` tokens;
    val_batches of the ELBO perplexities, zero_shot corpora, batch_size sequences per sampler / ELBO batch.
    Refused on construction unless every count is an integer >= 1 and the seed a valid seed."""
    steps: tuple[int, ...]
    n: int = 1024
    judge: str = "gpt2-large"
    mauve: bool = False
    prefix_len: int = 50
    prompts: int = 256
    continuations: int = 5
    mauve_len: int = 100
    zero_shot: tuple[str, ...] = ()
    val_batches: int = 8
    batch_size: int = BATCH
    judge_batch_size: int = 8
    eos_rule: str = "official"
    weights: str = "ema"
    seed: int = 0

    def __post_init__(self):
        check_seed("--seed", self.seed)
        for name in ("n", "batch_size", "judge_batch_size", "prompts", "continuations", "mauve_len", "val_batches"):
            check_int(f"--{name.replace('_', '-')}", getattr(self, name), 1)


def elbo_nll(model, blocks, settings: EvalSettings, device) -> tuple[float, torch.Tensor]:
    """(ELBO nats per token, the blocks Long[N, L] it was computed on: the first val_batches batches)."""
    batch = min(settings.batch_size, len(blocks))
    nll = validation_elbo(model, blocks, batch, settings.val_batches, 1e-3, seed=settings.seed, device=device)
    return nll, blocks[:scored_batches(len(blocks), batch, settings.val_batches) * batch]


def elbo_ppl(model, blocks, settings: EvalSettings, device) -> float:
    return math.exp(elbo_nll(model, blocks, settings, device)[0])


def method_and_seed(label: str, train_seed: int) -> tuple[str, int]:
    """(method, seed) of a checkpoint: its label less the suffix -s<seed> of a seeded pipeline stage
    (scale.pipeline) where that suffix names the seed its state.json records (train.seed), and that seed."""
    suffix = f"-s{train_seed}"
    return (label[:-len(suffix)] if label.endswith(suffix) else label), train_seed


def zero_shot(model, data: DataSection, names: tuple[str, ...], settings: EvalSettings, device) -> dict:
    """{corpus: ELBO perplexity or None}: the validation split of each corpus cut like the checkpoint's
    own data `data`; a corpus that cannot be loaded is reported, not fatal."""
    out = {}
    for name in names:
        try:
            blocks = open_blocks(data, "validation", dataset=name)
        except ValueError as err:
            print(f"zero-shot {name}: not available ({err})", file=sys.stderr)
            out[name] = None
            continue
        out[name] = elbo_ppl(model, blocks, settings, device)
    return out


def prompts(val_blocks, n_prompts: int, continuations: int, prefix_len: int, mask_id: int,
            seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(truth Long[P, L], given Long[P c, L], given_mask Bool[P c, L]): P validation blocks chosen by a
    seeded permutation, each repeated c times with its first prefix_len tokens given and the rest masked."""
    P = min(n_prompts, len(val_blocks))
    order = np.random.default_rng(derive_seed(seed, "prompts")).permutation(len(val_blocks))[:P]
    truth = val_blocks.get_batch(np.sort(order))
    given_mask = torch.zeros(P * continuations, truth.shape[1], dtype=torch.bool)
    given_mask[:, :prefix_len] = True
    masks = torch.full(given_mask.shape, mask_id, dtype=torch.int64)
    given = torch.where(given_mask, truth.repeat_interleave(continuations, dim=0), masks)
    return truth, given, given_mask


def human_side(model, tok, val_blocks, judge, settings: EvalSettings) -> dict:
    """What MAUVE compares against, the same for every step count of a checkpoint: the prompts
    (prefix tokens held fixed), the true blocks cut to mauve_len and their judge features."""
    cut = min(settings.mauve_len, val_blocks.length)
    if not 1 <= settings.prefix_len < cut:
        raise ValueError(f"--prefix-len: expected an integer in [1, {cut}), got {settings.prefix_len}")
    truth, given, given_mask = prompts(val_blocks, settings.prompts, settings.continuations, settings.prefix_len,
                                       model.config.mask_id, settings.seed)
    p = decode_samples(truth[:, :cut], tok)
    return {"cut": cut, "prompts": len(truth), "given": given, "given_mask": given_mask, "p": p,
            "p_features": judge_features(p, judge, max_length=cut, batch_size=settings.judge_batch_size)}


def conditional(model, tok, human: dict, judge, settings: EvalSettings, k: int, device) -> dict:
    """MAUVE of prefix-conditioned samples against the true blocks, plus their gen PPL and entropy."""
    cut = human["cut"]
    tokens, _, _ = draw(model, len(human["given"]), k, seed=settings.seed, length=human["given"].shape[1],
                        batch_size=settings.batch_size, device=device, given=human["given"],
                        given_mask=human["given_mask"], tag=COND, progress=True)
    q = decode_samples(tokens[:, :cut], tok)
    score = mauve_score(human["p"], q, judge, max_length=cut, seeds=MAUVE_SEEDS,
                        batch_size=settings.judge_batch_size, p_features=human["p_features"])
    return {"mauve": score["mauve"], "mauve_per_seed": score["per_seed"],
            "cond_gen_ppl": gen_ppl(q, judge, max_length=cut, batch_size=settings.judge_batch_size,
                                    eos_rule=settings.eos_rule).gen_ppl,
            "cond_entropy": unigram_entropy(tokens[:, :cut]), "prompts": human["prompts"],
            "continuations": settings.continuations}


def _labels(paths: list[str]) -> list[str]:
    names = [Path(p).resolve().name for p in paths]
    return [n if names.count(n) == 1 else f"{Path(p).resolve().parent.name}/{n}"
            for n, p in zip(names, paths, strict=True)]


def open_inputs(checkpoints: list[str], weights: str) -> list[tuple]:
    """[(checkpoint folder, tokenizer, validation blocks)] of every checkpoint (a Hub id downloaded), each
    loaded once on the CPU (state.json, weights: scale.checkpoints.checkpoint.load_model) with its tokenizer
    and validation data, so that a bad one is refused before the first sample of any is drawn."""
    opened = []
    for path in checkpoints:
        folder = resolve_checkpoint(path)
        _, state = load_model(folder, weights, "cpu")
        opened.append((folder, load_tokenizer(state.tokenizer), open_blocks(state.config.data, "validation")))
    return opened


def evaluate(checkpoints: list[str], settings: EvalSettings, samples: list | None = None) -> dict:
    """The JSON of an evaluation of `checkpoints` (folders or Hub ids): one entry per checkpoint and step
    count, and per checkpoint its ELBO perplexities (the module docstring). The judge and every
    checkpoint are opened and checked first (open_inputs). samples: a list that receives every cell's
    samples (scale.evaluation.samples_file.SampleCell), None to keep none."""
    steps = settings.steps
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    judge = load_judge(settings.judge, device=device)
    opened = open_inputs(checkpoints, settings.weights)
    names = settings.zero_shot
    result = {"judge": settings.judge, "eos_rule": settings.eos_rule, "n": settings.n, "seed": settings.seed,
              "weights": settings.weights, "device": str(device), "checkpoints": [], "entries": []}
    for path, label, (folder, tok, val_blocks) in zip(checkpoints, _labels(checkpoints), opened, strict=True):
        model, state = load_model(folder, settings.weights, device)
        data = state.config.data
        length = data.length
        method, seed = method_and_seed(label, state.config.train.seed)
        nll, scored = elbo_nll(model, val_blocks, settings, device)
        ckpt = {"checkpoint": str(path), "label": label, "method": method, "seed": seed, "step": state.step,
                "val_ppl": math.exp(nll), "bits_per_char": bits_per_char(nll, scored, tok),
                "zero_shot": zero_shot(model, data, names, settings, device)}
        check_finite(ckpt)  # before any sampling: a NaN perplexity here is not worth the rest
        result["checkpoints"].append(ckpt)
        human = human_side(model, tok, val_blocks, judge, settings) if settings.mauve else None
        for k in steps:
            tokens, nfe, seconds = draw(model, settings.n, k, seed=settings.seed, length=length,
                                        batch_size=settings.batch_size, device=device, tag=UNCOND, progress=True)
            texts = decode_samples(tokens, tok)
            if samples is not None:
                samples.append(SampleCell(str(path), label, k, settings.seed, tokens.numpy(), texts))
            scored = gen_ppl(texts, judge, max_length=length, batch_size=settings.judge_batch_size,
                             eos_rule=settings.eos_rule)
            entry = {"checkpoint": str(path), "label": label, "method": method, "seed": seed, "steps": k,
                     "gen_ppl": scored.gen_ppl, "entropy": unigram_entropy(tokens), "nfe": nfe,
                     "seconds_per_sample": seconds / settings.n, "mauve": None, "judge": settings.judge,
                     "val_ppl": ckpt["val_ppl"], "bits_per_char": ckpt["bits_per_char"], "sample": texts[0],
                     # per sample, for intervals over samples (scale.evaluation.report)
                     "per_sample_nll": scored.per_sample_nll, "per_sample_tokens": scored.per_sample_tokens,
                     "per_sample_entropy": sample_entropy(tokens).tolist()}
            if settings.mauve:
                entry.update(conditional(model, tok, human, judge, settings, k, device))
            result["entries"].append(entry)
            print(f"{label:>24} steps {k:>5}: gen PPL {entry['gen_ppl']:9.2f}  entropy {entry['entropy']:.3f}  "
                  f"nfe {nfe:7.2f}  {entry['seconds_per_sample'] * 1e3:8.2f} ms/sample"
                  + (f"  MAUVE {entry['mauve']:.3f}" if entry["mauve"] is not None else ""))
    return result


def plot(result: dict, path: str | Path) -> None:
    """Gen PPL (log scale where it spans a decade) and entropy against steps (log2 scale, the step counts as
    ticks), one line per checkpoint; the judge named by judge_label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ppl, ax_ent) = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(e["label"] for e in result["entries"]):
        rows = sorted((e for e in result["entries"] if e["label"] == label), key=lambda e: e["steps"])
        ks = [e["steps"] for e in rows]
        ax_ppl.plot(ks, [e["gen_ppl"] for e in rows], marker="o", label=label)
        ax_ent.plot(ks, [e["entropy"] for e in rows], marker="o", label=label)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    judge = judge_label(result["judge"])
    steps = sorted({e["steps"] for e in result["entries"]})
    for ax, ylabel in ((ax_ppl, f"generative perplexity\n({judge})"), (ax_ent, "unigram entropy (nats)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(steps, [str(k) for k in steps])  # the step counts themselves, not powers of 2
        ax.set_xlabel("sampling steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ppl = [e["gen_ppl"] for e in result["entries"]]
    if max(ppl) > 10 * min(ppl):  # a log axis only where the values span a decade, else it has no labels
        ax_ppl.set_yscale("log")
        ax_ppl.yaxis.set_minor_formatter(NullFormatter())
    ax_ppl.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}".replace(",", " ")))
    ax_ppl.legend(fontsize=8)
    fig.tight_layout()
    durable.write_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def check_finite(value, key: str = "result", where: str = "?"):
    """value, refused if a metric in it (at any depth) is NaN or infinite: such a number says that the
    weights or the judge are broken, and written into the JSON it would pass for a measurement."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key}: expected a finite number, got {value} (checkpoint {where}); are its weights "
                         f"finite?")
    if isinstance(value, dict):
        where = value.get("checkpoint", where)
        for k, v in value.items():
            check_finite(v, k, where)
    elif isinstance(value, list):
        for v in value:
            check_finite(v, key, where)
    return value

