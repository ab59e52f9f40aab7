"""scale.evaluation.samples.draw, the one seed recipe: `python -m scale sample`, the training-time samples
(scale.evaluation.validation.sample_texts) and `scale evaluate`'s draws give the same tokens at the same seed, and
the tokens are those of the recipe its docstring states, rebuilt here from the shared sampler."""
import json

import pytest
import torch

import scale.evaluation.evaluate
from imdm_lab.counter_rng import derive_seed
from imdm_lab.sampling import sample
from scale.checkpoints.checkpoint import load_model
from scale.cli import main
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.samples import COND, UNCOND, draw, prefix_tokens
from scale.evaluation.validation import sample_texts

CPU = torch.device("cpu")
L = 8  # positions drawn (the checkpoint's training length is 32)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    """A tiny IMDM checkpoint with random weights: logits that depend on the input and a live label path,
    so that a wrong label seed or generator shows in the tokens."""
    return tiny_checkpoint(0, std=0.1, seed=3)


def test_sample_command_training_samples_and_evaluate_give_the_same_tokens(ckpt, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["sample", "--ckpt", str(ckpt), "--steps", "1,3", "--n", "5", "--seed", "7",
                 "--length", str(L), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    command = json.loads(out.read_text())
    model, state = load_model(ckpt, "ema", CPU)
    tok = load_tokenizer(state.tokenizer)
    training = sample_texts(model, L, [1, 3], 5, seed=7, device=CPU, decode=tok.decode)
    assert scale.evaluation.evaluate.draw is draw  # evaluate draws through the same function
    evaluated = {str(k): [tok.decode(r) for r in draw(model, 5, k, seed=7, length=L, device=CPU)[0].tolist()]
                 for k in (1, 3)}
    assert command == training == evaluated
    assert len(set(command["3"])) == 5 and command["1"] != command["3"]
    assert "=== 1 step (1 network calls per sample) ===" in printed
    other = sample_texts(model, L, [3], 5, seed=8, device=CPU, decode=tok.decode)
    assert other["3"] != training["3"]


def test_draw_is_the_documented_recipe(ckpt):
    """Labels of sample i from derive_seed(seed, tag, "eps") % 2**40 + i, batch b's draws from a generator
    seeded derive_seed(seed, tag, steps, b): rebuilt batch by batch from imdm_lab.sampling.sample."""
    model, _ = load_model(ckpt, "ema", CPU)
    n, k, seed, size = 5, 3, 11, 2
    tokens, nfe, seconds = draw(model, n, k, seed=seed, length=L, batch_size=size, device=CPU)
    base = derive_seed(seed, UNCOND, "eps") % 2**40
    parts, calls = [], 0
    for b, lo in enumerate(range(0, n, size)):
        m = min(size, n - lo)
        res = sample(model, batch_size=m, length=L, steps=k, seeds=torch.arange(lo, lo + m) + base,
                     generator=torch.Generator().manual_seed(derive_seed(seed, UNCOND, k, b)))
        parts.append(res.tokens)
        calls += res.nfe * m
    assert torch.equal(tokens, torch.cat(parts)) and nfe == calls / n and seconds > 0
    assert tokens.shape == (n, L) and not (tokens == model.process.mask_id).any()
    other, _, _ = draw(model, n, k, seed=seed, length=L, batch_size=size, device=CPU, tag="other")
    assert not torch.equal(other, tokens)


def test_prefix_samples_keep_the_prefix_and_use_the_conditional_tag(ckpt, tmp_path):
    out = tmp_path / "p.json"
    assert main(["sample", "--ckpt", str(ckpt), "--steps", "2", "--n", "3", "--length", str(L), "--prefix",
                 "the river", "--out", str(out)]) == 0
    texts = json.loads(out.read_text())["2"]
    assert all(t.startswith("[CLS] the river") for t in texts)
    model, state = load_model(ckpt, "ema", CPU)
    tok = load_tokenizer(state.tokenizer)
    ids = prefix_tokens(tok, "the river")
    given = torch.full((3, L), model.process.mask_id)
    given[:, :len(ids)] = torch.tensor(ids)
    tokens, _, _ = draw(model, 3, 2, seed=0, length=L, device=CPU, given=given, given_mask=given != 103, tag=COND)
    assert texts == [tok.decode(r) for r in tokens.tolist()]
