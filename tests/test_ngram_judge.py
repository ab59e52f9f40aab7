"""The Kneser-Ney judge: a toy computed by hand, Chen & Goodman's discounts, normalisation over the
vocabulary, storage, its place in the gen-PPL protocol, and the separation of real held-out text from
the same text shuffled."""
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
import torch

from scale.data.tokenizers import load_tokenizer
from scale.evaluation.judge import load_judge
from scale.evaluation.metrics import gen_ppl, judge_features
from scale.evaluation.ngram_judge import KneserNey, NgramJudge, _stream, modified_discounts, separation

FIXED = [(0.5, 1.0, 1.5)] * 2


def test_toy_probabilities_by_hand():
    """Stream 0 1 0 1 2 0, order 2, discounts (0.5, 1.0, 1.5) at both orders.
    Continuation counts: token 0 follows {1, 2} -> 2, token 1 follows {0} -> 1, token 2 follows {1} -> 1;
    T = 4, gamma_1 = 0.5 * 2 + 1.0 * 1 = 2, so P_1(0) = (2 - 1 + 2/3) / 4 = 5/12, P_1(1) = P_1(2) =
    (1 - 0.5 + 2/3) / 4 = 7/24. Context 0: c(0 1) = 2, T = 2, gamma = 1.0: P(1|0) = (1 + 7/24) / 2 = 31/48,
    P(0|0) = (5/12) / 2 = 5/24. Context 1: c(1 0) = c(1 2) = 1, gamma = 0.5 * 2: P(0|1) = (1/2 + 5/12) / 2 =
    11/24, P(2|1) = (1/2 + 7/24) / 2 = 19/48. An unseen context falls back to P_1."""
    lm = KneserNey.fit([0, 1, 0, 1, 2, 0], order=2, vocab_size=3, discounts=FIXED)
    assert lm.counts[0] == {(0,): 2, (1,): 1, (2,): 1}
    expect = {(0, ()): Fraction(5, 12), (1, ()): Fraction(7, 24), (1, (0,)): Fraction(31, 48),
              (0, (0,)): Fraction(5, 24), (0, (1,)): Fraction(11, 24), (2, (1,)): Fraction(19, 48),
              (1, (1,)): Fraction(7, 48),
              # context 2 holds only c(2 0) = 1, gamma = 0.5: P(0|2) = 1/2 + 5/24, P(2|2) = 7/48
              (0, (2,)): Fraction(17, 24), (2, (2,)): Fraction(7, 48)}
    for (w, h), p in expect.items():
        assert lm.prob(w, h) == pytest.approx(float(p), abs=1e-15)
    assert lm.prob(1, (7,)) == pytest.approx(7 / 24, abs=1e-15)  # unseen context
    assert lm.nll([0, 1, 2]).tolist() == pytest.approx([-math.log(31 / 48), -math.log(19 / 48)], abs=1e-12)


def test_modified_discounts_follow_chen_goodman():
    # n1..n4 = 10, 5, 3, 2: Y = 10 / 20, D1 = 1 - 2 Y 5/10, D2 = 2 - 3 Y 3/5, D3 = 3 - 4 Y 2/3
    d = modified_discounts(Counter({1: 10, 2: 5, 3: 3, 4: 2, 9: 1}))
    assert d == pytest.approx((0.5, 1.1, 3 - 4 / 3))
    assert modified_discounts(Counter({1: 4, 2: 1})) == (0.5, 1.0, 1.5)  # n3 = n4 = 0: the fixed discounts


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_conditional_sums_to_one_over_the_vocabulary(order):
    rng = np.random.default_rng(order)
    V = 7
    stream = [int(v) for v in np.cumsum(rng.integers(0, 3, 400)) % V]  # structured: steps of 0, 1 or 2
    lm = KneserNey.fit(stream, order=order, vocab_size=V)
    assert all(0 <= d <= r for ds in lm.discounts for r, d in zip((1, 2, 3), ds, strict=False))
    histories = {tuple(stream[i:i + order - 1]) for i in range(50)} | {(), (6,) * (order - 1), (3, 9)[:order - 1]}
    for h in histories:
        total = math.fsum(lm.prob(w, h) for w in range(V))
        assert total == pytest.approx(1.0, abs=1e-12)
        assert all(lm.prob(w, h) > 0 for w in range(V))


