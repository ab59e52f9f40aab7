"""The wiki-cpu comparison in seconds (`python -m scale pipeline --preset wiki-cpu-tiny`, the same stages as
wiki-cpu): BPE -> MDLM -> SDTT, IM-SDTT -> couplings -> ReDi, IM-ReDi, IM-SDTT -> IM-ReDi -> Kneser-Ney
judge -> evaluate -> report; the stage registry's plan; a deterministic, cached tokenizer; the report's
intervals and an entry's gen PPL recomputed by hand under the n-gram judge."""
import json
import math

import numpy as np
import pytest
import torch

from scale import pipeline
from scale.checkpoints.checkpoint import load_model, read_state
from scale.cli import main
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.judge import load_judge
from scale.evaluation.metrics import decode_samples
from scale.evaluation.ngram_judge import NgramJudge
from scale.evaluation.report import bootstrap
from scale.evaluation.samples import draw

CHECKPOINTS = ["mdlm", "sdtt", "imsdtt", "redi", "imredi-mdlm", "imredi"]


@pytest.fixture(scope="module")
def wiki(token_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("wiki") / "run"
    assert main(["pipeline", "--preset", "wiki-cpu-tiny", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_every_stage_runs_and_records_its_wall_time(wiki):
    record = json.loads((wiki / "pipeline.json").read_text())
    assert record["done"] == list(pipeline.PRESETS["wiki-cpu"].stages)
    assert set(record["seconds"]) == set(record["done"]) and all(s > 0 for s in record["seconds"].values())
    for name in CHECKPOINTS:
        state = read_state(wiki / name)  # the run folder's latest checkpoint
        assert state.config.data.tokenizer == str((wiki / "tokenizer").resolve())
        labels = state.config.model.labels
        assert labels == ("rand" if name.startswith("im") else "none"), name
    coupling = json.loads((wiki / "coupling-mdlm" / "meta.json").read_text())
    assert coupling["teacher"] == str((wiki / "mdlm").resolve())
    assert json.loads((wiki / "coupling" / "meta.json").read_text())["teacher"] == str((wiki / "imsdtt").resolve())


@pytest.mark.slow
def test_evaluation_names_the_ngram_judge_and_the_report_brackets_it(wiki):
    result = json.loads((wiki / "eval.json").read_text())
    assert [(e["label"], e["steps"]) for e in result["entries"]] == [(c, k) for c in CHECKPOINTS for k in (1, 2, 8)]
    rep = json.loads((wiki / "report.json").read_text())
    assert rep["judge_info"]["kind"] == "kneser-ney" and rep["judge_info"]["split"] == "heldout"
    for e, row in zip(result["entries"], rep["rows"], strict=False):
        assert e["judge"] == str(wiki / "judge") and len(e["per_sample_nll"]) == 8
        assert row["gen_ppl"][0] == pytest.approx(e["gen_ppl"], rel=1e-12)
        assert row["entropy"][0] == pytest.approx(e["entropy"], rel=1e-12)
        assert row["gen_ppl"][1] <= row["gen_ppl"][0] <= row["gen_ppl"][2]
        assert row["entropy"][1] <= row["entropy"][0] <= row["entropy"][2]
    real, shuffled = rep["references"]
    assert real["entropy"][0] == pytest.approx(shuffled["entropy"][0])  # a permutation keeps the counts
    assert shuffled["gen_ppl"][0] > real["gen_ppl"][0]
    for suffix in (".png", ".md"):
        assert (wiki / f"report{suffix}").stat().st_size > 500


@pytest.mark.slow
def test_gen_ppl_of_an_entry_by_hand_under_the_ngram_judge(wiki):
    result = json.loads((wiki / "eval.json").read_text())
    entry = next(e for e in result["entries"] if e["label"] == "imredi" and e["steps"] == 2)
    model, state = load_model(wiki / "imredi")
    tokens, _, _ = draw(model, 8, 2, seed=0, length=32, batch_size=8, device=torch.device("cpu"))
    judge = load_judge(str(wiki / "judge"))
    assert isinstance(judge, NgramJudge)
    texts = decode_samples(tokens, load_tokenizer(state.tokenizer))
    assert texts[0] == entry["sample"]
    nll, count = 0.0, 0
    for text in texts:
        ids = judge.tokenizer(text)["input_ids"][:32]
        seen_eos = False
        for j in range(1, len(ids)):  # the official EOS rule: every non-EOS token and the first EOS
            if ids[j] == judge.eos_id and seen_eos:
                continue
            seen_eos |= ids[j] == judge.eos_id
            nll, count = nll - math.log(judge.lm.prob(ids[j], ids[max(0, j - 2):j])), count + 1
    assert entry["gen_ppl"] == pytest.approx(math.exp(nll / count), rel=1e-10)


def test_bootstrap_of_equal_samples_has_no_width_and_a_wide_spread_a_wide_one():
    flat = bootstrap([2.0] * 10, [4] * 10, [1.5] * 10, 100, 0)
    assert flat["gen_ppl"] == pytest.approx([math.exp(0.5)] * 3) and flat["entropy"] == pytest.approx([1.5] * 3)
    rng = np.random.default_rng(0)
    nll = rng.exponential(3.0, 200)
    wide = bootstrap(nll, [1] * 200, nll, 2000, 0)
    se = nll.std() / math.sqrt(200)  # the normal approximation of the mean's interval
    assert wide["entropy"][2] - wide["entropy"][1] == pytest.approx(2 * 1.96 * se, rel=0.15)


def _args(**kw):
    return {"preset_name": "wiki-cpu", "out": "runs/w", "mdlm": None, "judge": None, "extra": [], **kw}


def test_the_plan_reads_each_stage_from_the_one_it_needs(monkeypatch):
    steps = dict(pipeline.plan(**_args()))
    assert steps["redi"][:5] == ["distill", "--method", "redi", "--coupling", "runs/w/coupling-mdlm"]
    assert steps["imredi"][:5] == ["distill", "--method", "imdm-redi", "--coupling", "runs/w/coupling"]
    assert steps["coupling"][:3] == ["coupling", "--teacher", "runs/w/imsdtt"]
    ckpts = steps["evaluate"][steps["evaluate"].index("--ckpt") + 1:steps["evaluate"].index("--steps")]
    assert ckpts == [f"runs/w/{c}" for c in CHECKPOINTS]
    assert steps["evaluate"][steps["evaluate"].index("--judge") + 1] == "runs/w/judge"
    # --judge replaces the judge stage, --mdlm the mdlm stage (and is evaluated first)
    other = dict(pipeline.plan(**_args(judge="gpt2-large", mdlm="ckpt")))
    assert "ngram-judge" not in other and "mdlm" not in other
    assert other["sdtt"][4] == "ckpt" and other["report"][-3:] == ["gpt2-large", "--out", "runs/w/report.json"]
    monkeypatch.setitem(pipeline.PRESETS, "broken", pipeline.Preset({"redi": []}))
    with pytest.raises(ValueError, match="^--preset: stage 'redi' of 'broken' reads stage 'coupling-mdlm'"):
        pipeline.plan(**_args(preset_name="broken"))


def test_tokenizer_training_is_deterministic_and_cached(tmp_path, monkeypatch):
    from scale.data import bpe, corpora
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"{i:02d}.txt").write_text(f"Article {i}: the river flows past the old mill, and {i * 7} birds sing. "
                                             * 4)
    monkeypatch.setenv("IMDM_CACHE", str(tmp_path / "cache-a"))
    first = bpe.train_bpe(tmp_path / "a", data=str(corpus), vocab_size=300)
    monkeypatch.setenv("IMDM_CACHE", str(tmp_path / "cache-b"))  # a fresh cache trains again
    second = bpe.train_bpe(tmp_path / "b", data=str(corpus), vocab_size=300)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    tok = load_tokenizer(str(first))
    assert len(tok) == 300 and tok.eos_token == bpe.EOS
    text = "the river flows past 7 birds.<|endoftext|>Article"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level: decoding gives the text back
    monkeypatch.setattr(corpora.Corpus, "documents", lambda self, start=0: pytest.fail("read the documents"))
    bpe.train_bpe(tmp_path / "c", data=str(corpus), vocab_size=300)  # a cache hit reads none
    assert (tmp_path / "c" / "tokenizer.json").read_bytes() == (first / "tokenizer.json").read_bytes()
    assert main(["train-tokenizer", "--out", str(tmp_path / "d"), "--data", str(corpus), "--vocab-size", "12"]) == 2
