"""Judge language models for generative perplexity and MAUVE features: load one, or train a small one.

The paper's judge is GPT-2 large (`gpt2-large` on the hub). `load_judge` takes a hub name or a local
folder written by `save_pretrained`; a folder that holds only model weights is read with the GPT-2
tokenizer (vendored, so it works offline). Machines without GPT-2 weights can train a small causal
LM on held-out text with `train_judge` (CLI: `python -m scale train-judge --out DIR`, defined in
`scale/commands/train_judge.py`); every result names the judge it used, so such a proxy is never mistaken for
GPT-2 large.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from imdm_lab.checks import check_device, check_int, check_seed, check_writable
from scale.data.blocks import BatchStream, eval_indices, load_blocks
from scale.data.corpora import DEFAULT_CORPUS
from scale.data.tokenizers import load_tokenizer

DEFAULT_JUDGE = "gpt2-large"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model")
# Small GPT-2 shapes for a proxy judge (all share GPT-2's 50 257-token vocabulary).
JUDGE_SIZES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=2),
    "small": dict(n_layer=4, n_embd=256, n_head=4),
    "base": dict(n_layer=6, n_embd=384, n_head=6),
}


@dataclass
class Judge:
    """A causal LM with its tokenizer. context: the longest sequence one forward pass scores."""
    name: str
    model: torch.nn.Module
    tokenizer: object
    context: int

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eos_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @torch.no_grad()
    def token_nll(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Float64[B, W - 1] on the CPU: -log p(ids[b, j + 1] | ids[b, :j + 1]) of a right-padded batch
        (ids, attention_mask: Long[B, W]); what scale.evaluation.metrics.gen_ppl scores."""
        logits = self.model(input_ids=ids.to(self.device), attention_mask=attention_mask.to(self.device)).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:].to(self.device),
                                                 reduction="none").double().cpu()


def judge_label(judge: str, info: dict | None = None) -> str:
    """A short name of a judge for plots: by what its summary (`info`, else the ngram.json / judge.json of
    a local folder) says it is, a Kneser-Ney n-gram or a proxy GPT-2 of `train_judge`, with its folder's
    name; a Hub id as it is; never a full path."""
    path = Path(judge)
    for name in ("ngram.json", "judge.json"):
        if info is None and (path / name).is_file():
            try:
                info = json.loads((path / name).read_text())
            except (OSError, json.JSONDecodeError):
                info = None
    if info and info.get("kind") == "kneser-ney":
        return f"Kneser-Ney {info.get('order')}-gram judge on {info.get('data')}/{info.get('split')}"
    if info and "size" in info:
        return f"proxy GPT-2 {info['size']} judge '{path.name}'"
    return path.name if path.is_dir() or path.is_absolute() or info else judge


def _context_of(model, tokenizer) -> int:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(cfg, key, None), int):
            return int(getattr(cfg, key))
    return int(tokenizer.model_max_length)


