"""`python -m scale evaluate --ckpt DIR [DIR ...] --steps 1,2,4 --n 1024 [--judge NAME_OR_DIR] [--mauve]
[--prefix-len 50] --out OUT.json [--samples FILE.jsonl.gz]`: the few-step evaluation protocol
(scale.evaluation.evaluate) as JSON, a PNG of gen PPL and entropy against steps, one line per checkpoint, and
optionally every sample (scale.evaluation.samples_file)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from imdm_lab import durable
from imdm_lab.checks import check_figure_path, check_writable, parse_steps
from imdm_lab.sampling import check_steps_memory
from scale.evaluation.evaluate import EvalSettings, check_finite, evaluate, plot
from scale.evaluation.metrics import EOS_RULES
from scale.evaluation.samples import BATCH
from scale.evaluation.samples_file import write_samples
from scale.model.cost import device_memory


def add_arguments(p) -> None:
    p.add_argument("--ckpt", required=True, nargs="+", help="checkpoint folder(s) or Hub ids to compare")
    p.add_argument("--steps", default="1,2,4,8,16,32,64,128,256,1024", help="comma-separated step counts")
    p.add_argument("--n", type=int, default=1024, help="unconditional samples per step count (default 1024)")
    p.add_argument("--judge", default="gpt2-large", help="judge LM: hub name or local folder (default gpt2-large)")
    p.add_argument("--mauve", action="store_true", help="conditional generation and MAUVE (needs mauve-text)")
    p.add_argument("--prefix-len", type=int, default=50, help="prompt tokens of a conditional sample")
    p.add_argument("--prompts", type=int, default=256, help="validation prompts for MAUVE")
    p.add_argument("--continuations", type=int, default=5, help="samples per prompt")
    p.add_argument("--mauve-len", type=int, default=100, help="tokens compared by MAUVE (prefix included)")
    p.add_argument("--zero-shot", default="", help="comma-separated corpora for zero-shot ELBO perplexity")
    p.add_argument("--val-batches", type=int, default=8, help="validation batches of the ELBO perplexity")
    p.add_argument("--batch-size", type=int, default=BATCH,
                   help=f"sequences per sampler / ELBO batch (default {BATCH}; the samples depend on it)")
    p.add_argument("--judge-batch-size", type=int, default=8)
    p.add_argument("--eos-rule", choices=sorted(EOS_RULES), default="official",
                   help="tokens counted by gen PPL: official = every non-EOS token plus the first EOS (the "
                        "reference code); first-eos = the tokens up to and including the first EOS")
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--plot", default=None, help="PNG file (default: OUT with .png)")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--samples", default=None,
                   help="gzip'ed JSON-lines file of every sample's ids and text, one line per checkpoint x steps "
                        "(default: none)")


def _settings(args) -> EvalSettings:
    return EvalSettings(steps=tuple(parse_steps("--steps", args.steps)), n=args.n, judge=args.judge, mauve=args.mauve,
                        prefix_len=args.prefix_len, prompts=args.prompts, continuations=args.continuations,
                        mauve_len=args.mauve_len, zero_shot=tuple(s for s in args.zero_shot.split(",") if s.strip()),
                        val_batches=args.val_batches, batch_size=args.batch_size,
                        judge_batch_size=args.judge_batch_size, eos_rule=args.eos_rule, weights=args.weights,
                        seed=args.seed)


def check(args) -> tuple[EvalSettings, Path, Path | None, Path | None]:
    """(settings, JSON path, figure path or None, samples path or None): the settings, the sampler's memory
    at the largest step count, the outputs (the figure's format included), before any checkpoint is loaded."""
    settings = _settings(args)
    memory = device_memory("cuda" if torch.cuda.is_available() else "cpu")
    rows = max(settings.n, settings.prompts * settings.continuations if settings.mauve else 1)
    batch = min(settings.batch_size, rows)
    check_steps_memory("--steps", max(settings.steps), batch, memory)
    out = check_writable("--out", args.out)
    plot_path = None if args.no_plot else check_figure_path("--plot", args.plot or out.with_suffix(".png"))
    samples_path = None if args.samples is None else check_writable("--samples", args.samples)
    return settings, out, plot_path, samples_path


def run(args) -> int:
    settings, out, plot_path, samples_path = check(args)
    cells = None if samples_path is None else []
    result = check_finite(evaluate(args.ckpt, settings, cells))
    out.parent.mkdir(parents=True, exist_ok=True)
    durable.write_text(out, json.dumps(result, indent=1, allow_nan=False))
    if plot_path is not None:
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plot(result, plot_path)
    if samples_path is not None:
        samples_path.parent.mkdir(parents=True, exist_ok=True)
        write_samples(samples_path, cells)
        print(f"wrote {samples_path}")
    print(f"wrote {out}")
    return 0
