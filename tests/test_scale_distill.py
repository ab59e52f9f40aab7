"""The distillation chain on the default corpus with the tiny DiT: MDLM -> IM-SDTT (2 rounds) -> coupling
-> IM-ReDi -> evaluate (`python -m scale pipeline`), a resumed distillation that equals the uninterrupted
one (the teacher of the current round is restored), evaluation numbers recomputed by hand, and bad input."""
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scale.checkpoints.checkpoint import find_checkpoint, load_model, read_state
from scale.cli import main
from scale.data.blocks import load_blocks
from scale.data.tokenizers import load_tokenizer
from scale.evaluation.evaluate import prompts
from scale.evaluation.judge import load_judge
from scale.evaluation.metrics import decode_samples
from scale.evaluation.samples import draw
from scale.model.dit import DiT, DiTConfig
from scale.training.coupling import Coupling
from scale.training.distill import adapt_weights


@pytest.fixture(scope="module")
def chain(token_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("chain") / "run"
    assert main(["pipeline", "--preset", "tiny-cpu", "--out", str(out)]) == 0
    return out


def test_the_chain_runs_every_stage(chain):
    done = json.loads((chain / "pipeline.json").read_text())["done"]
    assert done == ["mdlm", "imsdtt", "coupling", "imredi", "judge", "evaluate"]
    rounds = sorted(p.name for p in (chain / "imsdtt" / "rounds").iterdir())
    assert rounds == ["round-1-8-steps", "round-2-4-steps"]  # 16 -> 8 -> 4 steps
    for name in ("mdlm", "imsdtt", "imredi"):
        assert read_state(chain / name).step == (12 if name == "mdlm" else 6)
    sdtt = read_state(chain / "imsdtt").config
    assert sdtt.model.labels == "rand" and sdtt.distill.method == "imdm-sdtt"
    # The MDLM became an IMDM with an inert eps path: a zero last layer gives the MDLM's logits.
    mdlm, _ = load_model(chain / "mdlm")
    assert mdlm.process.labels is None
    assert len(Coupling(chain / "coupling")) == 32
    # The IM-ReDi student trained its eps path on (eps(seed), x_t) -> x_0 pairs.
    redi, _ = load_model(chain / "imredi", "model")
    assert redi.vocab_embed.eps_mlp_norm() > 0


def test_evaluation_json_and_plot(chain):
    result = json.loads((chain / "eval.json").read_text())
    assert result["eos_rule"] == "official"  # the reference code's count; --eos-rule first-eos switches
    assert (chain / "eval.png").stat().st_size > 1000
    assert [(Path(e["checkpoint"]).name, e["steps"]) for e in result["entries"]] == \
        [(c, k) for c in ("mdlm", "imsdtt", "imredi") for k in (1, 2, 4, 8)]
    for e in result["entries"]:
        assert e["judge"] == str(chain / "judge") and e["mauve"] is None
        assert 1 <= e["nfe"] <= e["steps"] and (e["steps"] > 1 or e["nfe"] == 1)
        assert e["gen_ppl"] > 1 and 0 < e["entropy"] <= math.log(32) and e["seconds_per_sample"] > 0
    assert all(math.isfinite(c["val_ppl"]) and c["val_ppl"] > 1 for c in result["checkpoints"])


def test_gen_ppl_and_entropy_of_the_evaluation_by_hand(chain):
    """Redraw the IM-ReDi 2-step samples (same seeds), then score them with an explicit loop."""
    result = json.loads((chain / "eval.json").read_text())
    entry = next(e for e in result["entries"] if e["label"] == "imredi" and e["steps"] == 2)
    model, state = load_model(chain / "imredi")
    tokens, nfe, _ = draw(model, 8, 2, seed=0, length=32, batch_size=8, device=torch.device("cpu"))
    assert nfe == entry["nfe"]
    entropies = []
    for row in tokens.tolist():
        counts = Counter(row)
        entropies.append(-sum(c / 32 * math.log(c / 32) for c in counts.values()))
    assert entry["entropy"] == pytest.approx(sum(entropies) / 8, rel=1e-12)
    judge = load_judge(str(chain / "judge"), device="cpu")
    texts = decode_samples(tokens, load_tokenizer(state.tokenizer))
    assert texts[0] == entry["sample"]
    nll, count = 0.0, 0
    for text in texts:
        ids = judge.tokenizer(text)["input_ids"][:32]  # truncated to the model's length
        assert len(ids) <= judge.context
        with torch.no_grad():
            logp = torch.log_softmax(judge.model(torch.tensor([ids])).logits[0].double(), -1)
        seen_eos = False
        for j in range(1, len(ids)):
            if ids[j] == judge.eos_id and seen_eos:
                continue
            seen_eos |= ids[j] == judge.eos_id
            nll, count = nll - logp[j - 1, ids[j]].item(), count + 1
    assert entry["gen_ppl"] == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_conditional_samples_keep_their_prefix(chain):
    model, state = load_model(chain / "imredi")
    val = load_blocks("wiki", "validation", tokenizer="bert-base-uncased", length=32, progress=False)
    truth, given, given_mask = prompts(val, 3, 2, 5, model.config.mask_id, seed=0)
    assert truth.shape == (3, 32) and given.shape == (6, 32) and int(given_mask.sum()) == 6 * 5
    tokens, nfe, _ = draw(model, 6, 4, seed=0, length=32, batch_size=4, device=torch.device("cpu"), given=given,
                         given_mask=given_mask, tag="c")
    assert torch.equal(tokens[:, :5], truth.repeat_interleave(2, 0)[:, :5])
    assert not (tokens == model.config.mask_id).any() and 1 <= nfe <= 4


def test_mauve_entries_recomputed_from_the_samples(chain, tmp_path, monkeypatch):
    """`evaluate --mauve`: the human side is featurised once per checkpoint (not once per step count), and
    each MAUVE equals mauve_score of the decoded texts computed from scratch."""
    pytest.importorskip("mauve")
    import scale.evaluation.evaluate as evaluation
    import scale.evaluation.metrics as metrics
    calls = []
    featurise = metrics.judge_features

    def counted(texts, *a, **kw):
        calls.append(len(texts))
        return featurise(texts, *a, **kw)
    for module in (metrics, evaluation):  # the human side (evaluation) and mauve_score (metrics)
        monkeypatch.setattr(module, "judge_features", counted)
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(chain / "imredi"), "--steps", "1,2", "--n", "4", "--judge",
                 str(chain / "judge"), "--mauve", "--prompts", "8", "--continuations", "2", "--prefix-len", "8",
                 "--val-batches", "1", "--out", str(out), "--no-plot"]) == 0
    assert calls == [8, 16, 16]  # human texts once, then the 16 continuations of each step count
    model, _ = load_model(chain / "imredi")
    tok = load_tokenizer("bert-base-uncased")
    val = load_blocks("wiki", "validation", tokenizer="bert-base-uncased", length=32, progress=False)
    truth, given, given_mask = prompts(val, 8, 2, 8, model.config.mask_id, seed=0)
    judge = load_judge(str(chain / "judge"))
    for entry in json.loads(out.read_text())["entries"]:
        tokens, _, _ = draw(model, 16, entry["steps"], seed=0, length=32, batch_size=32, device=torch.device("cpu"),
                            given=given, given_mask=given_mask, tag="cond")
        ref = metrics.mauve_score(decode_samples(truth, tok), decode_samples(tokens, tok), judge, max_length=32,
                                  seeds=(42, 43, 44, 45, 46))
        assert 0 <= entry["mauve"] <= 1 and entry["mauve"] == pytest.approx(ref["mauve"], abs=1e-9)


