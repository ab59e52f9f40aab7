"""Fixtures shared by the test files.

`token_cache`: one offline token-block cache per test session, so a corpus is tokenized once however
many files train on it. Session-wide means the environment it sets stays for the rest of the session.
"""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.fixture(scope="session")
def token_cache(tmp_path_factory):
    """The session's `$IMDM_CACHE` folder, with the Hugging Face hub and datasets offline."""
    path = tmp_path_factory.getbasetemp() / "imdm-cache"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"IMDM_CACHE": str(path), **OFFLINE}.items():
            mp.setenv(key, value)
        yield path


@pytest.fixture(scope="session")
def subprocess_env(token_cache):
    """Environment for a `python -m scale` child: the session's cache, one thread per process (two
    processes share the CPU under torchrun) and this checkout importable."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """make(step) -> a folder holding a fresh tiny-cpu checkpoint with the BERT vocabulary at `step`
    (what `train` leaves there), written without training, initialised from torch.manual_seed(seed);
    std: every weight redrawn from N(0, std) (logits that depend on the input, a live label path)."""
    import torch

    from scale.checkpoints.checkpoint import save_checkpoint
    from scale.checkpoints.config import load_config
    from scale.model.dit import DiT

    def make(step: int = 0, std: float | None = None, seed: int = 0) -> Path:
        folder = tmp_path_factory.mktemp(f"ckpt-step{step}") / "run"
        config = load_config("tiny-cpu", ["model.vocab_size=30522", "model.mask_id=103"])
        torch.manual_seed(seed)
        model = DiT(config.model)
        if std is not None:
            with torch.no_grad():
                for p in model.parameters():
                    p.normal_(0, std)
        save_checkpoint(folder, model.state_dict(), model.state_dict(), None, {
            "step": step, "config": config.to_dict(), "tokenizer": "bert-base-uncased"})
        return folder
    return make


@pytest.fixture(scope="session")
def tiny_ngram_judge(tmp_path_factory, token_cache):
    """A bigram judge folder (ROOT/judge) on 20 short documents with a 512-token BPE of them (ROOT/tokenizer, a
    few hundred tokens used). Tests that damage it copy it first."""
    from scale.data.bpe import train_bpe
    from scale.evaluation.ngram_judge import train_ngram_judge

    root = tmp_path_factory.mktemp("ngram")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"{i:02d}.txt").write_text(f"document {i} says the cat sat on the mat and the dog ran. " * 3)
    train_bpe(root / "tokenizer", data=str(corpus), vocab_size=512)
    train_ngram_judge(root / "judge", str(root / "tokenizer"), data=str(corpus), order=2, block=8)
    return root / "judge"
