"""Generative perplexity, entropy, judge features and the proxy judge, against hand computations."""
import argparse
import json
import math

import numpy as np
import pytest
import torch

from scale.commands.train_judge import add_arguments, run
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.judge import load_judge
from scale.evaluation.metrics import (
    counted_tokens,
    decode_samples,
    gen_ppl,
    judge_features,
    sample_entropy,
    unigram_entropy,
)

EOS = 50256


pytestmark = pytest.mark.usefixtures("token_cache")


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    """A tiny random GPT-2 (context 16) saved as weights only: the loader must supply GPT-2's tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=16, n_layer=2, n_embd=32, n_head=2))
    path = tmp_path_factory.mktemp("judge")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def judge(token_cache, judge_dir):
    return load_judge(str(judge_dir), device="cpu")


def _hand_nll(model, ids, counted):
    """Sum of -log p(x_j | x_<j) over counted targets j >= 1 from one unpadded forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return sum(-logp[j - 1, ids[j]].item() for j in range(1, len(ids)) if counted[j]), \
        sum(1 for j in range(1, len(ids)) if counted[j])


def test_weights_only_folder_reads_with_gpt2_tokenizer(judge):
    assert judge.context == 16 and judge.eos_id == EOS
    assert judge.tokenizer("Hello world")["input_ids"] == [15496, 995]


def test_gen_ppl_of_a_fixed_string_equals_hand_computation(judge):
    text = "The quick brown fox jumps over the lazy dog."
    ids = [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]
    nll, n = _hand_nll(judge.model, ids, [True] * len(ids))
    result = gen_ppl([text], judge)
    assert result.tokens == n == 9
    assert result.nll == pytest.approx(nll, rel=1e-5)
    assert result.gen_ppl == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert result.judge == judge.name


def test_eos_rules_hand_masks(judge):
    ids = torch.tensor([15496, EOS, 995, EOS, 757])  # "Hello<eos> world<eos> again"
    assert counted_tokens(ids, EOS, "official").tolist() == [True, True, True, False, True]
    assert counted_tokens(ids, EOS, "first-eos").tolist() == [True, True, False, False, False]
    text = "Hello<|endoftext|> world<|endoftext|> again"
    for rule, mask in (("official", [1, 1, 1, 0, 1]), ("first-eos", [1, 1, 0, 0, 0])):
        nll, n = _hand_nll(judge.model, ids.tolist(), mask)
        got = gen_ppl([text], judge, eos_rule=rule)
        assert got.tokens == n and got.nll == pytest.approx(nll, rel=1e-5)
    with pytest.raises(ValueError, match="eos_rule: expected one of"):
        gen_ppl([text], judge, eos_rule="all")


def test_chunks_of_the_judge_context_and_truncation(judge):
    text = " ".join(f"word{i}" for i in range(20))
    ids = judge.tokenizer(text)["input_ids"]
    assert len(ids) > 32  # three chunks of at most 16 tokens
    hand = [_hand_nll(judge.model, ids[lo:lo + 16], [True] * 16) for lo in range(0, len(ids), 16)]
    got = gen_ppl([text], judge)
    assert got.tokens == sum(n for _, n in hand) == len(ids) - 3
    assert got.nll == pytest.approx(sum(v for v, _ in hand), rel=1e-5)
    cut = gen_ppl([text], judge, max_length=20)
    part = [_hand_nll(judge.model, ids[0:16], [True] * 16), _hand_nll(judge.model, ids[16:20], [True] * 4)]
    assert cut.tokens == 18 and cut.nll == pytest.approx(sum(v for v, _ in part), rel=1e-5)


def test_gen_ppl_is_corpus_level_and_independent_of_batching(judge):
    texts = ["A short one.", "A somewhat longer sample of text, with commas, and more words.",
             "Mid size text."]
    one = gen_ppl(texts, judge, batch_size=1)
    many = gen_ppl(texts, judge, batch_size=8)
    assert one.per_sample_tokens == many.per_sample_tokens
    assert np.allclose(one.per_sample_nll, many.per_sample_nll, rtol=1e-5)
    assert one.gen_ppl == pytest.approx(math.exp(sum(one.per_sample_nll) / sum(one.per_sample_tokens)))
    with pytest.raises(ValueError, match="texts: expected a non-empty list of strings"):
        gen_ppl("not a list", judge)
    with pytest.raises(ValueError, match="texts: no token to score"):
        gen_ppl(["Hi"], judge)


def test_decode_keeps_special_tokens_and_rejects_masks():
    bert = load_tokenizer("bert-base-uncased")
    assert decode_samples(torch.tensor([[101, 7592, 2088, 102]]), bert) == ["[CLS] hello world [SEP]"]
    gpt2 = load_tokenizer("gpt2")
    assert decode_samples(torch.tensor([[15496, EOS, 995]]), gpt2) == ["Hello<|endoftext|> world"]
    with pytest.raises(ValueError, match="tokens: expected ids in \\[0, 50257\\)"):
        decode_samples(torch.tensor([[15496, 50257]]), gpt2)


