"""An interpolated modified Kneser-Ney n-gram judge (Chen & Goodman 1998), for machines without GPT-2.

`python -m scale train-ngram-judge --tokenizer DIR --out DIR [--data wiki] [--split heldout] [--order 3]`
counts the n-grams of one corpus split (default: `heldout`, text neither the diffusion models nor their
validation read) on a tokenizer's ids, and writes a folder that `scale.evaluation.judge.load_judge` reads like a
GPT-2 judge: `evaluate --judge DIR` scores samples with it through the same generative-perplexity
protocol (scale.evaluation.metrics.gen_ppl calls `judge.token_nll`). Its judge.json records the data, the
settings, its own perplexity on the `validation` split and how far it separates real validation blocks
from the same blocks with their tokens shuffled.

Counts (order n, a training stream of ids in which every document ends with eos):
- order n: c_n(h w) = how often the n-gram h w occurs;
- order k < n: the continuation count c_k(h w) = N1+(. h w) = how many distinct tokens precede h w.
Per context h of order k: T(h) = sum_w c_k(h w) and N_r(h) = #{w : c_k(h w) = r} (r = 1, 2, >= 3).

Probability (the interpolated recursion, from the uniform distribution over the V tokens up):

    P_0(w) = 1 / V
    P_k(w | h) = [max(c_k(h w) - D_k(c_k(h w)), 0) + gamma_k(h) P_{k-1}(w | h')] / T(h)
    gamma_k(h) = D_k1 N_1(h) + D_k2 N_2(h) + D_k3 N_3+(h)

h' is h without its first token; a context never seen (T(h) = 0) gives P_k = P_{k-1}. Since
sum_w max(c - D(c), 0) = T(h) - gamma_k(h) when 0 <= D(c) <= c, every P_k(. | h) sums to 1 over the
vocabulary. Discounts per order (Chen & Goodman's estimates), from n_r = number of k-grams of count r:

    Y = n_1 / (n_1 + 2 n_2),  D_k1 = 1 - 2 Y n_2 / n_1,  D_k2 = 2 - 3 Y n_3 / n_2,  D_k3 = 3 - 4 Y n_4 / n_3

(clipped to [0, r]; when some n_r is 0 the fixed discounts 0.5, 1.0, 1.5 are used). A token whose
history is cut by the start of a chunk uses the orders its history allows (highest k = history + 1).
"""
from __future__ import annotations

import json
import math
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from imdm_lab import durable
from imdm_lab.checks import check_int, check_writable
from scale.data.corpora import get_corpus
from scale.data.json_fields import Field, check_fields, check_numbers, integer, is_text, one_of, read_object
from scale.data.tokenizers import load_tokenizer, wrap_specials
from scale.evaluation.metrics import gen_ppl

FORMAT = "imdm-lab-ngram/1"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
NGRAM_JUDGE = durable.Owner("--out", "ngram.json", "an n-gram judge")  # what train_ngram_judge may replace


def modified_discounts(count_of_counts: Counter) -> tuple[float, float, float]:
    """(D1, D2, D3+) from n_r = count_of_counts[r] (module docstring), clipped to [0, r]."""
    n1, n2, n3, n4 = (count_of_counts.get(r, 0) for r in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) == 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    raw = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    return tuple(min(max(d, 0.0), float(r)) for r, d in zip((1, 2, 3), raw, strict=False))


