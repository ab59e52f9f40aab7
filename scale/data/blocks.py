"""Token blocks: a corpus tokenized once, wrapped into fixed-length blocks, cached on disk, served
in a deterministic, resumable, rank-sharded order.

Wrapping (MDLM's `wrap=True`, e.g. `lm1b-wrap`, `openwebtext-split`): within each group of
`docs_per_group` = 1000 consecutive documents (the batch of MDLM's `datasets.map`), every document
is tokenized without special tokens and followed by an eos id; the group's stream is cut into pieces
of L - 2 tokens (the remainder is dropped) and each piece becomes [bos] + piece + [eos]. The bos/eos
ids are MDLM's (`scale.data.tokenizers.wrap_specials`): [CLS] = 101 for both with BERT, 50256 with GPT-2.

Cache: `$IMDM_CACHE/blocks/<corpus>-<split>-<tokenizer>-L<length>-<hash>/` (default
`~/.cache/imdm-lab`). A build writes `chunk-NNNNNN.npy` files of 10 groups each, every one durably (imdm_lab.durable:
a temporary name and an atomic rename), and records its progress; a killed build resumes at the next
chunk. When done it assembles `blocks.npy` (uint16 when ids fit) and finally `meta.json`, whose
presence marks a complete cache. Under torchrun the local rank 0 builds; other ranks wait for
`meta.json`, then all meet at a barrier when torch.distributed is initialised. Builders of the same
cache in different processes take turns through a file lock (`build.lock`).
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from imdm_lab import durable
from imdm_lab.checks import check_int
from scale.data.cache import cache_root
from scale.data.corpora import CORPUS_ALIASES, DEFAULT_CORPUS, Corpus, get_corpus
from scale.data.tokenizers import load_tokenizer, vocab_layout, wrap_specials

FORMAT_VERSION = 1
DOCS_PER_GROUP = 1000
GROUPS_PER_CHUNK = 10
# Tokenizer and block length per registered corpus (the paper's settings); others default to GPT-2.
DATA_DEFAULTS = {
    "lm1b": ("bert-base-uncased", 128),
    "openwebtext": ("gpt2", 1024),
    DEFAULT_CORPUS: ("gpt2", 1024),
}


def wrap_group(token_lists, length: int, bos: int, eos: int) -> np.ndarray:
    """Wrap one group of tokenized documents into blocks (MDLM's grouping).

    stream = concat_d(doc_d + [eos]); n = len(stream) // (L - 2);
    block_k = [bos] + stream[k (L-2) : (k+1) (L-2)] + [eos]   ->  Int64[n, L]
    """
    if length < 3:
        raise ValueError(f"length: expected an integer >= 3 (room for bos, a token and eos), got {length}")
    body = length - 2
    stream = np.fromiter(itertools.chain.from_iterable(list(t) + [eos] for t in token_lists),
                         dtype=np.int64)
    n = len(stream) // body
    blocks = np.empty((n, length), dtype=np.int64)
    blocks[:, 0] = bos
    blocks[:, -1] = eos
    blocks[:, 1:-1] = stream[: n * body].reshape(n, body)
    return blocks


def _write_json(path: Path, obj) -> None:
    durable.write_text(path, json.dumps(obj, indent=1, sort_keys=True))


def token_dtype(num_classes: int) -> np.dtype:
    """The smallest stored integer type of ids in [0, num_classes): uint16 when they fit, else int32."""
    return np.dtype(np.uint16) if num_classes <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def build_blocks(corpus: Corpus, tokenizer, length: int, out_dir: Path, meta: dict, *,
                 docs_per_group: int = DOCS_PER_GROUP, groups_per_chunk: int = GROUPS_PER_CHUNK,
                 progress: bool = True) -> None:
    """Tokenize and wrap `corpus` into `out_dir/blocks.npy` (+ meta.json), resuming a killed build."""
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    progress_file = out_dir / "progress.json"
    state = (json.loads(progress_file.read_text()) if progress_file.exists()
             else {"docs": 0, "chunks": 0, "doc_tokens": 0})
    bos, eos = wrap_specials(tokenizer)
    dtype = token_dtype(meta["num_classes"])
    docs_per_chunk = docs_per_group * groups_per_chunk
    docs = corpus.documents(state["docs"])
    with tqdm(total=corpus.num_docs, initial=state["docs"], unit="doc", disable=not progress,
              desc=f"tokenizing {corpus.name}/{corpus.split} L={length}") as bar:
        while texts := list(itertools.islice(docs, docs_per_chunk)):
            ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
            chunk = np.concatenate([wrap_group(ids[g:g + docs_per_group], length, bos, eos)
                                    for g in range(0, len(ids), docs_per_group)]).astype(dtype)
            durable.write_file(out_dir / f"chunk-{state['chunks']:06d}.npy", lambda f, chunk=chunk: np.save(f, chunk))
            state = {"docs": state["docs"] + len(texts), "chunks": state["chunks"] + 1,
                     "doc_tokens": state["doc_tokens"] + sum(len(t) + 1 for t in ids)}
            _write_json(progress_file, state)
            bar.update(len(texts))

    chunk_files = [out_dir / f"chunk-{k:06d}.npy" for k in range(state["chunks"])]
    chunks = [np.load(p, mmap_mode="r") for p in chunk_files]
    total = sum(len(c) for c in chunks)
    if total == 0:
        raise ValueError(f"data: split {corpus.split!r} of {corpus.name!r} holds {state['doc_tokens']} "
                         f"tokens, not enough for one block of length {length}")
    staged = durable.staging(out_dir / "blocks.npy")
    blocks = np.lib.format.open_memmap(staged, mode="w+", dtype=dtype, shape=(total, length))
    row = 0
    for c in chunks:
        blocks[row:row + len(c)] = c
        row += len(c)
    blocks.flush()
    del blocks, chunks
    durable.publish_file(staged, out_dir / "blocks.npy")
    _write_json(out_dir / "meta.json", {**meta, "num_blocks": total, "num_docs": state["docs"],
                                        "doc_tokens": state["doc_tokens"], "dtype": dtype.name,
                                        "bos_id": int(bos), "wrap_eos_id": int(eos)})
    for p in [*chunk_files, progress_file]:
        p.unlink(missing_ok=True)
    durable.clean_stale(out_dir)  # what killed builders left


def _dist():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed
    return None


def _local_rank() -> int:
    dist = _dist()
    return int(os.environ.get("LOCAL_RANK", dist.get_rank() if dist else 0))


def _wait_for(path: Path, poll_s: float = 1.0) -> None:
    # Polling a file rather than a collective: a long build would exceed NCCL's barrier timeout.
    while not path.exists():
        time.sleep(poll_s)


def load_blocks(data: str = DEFAULT_CORPUS, split: str = "train", *, tokenizer: str | None = None,
                length: int | None = None, hf_config: str | None = None, text_column: str = "text",
                docs_per_group: int = DOCS_PER_GROUP, progress: bool = True,
                revision: str = "") -> TokenBlocks:
    """Blocks of `data`/`split`, built once into the cache and memory-mapped.

    data: "lm1b", "openwebtext", "wikipedia" (default, offline), a local file/folder or a hub dataset id.
    tokenizer / length: default per corpus (DATA_DEFAULTS; LM1B: bert-base-uncased, 128).
    revision: a hub dataset's revision ("": as published, or its parquet export for a script dataset).
    """
    default_tok, default_len = DATA_DEFAULTS.get(CORPUS_ALIASES.get(data, data), ("gpt2", 1024))
    tokenizer = tokenizer or default_tok
    length = default_len if length is None else length
    if not isinstance(length, int) or isinstance(length, bool) or length < 3:
        raise ValueError(f"length: expected an integer >= 3, got {length!r}")
    if not isinstance(docs_per_group, int) or docs_per_group < 1:
        raise ValueError(f"docs_per_group: expected an integer >= 1, got {docs_per_group!r}")
    corpus = get_corpus(data, split, hf_config=hf_config, text_column=text_column, revision=revision)
    tok = load_tokenizer(tokenizer)
    layout = vocab_layout(tok)
    tok_id = str(Path(tokenizer).resolve()) if Path(tokenizer).is_dir() else tokenizer
    meta = {"format": FORMAT_VERSION, "corpus": corpus.name, "split": split,
            "fingerprint": corpus.fingerprint, "tokenizer": tok_id, "tokenizer_size": len(tok),
            "length": length, "docs_per_group": docs_per_group, **asdict(layout)}
    digest = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
    slug = Path(tok_id).name.replace("/", "--")
    out_dir = cache_root() / "blocks" / f"{corpus.name}-{split}-{slug}-L{length}-{digest}"
    done = out_dir / "meta.json"
    if not done.exists():
        if _local_rank() == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            # Two builders of one cache (two runs, or two nodes on a shared disk) take turns; the
            # second finds meta.json. The OS drops the lock of a killed builder, so resuming works.
            with open(out_dir / "build.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not done.exists():
                    build_blocks(corpus, tok, length, out_dir, meta, docs_per_group=docs_per_group,
                                 progress=progress)
        else:
            _wait_for(done)
    if (dist := _dist()) is not None:
        dist.barrier()
    return TokenBlocks(out_dir)


def open_blocks(data, split: str, *, progress: bool = False, dataset: str | None = None) -> TokenBlocks:
    """The blocks of `split` that a config's [data] section `data` names (scale.checkpoints.config.DataSection:
    dataset, tokenizer, length, hf_config, text_column, revision). dataset: another corpus cut the same
    way (same tokenizer, length and text column), e.g. a zero-shot evaluation's; the section's hub
    configuration and revision belong to its own dataset and are not passed to another."""
    own = dataset is None or dataset == data.dataset
    return load_blocks(data.dataset if dataset is None else dataset, split, tokenizer=data.tokenizer,
                       length=data.length, hf_config=(data.hf_config or None) if own else None,
                       text_column=data.text_column, progress=progress, revision=data.revision if own else "")


def open_data(data, progress: bool):
    """(train blocks, validation blocks, tokenizer) of a config's [data] section (open_blocks)."""
    train = open_blocks(data, "train", progress=progress)
    val = open_blocks(data, "validation", progress=progress)
    return train, val, load_tokenizer(data.tokenizer)