def test_continuation_counts_count_distinct_predecessors():
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 5, 300).tolist()
    lm = KneserNey.fit(stream, order=3, vocab_size=5)
    trigrams = {tuple(stream[i:i + 3]) for i in range(len(stream) - 2)}
    for gram, c in lm.counts[1].items():  # c_2(h w) = #{u : u h w occurs}
        assert c == sum(1 for t in trigrams if t[1:] == gram)
    assert lm.counts[2] == dict(Counter(tuple(stream[i:i + 3]) for i in range(len(stream) - 2)))


def test_save_load_and_the_gen_ppl_protocol(tmp_path):
    tok = load_tokenizer("gpt2")
    text = "the cat sat on the mat. the dog sat on the cat. " * 20
    ids = tok(text)["input_ids"]
    lm = KneserNey.fit(ids, order=3, vocab_size=len(tok))
    lm.save(tmp_path)
    again = KneserNey.load(tmp_path, len(tok))
    assert again.counts == lm.counts and again.discounts == lm.discounts
    judge = NgramJudge("toy", again, tok)
    texts = ["the cat sat on the dog.", "mat the on sat"]
    res = gen_ppl(texts, judge)
    nll, count = 0.0, 0
    for t in texts:  # by hand: every token after the first, its history inside the text
        seq = tok(t)["input_ids"]
        for j in range(1, len(seq)):
            nll, count = nll - math.log(lm.prob(seq[j], seq[max(0, j - 2):j])), count + 1
    assert res.gen_ppl == pytest.approx(math.exp(nll / count), rel=1e-12) and res.judge == "toy"
    padded = judge.token_nll(torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert padded.dtype == torch.float64 and padded[1, 1] == 0
    with pytest.raises(ValueError, match="^judge: 'toy' is not a neural LM"):
        judge_features(texts, judge)


@pytest.fixture(scope="module")
def heldout_judge(token_cache):
    """Trigram judge on the heldout split with the vendored GPT-2 tokenizer (no tokenizer training)."""
    tok = load_tokenizer("gpt2")
    return NgramJudge("kn3", KneserNey.fit(_stream("wiki", "heldout", tok), order=3, vocab_size=len(tok)), tok)


def test_real_held_out_text_scores_at_least_twice_better_than_shuffled(heldout_judge):
    """On 64-token pieces of the validation split (text the judge never counted)."""
    tok = heldout_judge.tokenizer
    val = _stream("wiki", "validation", tok)[:64 * 150]
    pieces = [tok.decode(val[i:i + 64]) for i in range(0, len(val), 64)]
    sep = separation(heldout_judge, pieces, seed=0)
    assert sep["ratio"] >= 2.0, sep
    assert sep["real_ppl"] < 2000


def _tiny_corpus(tmp_path):
    """A folder of 20 short text documents."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"{i:02d}.txt").write_text(f"document {i} says the cat sat on the mat and the dog ran. " * 3)
    return corpus


def test_load_judge_reads_an_ngram_folder(tmp_path, token_cache):
    from scale.evaluation.ngram_judge import train_ngram_judge
    corpus = _tiny_corpus(tmp_path)
    summary = train_ngram_judge(tmp_path / "judge", "gpt2", data=str(corpus), order=2, block=8)
    assert summary["separation"]["ratio"] > 1 and math.isfinite(summary["val_ppl"])
    judge = load_judge(str(tmp_path / "judge"))
    assert isinstance(judge, NgramJudge) and judge.lm.order == 2 and judge.name == str(tmp_path / "judge")


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    from scale.cli import main
    (tmp_path / "file").write_text("x")
    judge = ["train-ngram-judge", "--tokenizer", "gpt2"]
    cases = ((judge + ["--out", str(tmp_path / "file")], "--out: expected a folder"),
             (judge + ["--order", "0", "--out", str(tmp_path / "j")], "--order: expected"),
             (["report", "--eval", str(tmp_path / "none.json"), "--judge", "j", "--out", "r.json"], "--eval: expected"))
    for argv, word in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(word) and "\n" not in err


def test_a_bert_judge_ends_documents_as_the_models_blocks_do_and_counts(tmp_path, token_cache):
    """BERT has no eos: documents end with [CLS] (101), the id MDLM's wrapped blocks put after them."""
    from scale.data.tokenizers import load_tokenizer
    from scale.evaluation.ngram_judge import document_end, train_ngram_judge
    assert document_end(load_tokenizer("bert-base-uncased")) == 101  # wrap_specials: MDLM's BERT blocks
    corpus = _tiny_corpus(tmp_path)
    summary = train_ngram_judge(tmp_path / "judge", "bert-base-uncased", data=str(corpus), order=2, block=8)
    assert math.isfinite(summary["val_ppl"])