class KneserNey:
    """Interpolated modified Kneser-Ney over a vocabulary of `vocab_size` ids.

    counts[k-1]: {k-gram tuple: c_k} for k = 1..order (raw counts at the top order, continuation counts
    below); discounts[k-1]: (D_k1, D_k2, D_k3+), estimated from the counts unless given."""

    def __init__(self, counts: list[dict], vocab_size: int, discounts: list[tuple] | None = None):
        check_int("vocab_size", vocab_size, 1)
        self.order, self.vocab_size, self.counts = len(counts), vocab_size, counts
        self.discounts = discounts or [modified_discounts(Counter(c.values())) for c in counts]
        if len(self.discounts) != self.order:
            raise ValueError(f"discounts: expected {self.order} triples, got {len(self.discounts)}")
        # Per order k: {context h (k-1 tokens): (T(h), gamma_k(h))}.
        self.context = []
        for k, table in enumerate(counts):
            d1, d2, d3 = self.discounts[k]
            stats: dict = {}
            for gram, c in table.items():
                t, g = stats.get(gram[:-1], (0, 0.0))
                stats[gram[:-1]] = (t + c, g + (d1 if c == 1 else d2 if c == 2 else d3))
            self.context.append(stats)

    @classmethod
    def fit(cls, stream, order: int, vocab_size: int, discounts=None) -> KneserNey:
        """Counts of one id stream (list of ints): raw n-grams at the top order, N1+(. h w) below."""
        check_int("order", order, 1)
        stream = [int(i) for i in stream]
        if len(stream) < order:
            raise ValueError(f"stream: expected at least order = {order} ids, got {len(stream)}")
        if min(stream) < 0 or max(stream) >= vocab_size:
            raise ValueError(f"stream: expected ids in [0, {vocab_size}), got {min(stream)}..{max(stream)}")
        top = Counter(tuple(stream[i:i + order]) for i in range(len(stream) - order + 1))
        counts = [top]
        for _ in range(order - 1):  # c_k(h w) = number of distinct tokens before h w among the (k+1)-grams
            counts.append(Counter(gram[1:] for gram in counts[-1]))
        return cls([dict(c) for c in reversed(counts)], vocab_size, discounts)

    def _discount(self, k: int, c: int) -> float:
        return 0.0 if c == 0 else self.discounts[k][min(c, 3) - 1]

    def prob(self, word: int, history=()) -> float:
        """P(word | history) by the recursion of the module docstring (history: the preceding ids)."""
        history = tuple(history)[len(history) - min(len(history), self.order - 1):]
        p = 1.0 / self.vocab_size
        for k in range(self.order):  # order k + 1: context of k tokens
            if k > len(history):
                break
            h = history[len(history) - k:] if k else ()
            stats = self.context[k].get(h)
            if stats is None:
                continue
            total, gamma = stats
            c = self.counts[k].get(h + (word,), 0)
            p = (max(c - self._discount(k, c), 0.0) + gamma * p) / total
        return p

    def nll(self, ids) -> np.ndarray:
        """Float64[n - 1]: -log P(ids[j] | ids[:j]) for j = 1..n-1 of one sequence."""
        ids = [int(i) for i in ids]
        n = self.order - 1
        return np.array([-math.log(self.prob(ids[j], ids[max(0, j - n):j])) for j in range(1, len(ids))],
                        dtype=np.float64)

    # ---- storage: one int64 array of (k-gram, count) rows per order ----------------------------
    def save(self, folder: Path) -> None:
        arrays = {f"order{k + 1}": np.array([(*g, c) for g, c in t.items()], dtype=np.int64).reshape(-1, k + 2)
                  for k, t in enumerate(self.counts)}
        arrays["discounts"] = np.array(self.discounts, dtype=np.float64)
        np.savez(folder / "counts.npz", **arrays)

    @classmethod
    def load(cls, folder: Path, vocab_size: int, where: str = "judge") -> KneserNey:
        """The model of a folder's counts.npz, every array checked (read_counts)."""
        arrays = read_counts(folder / "counts.npz", vocab_size, where)
        order = len(arrays) - 1
        counts = [{tuple(int(v) for v in row[:-1]): int(row[-1]) for row in arrays[f"order{k + 1}"]}
                  for k in range(order)]
        discounts = [tuple(float(d) for d in row) for row in arrays["discounts"]]
        return cls(counts, vocab_size, discounts)


class NgramJudge:
    """A Kneser-Ney model with its tokenizer, in the place of a causal-LM judge (scale.evaluation.metrics.Judge):
    gen_ppl reads name, tokenizer, context, eos_id and token_nll. It has no hidden states, so it
    gives no MAUVE features."""

    def __init__(self, name: str, lm: KneserNey, tokenizer):
        self.name, self.lm, self.tokenizer = name, lm, tokenizer
        self.context = 1 << 30  # no window: every token of a sample sees its whole n-gram history
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def eos_id(self) -> int:
        return document_end(self.tokenizer)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def token_nll(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Float64[B, W - 1]: -log P(ids[b, j + 1] | ids[b, :j + 1]) on the unpadded part of each row
        (ids, attention_mask: Long[B, W], right padding); padded targets are 0."""
        out = torch.zeros(ids.shape[0], max(ids.shape[1] - 1, 0), dtype=torch.float64)
        for b, (row, mask) in enumerate(zip(ids.tolist(), attention_mask.tolist(), strict=False)):
            n = int(sum(mask))
            if n > 1:
                out[b, :n - 1] = torch.from_numpy(self.lm.nll(row[:n]))
        return out


def document_end(tokenizer) -> int:
    """The id that ends a document in the models' blocks (scale.data.tokenizers.wrap_specials, MDLM's rule):
    eos for GPT-2 (50256), [CLS] for BERT (101, which LM1B blocks also put between sentences)."""
    try:
        return int(wrap_specials(tokenizer)[1])
    except ValueError:
        raise ValueError(f"--tokenizer: {getattr(tokenizer, 'name_or_path', tokenizer)!r} has neither an eos "
                         f"nor a [SEP] token to end documents with") from None


def _stream(data: str, split: str, tokenizer) -> list[int]:
    """Ids of every document of data/split, each followed by eos (how the models' blocks see them)."""
    docs = list(get_corpus(data, split).documents())
    eos = document_end(tokenizer)
    out: list[int] = []
    for ids in tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]:
        out.extend(ids)
        out.append(eos)
    return out