def test_resumed_distillation_restores_the_round_teacher(chain, tmp_path):
    args = ["distill", "--method", "imdm-sdtt", "--teacher", str(chain / "mdlm"), "--config", "tiny-cpu-distill",
            "--out", str(tmp_path / "run")]
    assert main([*args, "--max-steps", "4"]) == 0  # one step into round 2 (grow_every = 3)
    assert main([*args, "--resume"]) == 0
    for name in ("model.safetensors", "ema.safetensors"):
        mine = load_file(find_checkpoint(tmp_path / "run") / name)
        ref = load_file(find_checkpoint(chain / "imsdtt") / name)
        assert all(torch.equal(mine[k], ref[k]) for k in ref)


@pytest.mark.parametrize("method,source,labels", [("sdtt", "--teacher", "none"), ("redi", "--coupling", "none"),
                                                  ("imdm-eps-coupling", "--teacher", "rand")])
def test_other_methods_train(chain, tmp_path, method, source, labels):
    src = chain / ("coupling" if source == "--coupling" else "mdlm")
    # The coupling's teacher (the IM-SDTT student) reads eps, so an MDM student starts from the MDLM.
    init = ["--init", str(chain / "mdlm")] if method == "redi" else []
    assert main(["distill", "--method", method, source, str(src), *init, "--config", "tiny-cpu-distill",
                 "--max-steps", "1", "--out", str(tmp_path / "run")]) == 0
    state = read_state(tmp_path / "run")
    assert state.step == 1 and state.config.model.labels == labels
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in line]
    assert len(losses) == 1 and all(math.isfinite(v) and v > -1e-4 for v in losses)