class TokenBlocks:
    """Memory-mapped Int[N, L] blocks with their vocabulary layout.

    get_batch(indices) -> Long[B, L]; `num_classes`, `mask_id`, `eos_id` follow
    `scale.data.tokenizers.vocab_layout` (GPT-2: C = 50258, mask 50257; BERT: C = 30522, mask 103).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_file = self.directory / "meta.json"
        if not meta_file.exists():
            raise ValueError(f"directory: expected a finished block cache with meta.json, got {directory}")
        self.meta = json.loads(meta_file.read_text())
        self.blocks = np.load(self.directory / "blocks.npy", mmap_mode="r")
        self.length = int(self.meta["length"])
        self.num_classes = int(self.meta["num_classes"])
        self.mask_id = int(self.meta["mask_id"])
        self.eos_id = self.meta["eos_id"]
        self.tokenizer_name = self.meta["tokenizer"]

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index) -> torch.Tensor:
        """Like indexing a Long[N, L] tensor (int, slice, integer array or tensor), read from disk."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if isinstance(index, (slice, int, np.integer)):
            return torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))
        return self.get_batch(index)

    def get_batch(self, indices) -> torch.Tensor:
        """Blocks at `indices` (1-D ints in [0, N)) as Long[B, L], in the given order."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices: expected a 1-D sequence of integers, got shape {idx.shape} "
                             f"dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"indices: expected values in [0, {len(self)}), got min {idx.min()} "
                             f"max {idx.max()}")
        return torch.from_numpy(self.blocks[idx].astype(np.int64))


@dataclass
class DataPosition:
    """Where a BatchStream stands: blocks consumed so far in the permutation of `epoch`."""
    epoch: int = 0
    offset: int = 0


class BatchStream:
    """Deterministic global batches of block indices, shardable across ranks, resumable exactly.

    Epoch e visits the N blocks in the order `default_rng([seed, e]).permutation(N)`. A global batch
    is the next G entries; rank r of W takes entries [r G/W, (r+1) G/W), so the ranks' shares,
    concatenated in rank order, are the batch one process would take. An epoch tail shorter than G
    is skipped (every batch is full), so the position is just (epoch, offset): save `state_dict()`
    with a checkpoint and `load_state_dict` it to continue with the very next batch.
    """

    def __init__(self, num_blocks: int, global_batch: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, position: DataPosition | None = None):
        for name, value, low in (("num_blocks", num_blocks, 1), ("global_batch", global_batch, 1),
                                 ("world_size", world_size, 1), ("seed", seed, 0)):
            check_int(name, value, low)
        if global_batch > num_blocks:
            raise ValueError(f"global_batch: expected at most the {num_blocks} blocks, got {global_batch}")
        if global_batch % world_size:
            raise ValueError(f"global_batch: expected a multiple of world_size={world_size}, "
                             f"got {global_batch}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an integer in [0, {world_size}), got {rank!r}")
        self.num_blocks, self.global_batch, self.seed = int(num_blocks), int(global_batch), int(seed)
        self.rank, self.world_size = rank, world_size
        self.position = position or DataPosition()
        self._perm_epoch, self._perm = None, None

    def permutation(self, epoch: int) -> np.ndarray:
        """The visiting order of `epoch` (a function of seed and epoch only)."""
        if self._perm_epoch != epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
            self._perm_epoch = epoch
        return self._perm

    def next_global_indices(self) -> np.ndarray:
        """The next global batch, Int64[G]; advances the position."""
        pos = self.position
        if pos.offset + self.global_batch > self.num_blocks:
            pos = DataPosition(pos.epoch + 1, 0)
        batch = self.permutation(pos.epoch)[pos.offset:pos.offset + self.global_batch]
        self.position = DataPosition(pos.epoch, pos.offset + self.global_batch)
        return batch

    def next_indices(self) -> np.ndarray:
        """This rank's share of the next global batch, Int64[G / W]; advances the position."""
        share = self.global_batch // self.world_size
        return self.next_global_indices()[self.rank * share:(self.rank + 1) * share]

    def state_dict(self) -> dict:
        return {"epoch": self.position.epoch, "offset": self.position.offset, "seed": self.seed,
                "global_batch": self.global_batch, "num_blocks": self.num_blocks}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "global_batch", "num_blocks"):
            if state.get(key) != getattr(self, key):
                raise ValueError(f"state: {key} {state.get(key)!r} does not match this stream's "
                                 f"{getattr(self, key)!r}")
        self.position = DataPosition(int(state["epoch"]), int(state["offset"]))


def eval_indices(num_blocks: int, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 max_batches: int | None = None):
    """Validation order: blocks 0..N-1 in global batches of `batch_size` (the last may be short),
    each split across ranks with np.array_split (a rank's share may be empty). Yields Int64 arrays."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if not isinstance(world_size, int) or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size, got rank={rank!r} "
                         f"world_size={world_size!r}")
    starts = range(0, num_blocks, batch_size)
    if max_batches is not None:
        starts = starts[:max_batches]
    for lo in starts:
        batch = np.arange(lo, min(lo + batch_size, num_blocks))
        yield np.array_split(batch, world_size)[rank]
