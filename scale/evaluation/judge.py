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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from imdm_lab import durable
from imdm_lab.checks import check_device, check_int, check_seed, check_writable
from imdm_lab.lr_schedule import learning_rate
from scale.data.blocks import BatchStream, eval_indices, load_blocks
from scale.data.corpora import DEFAULT_CORPUS
from scale.data.json_fields import Field, check_fields, check_numbers, integer, is_text, number, one_of, read_object
from scale.data.tokenizers import TOKENIZER_FILES, load_tokenizer
from scale.evaluation.metrics import Judge
from scale.evaluation.ngram_judge import load_ngram_judge, read_ngram_meta

DEFAULT_JUDGE = "gpt2-large"
# Small GPT-2 shapes for a proxy judge (all share GPT-2's 50 257-token vocabulary).
JUDGE = durable.Owner("out", "judge.json", "a judge")  # what train_judge may replace in `out`
JUDGE_SIZES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=2),
    "small": dict(n_layer=4, n_embd=256, n_head=4),
    "base": dict(n_layer=6, n_embd=384, n_head=6),
}


# judge.json entries a reader uses (the rest is train_judge's summary; every number in it finite)
META = {
    "data": Field(is_text, "a corpus name"),
    "split": Field(is_text, "a split name"),
    "size": Field(one_of(*JUDGE_SIZES), f"one of {sorted(JUDGE_SIZES)}"),
    "length": Field(integer(3), "an integer >= 3"),
    "val_ppl": Field(number(1.0), "a finite perplexity >= 1"),
}


def read_judge_meta(folder: str | Path) -> dict | None:
    """judge.json of a folder of train_judge, its META entries and every number checked; None where the
    folder has none (a save_pretrained folder from elsewhere)."""
    path = Path(folder) / "judge.json"
    if not path.is_file():
        return None
    meta = check_fields(read_object(path, "judge", "the summary of a judge"), META, f"judge: {path}")
    check_numbers(meta, f"judge: {path}")
    return meta


def judge_info(name_or_dir: str) -> dict | None:
    """The summary a judge folder holds, checked: ngram.json (scale.evaluation.ngram_judge.read_ngram_meta)
    or judge.json (read_judge_meta); None for a hub name or a folder with neither."""
    path = Path(name_or_dir).expanduser()
    if (path / "ngram.json").is_file():
        return read_ngram_meta(path)
    return read_judge_meta(path) if path.is_dir() else None


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
        return load_ngram_judge(path)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(f"judge: folder {str(path)!r} has no config.json "
                             "(expected a folder written by save_pretrained)")
        read_object(path / "config.json", "judge", "a model's config")
        read_judge_meta(path)
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


@dataclass(frozen=True)
class JudgeTraining:
    """How `train_judge` trains (the options of `python -m scale train-judge`): a GPT-2 of `size`
    (JUDGE_SIZES) on blocks of `length` tokens, its context; `steps` AdamW steps of `batch_size` blocks at
    the learning rate `lr_at`; the validation perplexity on the first `eval_batches` batches; `seed` fixes
    the initialisation and the data order. Refused on construction, naming the setting, unless size is a
    known size, lr a finite number > 0, the seed a valid seed and every count an integer (length >= 3,
    warmup >= 0, the others >= 1)."""
    size: str = "small"
    length: int = 128
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 30
    eval_batches: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.size not in JUDGE_SIZES:
            raise ValueError(f"size: expected one of {sorted(JUDGE_SIZES)}, got {self.size!r}")
        # stored as plain ints: judge.json records them
        for name, low in (("steps", 1), ("batch_size", 1), ("length", 3), ("eval_batches", 1), ("warmup", 0)):
            object.__setattr__(self, name, check_int(name, getattr(self, name), low))
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: expected a finite number > 0, got {self.lr!r}")
        object.__setattr__(self, "seed", check_seed("seed", self.seed))

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (from 0): linear warm-up over `warmup` steps, then cosine decay
        to 10 % of lr (imdm_lab.lr_schedule.learning_rate, kind "cosine-floor")."""
        return learning_rate(step, self.lr, self.warmup, self.steps, kind="cosine-floor")


def train_judge(out: str | Path, *, data: str = DEFAULT_CORPUS, split: str = "heldout",
                eval_split: str = "validation", training: JudgeTraining = JudgeTraining(),
                device: str | None = None, progress: bool = True) -> dict:
    """Train a small GPT-2 on `data`/`split` (text the diffusion model never trains on) as `training`
    says and save it to `out` with save_pretrained + the GPT-2 tokenizer, so `load_judge(out)` reads it
    back. Its context is `training.length`: longer samples are scored in chunks of that size.

    AdamW (weight decay 0.01, gradients clipped to norm 1) at the learning rate `training.lr_at(step)`.
    Returns (and writes to out/judge.json) a summary with the settings, the final training loss and the
    validation perplexity on the first `training.eval_batches` batches of `eval_split`.
    """
    if not isinstance(training, JudgeTraining):
        raise ValueError(f"training: expected a JudgeTraining, got {type(training).__name__}")
    device = check_device("device", device)
    out = durable.check_owner(check_writable("out", out, folder=True), JUDGE)
    from tqdm.auto import tqdm  # the heavy imports once the arguments are known to be good
    from transformers import GPT2Config, GPT2LMHeadModel

    length, batch_size = training.length, training.batch_size
    train_blocks = load_blocks(data, split, tokenizer="gpt2", length=length, progress=progress)
    val_blocks = load_blocks(data, eval_split, tokenizer="gpt2", length=length, progress=progress)
    if len(train_blocks) < batch_size:
        raise ValueError(f"batch_size: expected at most the {len(train_blocks)} training blocks of "
                         f"{data}/{split} at length {length}, got {batch_size}")
    tokenizer = load_tokenizer("gpt2")
    torch.manual_seed(training.seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=length, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **JUDGE_SIZES[training.size])
    model = GPT2LMHeadModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=0.01)
    stream = BatchStream(len(train_blocks), batch_size, seed=training.seed)
    model.train()
    start, loss = time.time(), float("nan")
    for step in tqdm(range(training.steps), desc=f"judge {training.size}", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = training.lr_at(step)
        x = train_blocks.get_batch(stream.next_indices()).to(device)
        out_ = model(x, labels=x)
        opt.zero_grad(set_to_none=True)
        out_.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss = out_.loss.detach()  # read once at the end: no device sync per step
    model.eval()
    val_nll = mean_nll(model, val_blocks, batch_size, max_batches=training.eval_batches)
    summary = {"judge": str(out), "data": data, "split": split, "eval_split": eval_split, **asdict(training),
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_tokens_seen": training.steps * batch_size * length, "final_train_loss": float(loss),
               "val_nll": val_nll, "val_ppl": math.exp(val_nll), "seconds": time.time() - start}
    with durable.folder(out, JUDGE) as staged:  # a killed run never leaves a half-written judge
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        (staged / "judge.json").write_text(json.dumps(summary, indent=1))
    return summary