def separation(judge, texts: list[str], seed: int = 0) -> dict:
    """Gen PPL of `texts` and of the same texts with their judge tokens shuffled within each text."""
    rng = np.random.default_rng(seed)
    shuffled = []
    for ids in judge.tokenizer(texts, verbose=False)["input_ids"]:
        shuffled.append(judge.tokenizer.decode(list(rng.permutation(ids)), clean_up_tokenization_spaces=False))
    real, mixed = gen_ppl(texts, judge).gen_ppl, gen_ppl(shuffled, judge).gen_ppl
    return {"real_ppl": real, "shuffled_ppl": mixed, "ratio": mixed / real, "texts": len(texts)}


def train_ngram_judge(out: str | Path, tokenizer: str, *, data: str = "wiki", split: str = "heldout",
                      eval_split: str = "validation", order: int = 3, block: int = 64, max_pieces: int = 0,
                      seed: int = 0) -> dict:
    """Count data/split on `tokenizer`, save the judge to `out` (atomically) and return its summary:
    perplexity of the eval_split stream, and the real / shuffled separation on its texts cut into
    `block`-token pieces (the first `max_pieces` of them; 0: all). `out` must be new, empty or a judge of
    this function (NGRAM_JUDGE), which is replaced."""
    check_int("--order", order, 1)
    check_int("--block", block, 2)
    check_int("--max-pieces", max_pieces, 0)
    start, out = time.time(), durable.check_owner(check_writable("--out", out, folder=True), NGRAM_JUDGE)
    tok = load_tokenizer(tokenizer)
    vocab = len(tok)
    val = _stream(data, eval_split, tok)  # first: --block is checked against it before the counting
    if block > len(val):
        raise ValueError(f"--block: expected at most {len(val)} (the tokens of {data}/{eval_split}, cut into "
                         f"pieces of --block tokens for the separation check), got {block}")
    lm = KneserNey.fit(_stream(data, split, tok), order, vocab)
    judge = NgramJudge(str(out), lm, tok)
    val_nll = float(lm.nll(val).mean())
    pieces = [tok.decode(val[i:i + block]) for i in range(0, len(val) - block + 1, block)]
    pieces = pieces[:max_pieces or len(pieces)]
    summary = {"judge": str(out), "kind": "kneser-ney", "format": FORMAT, "data": data, "split": split,
               "eval_split": eval_split, "order": order, "tokenizer": tokenizer, "vocab_size": vocab,
               "train_tokens": sum(lm.counts[-1].values()) + order - 1,
               "ngrams": [len(t) for t in lm.counts], "discounts": [list(d) for d in lm.discounts],
               "val_tokens": len(val) - 1, "val_nll": val_nll, "val_ppl": math.exp(val_nll),
               "separation": {"block": block, **separation(judge, pieces, seed)}, "seed": seed}
    summary["seconds"] = time.time() - start
    with durable.folder(out, NGRAM_JUDGE) as staged:
        lm.save(staged)
        tok.save_pretrained(str(staged))
        (staged / "ngram.json").write_text(json.dumps(summary, indent=1))
    return summary


# ---- the folder, read back ------------------------------------------------------------------------
# ngram.json entries a reader uses (the rest is the summary of train_ngram_judge; every number in it finite)
META = {
    "format": Field(one_of(FORMAT), repr(FORMAT)),
    "kind": Field(one_of("kneser-ney"), "'kneser-ney'"),
    "order": Field(integer(1), "an integer >= 1"),
    "vocab_size": Field(integer(1), "an integer >= 1"),
    "tokenizer": Field(is_text, "the tokenizer the counts were made with"),
    "data": Field(is_text, "a corpus name"),
    "split": Field(is_text, "a split name"),
}
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_ngram_meta(folder: str | Path, where: str = "judge") -> dict:
    """ngram.json of a judge folder, its META entries and every number checked."""
    path = Path(folder) / "ngram.json"
    meta = check_fields(read_object(path, where, "the summary of an n-gram judge"), META, f"{where}: {path}")
    check_numbers(meta, f"{where}: {path}")
    return meta