def test_eps_path_adaptation():
    cfg = dict(vocab_size=40, mask_id=39)
    imdm = DiT(DiTConfig(**cfg, labels="rand", label_dim=6))
    mdm = DiT(DiTConfig(**cfg, labels="none"))
    wide = DiT(DiTConfig(**cfg, labels="rand", label_dim=12))
    inert = imdm.state_dict()
    assert set(adapt_weights(inert, mdm, "src")) == set(mdm.state_dict())
    assert adapt_weights(inert, wide, "src")["vocab_embed.imdm_mlp.0.weight"].shape == (128, 12)
    assert adapt_weights(mdm.state_dict(), imdm, "src")["vocab_embed.imdm_mlp.2.weight"].abs().max() == 0
    trained = {**inert, "vocab_embed.imdm_mlp.2.weight": torch.ones_like(inert["vocab_embed.imdm_mlp.2.weight"])}
    with pytest.raises(ValueError, match="^src: its trained eps path"):
        adapt_weights(trained, mdm, "src")


@pytest.mark.parametrize("argv,word", [
    (["distill", "--method", "nope", "--out", "x"],
     "python -m scale distill: error: argument --method: invalid choice"),
    (["distill", "--method", "imdm-redi", "--out", "x"], "--coupling: expected a coupling folder"),
    (["distill", "--method", "imdm-sdtt", "--out", "x"], "--teacher: expected a checkpoint folder"),
    (["pipeline", "--preset", "nope", "--out", "x"], "--preset: expected one of"),
    (["pipeline", "--preset", "owt", "--out", "x"], "--mdlm: preset 'owt' starts from an MDLM"),
    (["evaluate", "--ckpt", "x", "--steps", "0", "--out", "x.json"], "--steps: expected"),
])
def test_bad_input_exits_2_with_one_line(argv, word, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(word) and "\n" not in err


def test_bad_round_plan_names_the_config_key(chain, tmp_path, capsys):
    assert main(["distill", "--method", "sdtt", "--teacher", str(chain / "mdlm"), "--config", "tiny-cpu-distill",
                 "--set", "distill.target_steps=3", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith("distill.target_steps: expected")


def test_the_student_keeps_its_checkpoints_schedule(chain, tmp_path, capsys):
    assert main(["distill", "--method", "sdtt", "--teacher", str(chain / "mdlm"), "--config", "tiny-cpu-distill",
                 "--set", "model.schedule=linear", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith("model.schedule: expected the checkpoint's 'loglinear'")