def test_unigram_entropy_hand_values():
    tokens = torch.tensor([[1, 1, 2, 2], [5, 5, 5, 5], [1, 2, 3, 4], [1, 1, 1, 2]])
    expected = [math.log(2), 0.0, math.log(4), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))]
    assert np.allclose(sample_entropy(tokens), expected, atol=1e-12)
    assert unigram_entropy(tokens) == pytest.approx(sum(expected) / 4)
    assert unigram_entropy([[1, 2], [7, 7, 7]]) == pytest.approx(math.log(2) / 2)
    with pytest.raises(ValueError, match="tokens: expected Long\\[B, L\\]"):
        sample_entropy(torch.tensor([1, 2, 3]))


def test_judge_features_are_last_token_hidden_states(judge):
    texts = ["Hello world, a longer text here.", "Hi"]
    feats = judge_features(texts, judge)
    assert feats.shape == (2, 32)
    for text, row in zip(texts, feats, strict=False):
        ids = torch.tensor([judge.tokenizer(text)["input_ids"]])
        with torch.no_grad():
            hidden = judge.model(ids, output_hidden_states=True).hidden_states[-1][0, -1]
        assert np.allclose(row, hidden.numpy(), atol=1e-5)


def test_mauve_on_judge_features(judge):
    mauve = pytest.importorskip("mauve")
    assert mauve is not None
    from scale.evaluation.metrics import mauve_score
    human = [f"The city council met on day {i} to discuss the budget." for i in range(40)]
    same = mauve_score(human, human, judge, seeds=(1,), num_buckets=4)
    other = mauve_score(human, [f"zq {i} {i} {i} ## !!" for i in range(40)], judge, seeds=(1,), num_buckets=4)
    assert same["mauve"] > 0.9 > other["mauve"]


def test_load_judge_errors(tmp_path):
    with pytest.raises(ValueError, match="judge: folder './nowhere' does not exist"):
        load_judge("./nowhere")
    with pytest.raises(ValueError, match="judge: folder .* has no config.json"):
        load_judge(str(tmp_path))
    with pytest.raises(ValueError, match="judge: model 'gpt2-large' could not be loaded.*train-judge"):
        load_judge("gpt2-large")


def test_train_judge_cli_function_writes_a_loadable_judge(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "proxy"
    args = parser.parse_args(["--out", str(out), "--size", "tiny", "--length", "32", "--steps", "8",
                              "--batch-size", "8", "--lr", "1e-2", "--warmup", "2", "--eval-batches", "2"])
    assert run(args) == 0
    summary = json.loads((out / "judge.json").read_text())
    # 8 steps on held-out Wikipedia already beat the uniform guess over 50 257 tokens by > 1 nat
    # on validation text (an untrained GPT-2 scores about ln 50 257).
    assert summary["val_nll"] < math.log(50257) - 1
    loaded = load_judge(str(out), device="cpu")
    assert loaded.context == 32 and loaded.tokenizer("Hello world")["input_ids"] == [15496, 995]
    result = gen_ppl(["The history of the city begins in the early years."], loaded)
    assert 1 < result.gen_ppl < 50257


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps: expected an integer >= 1, got 0"),
    (dict(length=2), "length: expected an integer >= 3, got 2"),
    (dict(warmup=-1), "warmup: expected an integer >= 0, got -1"),
    (dict(warmup=True), "warmup: expected an integer >= 0, got True"),
    (dict(eval_batches=1.5), "eval_batches: expected an integer >= 1, got 1.5"),
    (dict(size="huge"), r"size: expected one of \['base', 'small', 'tiny'\], got 'huge'"),
    (dict(lr=float("nan")), "lr: expected a finite number > 0, got nan"),
    (dict(seed=-1), r"seed: expected an integer in \[0, 2\^31\), got -1"),
])
def test_train_judge_rejects_bad_settings_before_reading_data(tmp_path, kwargs, message):
    from scale.evaluation.judge import JudgeTraining, train_judge
    with pytest.raises(ValueError, match=f"^{message}$"):
        train_judge(tmp_path / "judge", data=str(tmp_path / "no-such-corpus"), training=JudgeTraining(**kwargs))


def test_judge_learning_rate_warms_up_linearly_then_decays_by_a_cosine_to_a_tenth():
    from scale.evaluation.judge import JudgeTraining
    training = JudgeTraining(lr=0.5, warmup=4, steps=104)
    assert [training.lr_at(s) for s in range(4)] == [0.125, 0.25, 0.375, 0.5]
    assert training.lr_at(4) == 0.5  # the decay starts at lr
    assert abs(training.lr_at(54) - 0.5 * (0.1 + 0.9 * 0.5)) < 1e-15  # halfway: cos = 0
    assert abs(training.lr_at(104) - 0.05) < 1e-15  # the end: a tenth of lr