def _npz_arrays(path: Path, where: str) -> dict[str, np.ndarray]:
    """The arrays of an np.savez file, refused unless each member is a plain array (no pickled objects) of
    exactly the bytes its header claims; a header is read before its data, so a claimed shape costs nothing."""
    if not path.is_file():
        raise ValueError(f"{where}: {path}: expected the counts of an n-gram judge, but the file is missing")
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in NPY_HEADERS:
                        raise ValueError(f"{info.filename} has the unknown .npy version {version}")
                    shape, _, dtype = NPY_HEADERS[version](f)
                    if dtype.hasobject:
                        raise ValueError(f"{info.filename} holds pickled objects")
                    if math.prod(shape) * dtype.itemsize != info.file_size - f.tell():
                        raise ValueError(f"{info.filename} holds {info.file_size - f.tell()} bytes of data where "
                                         f"its header claims {shape} of {dtype}")
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{where}: {path}: expected an .npz of plain arrays (np.savez), got a damaged or "
                         f"foreign file ({type(err).__name__}: {err})") from None


def read_counts(path: Path, vocab_size: int, where: str = "judge") -> dict[str, np.ndarray]:
    """counts.npz: order1..orderK (Int64[m_k, k + 1]: k token ids in [0, vocab_size), then a count >= 1; no
    k-gram twice) and discounts (Float64[K, 3], D_r finite in [0, r]); ValueError('WHERE: PATH: ARRAY:
    expected ..., got ...')."""
    arrays = _npz_arrays(path, where)
    order = sum(1 for name in arrays if name.startswith("order"))
    names = {f"order{k + 1}" for k in range(order)} | {"discounts"}
    if order < 1 or set(arrays) != names:
        raise ValueError(f"{where}: {path}: expected the arrays order1..orderK and discounts, got {sorted(arrays)}")
    for k in range(1, order + 1):
        a, at = arrays[f"order{k}"], f"{where}: {path}: order{k}"
        if a.dtype != np.int64 or a.ndim != 2 or a.shape[1] != k + 1 or len(a) == 0:
            raise ValueError(f"{at}: expected int64 rows of {k} token ids and a count, got {a.dtype} of shape "
                             f"{a.shape}")
        ids, counts = a[:, :-1], a[:, -1]
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(f"{at}: expected token ids in [0, {vocab_size}) (ngram.json vocab_size), got ids in "
                             f"[{ids.min()}, {ids.max()}]")
        if counts.min() < 1:
            raise ValueError(f"{at}: expected counts >= 1, got {counts.min()}")
        if len(np.unique(ids, axis=0)) != len(ids):
            raise ValueError(f"{at}: expected each {k}-gram once, got repeated rows")
    d = arrays["discounts"]
    if d.dtype != np.float64 or d.shape != (order, 3):
        raise ValueError(f"{where}: {path}: discounts: expected float64 of shape ({order}, 3), got {d.dtype} of "
                         f"shape {d.shape}")
    if not (np.isfinite(d).all() and (d >= 0).all() and (d <= np.array([1.0, 2.0, 3.0])).all()):
        raise ValueError(f"{where}: {path}: discounts: expected finite D_r in [0, r] (r = 1, 2, 3), got "
                         f"{d.tolist()}")
    return arrays


def load_ngram_judge(folder: str | Path) -> NgramJudge:
    """The judge of a folder written by train_ngram_judge, checked whole on open: ngram.json
    (read_ngram_meta), the tokenizer (its vocabulary the vocab_size of ngram.json) and counts.npz
    (read_counts, of the order of ngram.json), so that a damaged judge is refused before any sample is
    drawn, not after, nor scored with a wrong vocabulary."""
    folder = Path(folder)
    meta = read_ngram_meta(folder)
    tok = load_tokenizer(str(folder))
    document_end(tok)  # the eos every scored sample needs
    if meta["vocab_size"] != len(tok):
        raise ValueError(f"judge: {folder / 'ngram.json'}: vocab_size: expected the {len(tok)} tokens of the "
                         f"tokenizer in {folder}, got {meta['vocab_size']}")
    lm = KneserNey.load(folder, meta["vocab_size"])
    if lm.order != meta["order"]:
        raise ValueError(f"judge: {folder / 'ngram.json'}: order: expected the order {lm.order} of counts.npz, got "
                         f"{meta['order']}")
    return NgramJudge(str(folder), lm, tok)