def load_judge(name_or_dir: str = DEFAULT_JUDGE, *, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> Judge:
    """Load a judge by hub name (default gpt2-large), from a local `save_pretrained` folder, or from a
    folder of `python -m scale train-ngram-judge` (a scale.evaluation.ngram_judge.NgramJudge, CPU only)."""
    from transformers import AutoModelForCausalLM

    if not isinstance(name_or_dir, str) or not name_or_dir:
        raise ValueError(f"judge: expected a model name or folder, got {name_or_dir!r}")
    path = Path(name_or_dir).expanduser()
    if (path / "ngram.json").is_file():  # a Kneser-Ney judge of `python -m scale train-ngram-judge`
        from scale.evaluation.ngram_judge import load_ngram_judge
        return load_ngram_judge(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"judge: folder {str(path)!r} has no config.json "
                             "(expected a folder written by save_pretrained)")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
        except Exception as err:  # safetensors, torch and config errors come in many types
            raise ValueError(f"judge: folder {str(path)!r} holds no loadable model "
                             f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
        has_tok = any((path / f).exists() for f in TOKENIZER_FILES)
        tokenizer = load_tokenizer(str(path) if has_tok else "gpt2")
    elif name_or_dir.startswith((".", "/", "~")):
        raise ValueError(f"judge: folder {name_or_dir!r} does not exist")
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(name_or_dir, dtype=dtype)
        except Exception as err:  # hub errors come in many types
            raise ValueError(
                f"judge: model {name_or_dir!r} could not be loaded ({type(err).__name__}); "
                "without the hub, pass a local folder, e.g. one written by "
                "`python -m scale train-judge --out DIR`") from None
        tokenizer = load_tokenizer(name_or_dir)
    if len(tokenizer) > model.config.vocab_size:
        raise ValueError(f"judge: tokenizer of {len(tokenizer)} tokens does not fit the model's "
                         f"{model.config.vocab_size}-token vocabulary")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # right padding; padded positions are never scored
    model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return Judge(name_or_dir, model, tokenizer, _context_of(model, tokenizer))


@torch.no_grad()
def mean_nll(model, blocks, batch_size: int, max_batches: int) -> float:
    """Mean next-token NLL (nats) of a causal LM over the first blocks of `blocks`."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for idx in eval_indices(len(blocks), batch_size, max_batches=max_batches):
        x = blocks.get_batch(idx).to(device)
        logits = model(x).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="sum")
        total, count = total + nll.item(), count + x[:, 1:].numel()
    return total / count


def train_judge(out: str | Path, *, data: str = DEFAULT_CORPUS, split: str = "heldout",
                eval_split: str = "validation", size: str = "small", length: int = 128,
                steps: int = 300, batch_size: int = 16, lr: float = 1e-3, warmup: int = 30,
                eval_batches: int = 64, seed: int = 0, device: str | None = None,
                progress: bool = True) -> dict:
    """Train a small GPT-2 on `data`/`split` (text the diffusion model never trains on) and save it
    to `out` with save_pretrained + the GPT-2 tokenizer, so `load_judge(out)` reads it back. Its
    context is `length`: longer samples are scored in chunks of that size.

    AdamW (weight decay 0.01), linear warm-up then cosine decay to 10% of lr; a fixed seed fixes
    the initialisation and the data order. Returns (and writes to out/judge.json) a summary with the
    final training loss and the validation perplexity on the first `eval_batches` batches of
    `eval_split`.
    """
    if size not in JUDGE_SIZES:
        raise ValueError(f"size: expected one of {sorted(JUDGE_SIZES)}, got {size!r}")
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 1), ("length", length, 3),
                             ("eval_batches", eval_batches, 1), ("warmup", warmup, 0)):
        check_int(name, value, low)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: expected a finite number > 0, got {lr!r}")
    seed = check_seed("seed", seed)
    device = check_device("device", device)
    out = check_writable("out", out, folder=True)
    from tqdm.auto import tqdm  # the heavy imports once the arguments are known to be good
    from transformers import GPT2Config, GPT2LMHeadModel

    train_blocks = load_blocks(data, split, tokenizer="gpt2", length=length, progress=progress)
    val_blocks = load_blocks(data, eval_split, tokenizer="gpt2", length=length, progress=progress)
    if len(train_blocks) < batch_size:
        raise ValueError(f"batch_size: expected at most the {len(train_blocks)} training blocks of "
                         f"{data}/{split} at length {length}, got {batch_size}")
    tokenizer = load_tokenizer("gpt2")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=length, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **JUDGE_SIZES[size])
    model = GPT2LMHeadModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    stream = BatchStream(len(train_blocks), batch_size, seed=seed)
    model.train()
    start, loss = time.time(), float("nan")
    for step in tqdm(range(steps), desc=f"judge {size}", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x = train_blocks.get_batch(stream.next_indices()).to(device)
        out_ = model(x, labels=x)
        opt.zero_grad(set_to_none=True)
        out_.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss = out_.loss.detach()  # read once at the end: no device sync per step
    model.eval()
    val_nll = mean_nll(model, val_blocks, batch_size, max_batches=eval_batches)
    summary = {"judge": str(out), "data": data, "split": split, "eval_split": eval_split,
               "size": size, "length": length, "steps": steps, "batch_size": batch_size, "lr": lr,
               "eval_batches": eval_batches, "seed": seed,
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_tokens_seen": steps * batch_size * length, "final_train_loss": float(loss),
               "val_nll": val_nll, "val_ppl": math.exp(val_nll), "seconds": time.time() - start}
    # Write next to the target and rename: a killed run never leaves a half-written judge.
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "judge.json").write_text(json.dumps(summary, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary
