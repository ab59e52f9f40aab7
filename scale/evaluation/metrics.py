"""Sample-quality metrics: generative perplexity under a judge, unigram entropy, MAUVE.

Generative perplexity (the protocol of MDLM / DUO / IMDM):
1. decode the samples with the model's tokenizer, special tokens kept (LM1B text keeps literal
   "[CLS]" / "[SEP]");
2. re-tokenize every text with the judge's tokenizer, truncated to `max_length` tokens (the model's
   sequence length: 128 for LM1B, 1024 for OWT);
3. cut each sequence into chunks of the judge's context (1024 for GPT-2) and score every chunk on
   its own: token j of a chunk costs -log p_judge(x_j | x_<j in the chunk), j >= 1;
4. count the tokens selected by the EOS rule (below), and report the corpus-level
   exp(sum of NLL / number of counted tokens) over all samples.

EOS rules. "official" is what the reference code computes: every non-EOS token plus the first EOS
(text after an EOS still counts; later EOS tokens do not). "first-eos" counts the tokens up to and
including the first EOS. The reference also pads batches with EOS, so a sample shorter than its
batch's longest gets one padding EOS counted, and drops the samples of a last partial batch; here
every sample is scored on its own tokens only and every sample counts, so the result does not
depend on the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from imdm_lab.checks import check_int


@dataclass
class Judge:
    """A causal LM with its tokenizer (scale.evaluation.judge.load_judge). context: the longest sequence
    one forward pass scores."""
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
        (ids, attention_mask: Long[B, W]); what gen_ppl scores."""
        logits = self.model(input_ids=ids.to(self.device), attention_mask=attention_mask.to(self.device)).logits
        return torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:].to(self.device),
                                                 reduction="none").double().cpu()


def _official_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    is_eos = ids == eos_id
    first = is_eos & (is_eos.cumsum(0) == 1)
    return ~is_eos | first


def _first_eos_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    is_eos = (ids == eos_id).long()
    before = is_eos.cumsum(0) - is_eos  # EOS tokens strictly before each position
    return before == 0


EOS_RULES = {"official": _official_mask, "first-eos": _first_eos_mask}


def counted_tokens(ids: torch.Tensor, eos_id: int, rule: str = "official") -> torch.Tensor:
    """Bool[n]: which tokens of one judge-tokenized sample Long[n] the perplexity counts
    (before chunking; a chunk's first token is never scored since it has no context)."""
    if rule not in EOS_RULES:
        raise ValueError(f"eos_rule: expected one of {sorted(EOS_RULES)}, got {rule!r}")
    return EOS_RULES[rule](ids, eos_id)


@dataclass
class GenPPL:
    """Corpus-level generative perplexity and its parts (NLL in nats)."""
    gen_ppl: float
    nll: float
    tokens: int
    judge: str
    eos_rule: str
    per_sample_nll: list = field(default_factory=list)
    per_sample_tokens: list = field(default_factory=list)


def _check_texts(texts, name: str = "texts") -> list[str]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or len(texts) == 0:
        raise ValueError(f"{name}: expected a non-empty list of strings, got {type(texts).__name__}")
    return list(texts)


def _judge_ids(texts: list[str], judge: Judge, max_length: int | None) -> list[torch.Tensor]:
    enc = judge.tokenizer(texts, verbose=False)["input_ids"]
    return [torch.tensor(ids[:max_length] if max_length else ids, dtype=torch.long) for ids in enc]


def _padded(seqs: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)], attn[i, :len(s)] = s, 1
    return ids, attn


@torch.no_grad()
def gen_ppl(texts, judge, *, max_length: int | None = None, batch_size: int = 8,
            eos_rule: str = "official") -> GenPPL:
    """Generative perplexity of `texts` under `judge` (protocol in the module docstring): a
    Judge or any object with its name, tokenizer, context, eos_id and token_nll
    (scale.evaluation.ngram_judge.NgramJudge).

    texts: list[str] of decoded samples; max_length: judge tokens kept per sample (None: all);
    batch_size: chunks per forward pass (the result does not depend on it).
    """
    texts = _check_texts(texts)
    if max_length is not None:
        check_int("max_length", max_length, 1)
    check_int("batch_size", batch_size, 1)
    if eos_rule not in EOS_RULES:
        raise ValueError(f"eos_rule: expected one of {sorted(EOS_RULES)}, got {eos_rule!r}")
    # Chunks (sample index, ids, counted-as-target mask) of at most `judge.context` tokens.
    chunks = []
    for i, ids in enumerate(_judge_ids(texts, judge, max_length)):
        counted = counted_tokens(ids, judge.eos_id, eos_rule)
        for lo in range(0, len(ids), judge.context):
            chunks.append((i, ids[lo:lo + judge.context], counted[lo:lo + judge.context]))
    nll = np.zeros(len(texts), dtype=np.float64)
    count = np.zeros(len(texts), dtype=np.int64)
    pad = judge.tokenizer.pad_token_id
    for b in tqdm(range(0, len(chunks), batch_size), desc=f"gen PPL ({judge.name})", unit="batch",
                  leave=False):
        part = chunks[b:b + batch_size]
        ids, attn = _padded([c[1] for c in part], pad)
        token_nll = judge.token_nll(ids, attn)
        for row, (i, chunk, counted) in enumerate(part):
            keep = counted[1:]  # targets are positions 1..n-1 of the chunk
            nll[i] += token_nll[row, :len(chunk) - 1][keep].sum().item()
            count[i] += int(keep.sum())
    total = int(count.sum())
    if total == 0:
        raise ValueError("texts: no token to score (every sample has fewer than 2 judge tokens)")
    return GenPPL(gen_ppl=float(np.exp(nll.sum() / total)), nll=float(nll.sum()), tokens=total,
                  judge=judge.name, eos_rule=eos_rule, per_sample_nll=nll.tolist(),
                  per_sample_tokens=count.tolist())


def decode_samples(tokens: torch.Tensor, tokenizer) -> list[str]:
    """Texts of Long[B, L] samples, special tokens kept (the protocol's step 1)."""
    tokens = torch.as_tensor(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens: expected Long[B, L], got shape {tuple(tokens.shape)}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= len(tokenizer)):
        raise ValueError(f"tokens: expected ids in [0, {len(tokenizer)}), got min {int(tokens.min())} "
                         f"max {int(tokens.max())} (an unrevealed mask id?)")
    return tokenizer.batch_decode(tokens.tolist(), skip_special_tokens=False,
                                  clean_up_tokenization_spaces=tokenizer.clean_up_tokenization_spaces)


def sample_entropy(tokens) -> np.ndarray:
    """Float64[B]: entropy (nats) of the empirical distribution of each sample's own token ids,
    H_b = -sum_v (n_bv / L_b) log(n_bv / L_b). tokens: Long[B, L] or a list of 1-D sequences."""
    if (torch.is_tensor(tokens) or isinstance(tokens, np.ndarray)) and tokens.ndim != 2:
        raise ValueError(f"tokens: expected Long[B, L], got shape {tuple(tokens.shape)}")
    seqs = list(tokens)
    if not seqs:
        raise ValueError("tokens: expected Long[B, L] or a non-empty list of 1-D sequences")
    out = np.empty(len(seqs), dtype=np.float64)
    for b, seq in enumerate(seqs):
        seq = np.asarray(seq.cpu() if torch.is_tensor(seq) else seq).ravel()
        if seq.size == 0:
            raise ValueError(f"tokens: sample {b} is empty")
        p = np.unique(seq, return_counts=True)[1] / seq.size
        out[b] = -(p * np.log(p)).sum()
    return out


def unigram_entropy(tokens) -> float:
    """Mean over samples of `sample_entropy` (the paper's "entropy" column)."""
    return float(sample_entropy(tokens).mean())


@torch.no_grad()
def judge_features(texts, judge: Judge, *, max_length: int | None = None,
                   batch_size: int = 8) -> np.ndarray:
    """Float32[N, d]: the judge's last-layer hidden state at each text's last token (MAUVE's own
    featurizer, with the judge in place of gpt2-large); texts truncated to `max_length` tokens."""
    texts = _check_texts(texts)
    if max_length is not None:
        check_int("max_length", max_length, 1)
    check_int("batch_size", batch_size, 1)
    if not hasattr(judge, "model"):
        raise ValueError(f"judge: {judge.name!r} is not a neural LM and has no features for MAUVE")
    limit = min(max_length or judge.context, judge.context)
    seqs = _judge_ids(texts, judge, limit)
    if any(len(s) == 0 for s in seqs):
        raise ValueError("texts: expected every text to give at least one judge token")
    feats = []
    for b in tqdm(range(0, len(seqs), batch_size), desc=f"features ({judge.name})", unit="batch",
                  leave=False):
        part = seqs[b:b + batch_size]
        ids, attn = _padded(part, judge.tokenizer.pad_token_id)
        hidden = judge.model(input_ids=ids.to(judge.device), attention_mask=attn.to(judge.device),
                             output_hidden_states=True).hidden_states[-1].float()
        last = torch.tensor([len(s) - 1 for s in part], device=hidden.device)
        feats.append(hidden[torch.arange(len(part), device=hidden.device), last].cpu())
    return torch.cat(feats).numpy()


def mauve_score(p_texts, q_texts, judge: Judge, *, max_length: int | None = None,
                seeds=(42, 43, 44, 45, 46), batch_size: int = 8, p_features: np.ndarray | None = None,
                **mauve_kwargs) -> dict:
    """MAUVE between human texts p and generated texts q on judge features, averaged over seeds
    (the reference runs seeds 42..46). Needs the optional `mauve-text` package (extra `mauve`).
    p_features: the judge features of p_texts when already computed (one set of human texts scored
    against several samplers); p_texts is then not featurised again."""
    try:
        import mauve
    except ImportError:
        raise ValueError("mauve: the optional package mauve-text is not installed "
                         "(pip install 'imdm-lab[mauve]')") from None
    p = p_features if p_features is not None else judge_features(p_texts, judge, max_length=max_length,
                                                                  batch_size=batch_size)
    q = judge_features(_check_texts(q_texts, "q_texts"), judge, max_length=max_length,
                       batch_size=batch_size)
    scores = [float(mauve.compute_mauve(p_features=p, q_features=q, seed=s, verbose=False,
                                        **mauve_kwargs).mauve) for s in seeds]
    return {"mauve": float(np.mean(scores)), "per_seed": scores, "judge": judge.name,
            "seeds": list(seeds), "p": len(p), "q": len(q)}
