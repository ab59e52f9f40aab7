"""import-mdlm on checkpoints built here with the official key layout: a Hugging Face folder
(config.json + model.safetensors) and a Lightning .ckpt (state_dict, pickled hyper-parameters, EMA)."""
import json

import pytest
import torch
from safetensors.torch import save_file

from dit_reference import official_state_dict, reference_logits
from scale.checkpoint import load_model
from scale.cli import main
from scale.model import SIZES

V, MASK = 40, 39
DIMS = SIZES["tiny-cpu"]


class Trap:
    """Stands for Lightning's pickled hyper-parameters; unpickling it must never run its code."""

    def __setstate__(self, state):
        raise AssertionError("the importer ran code from the checkpoint")


def _hf_folder(path, sd):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "model_type": "mdlm", "vocab_size": V, "model_length": 16, "hidden_dim": DIMS.hidden,
        "cond_dim": DIMS.cond, "n_blocks": DIMS.blocks, "n_heads": DIMS.heads, "dropout": 0.1,
        "time_conditioning": False}))
    save_file(sd, path / "model.safetensors")
    return path


def _logits(folder, x):
    model, _ = load_model(folder)
    t = torch.full((x.shape[0],), 0.7)
    eps = None if model.noise is None else model.noise.draw(*x.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(x, eps, t).double()


def _x():
    x = torch.randint(0, V - 1, (2, 16), generator=torch.Generator().manual_seed(0))
    x[:, ::3] = MASK
    return x


def test_hf_folder_imports_to_an_imdm_with_the_mdlm_logits(tmp_path, capsys):
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=3)
    src = _hf_folder(tmp_path / "hf", sd)
    for noise in ("none", "rand"):
        assert main(["import-mdlm", "--from", str(src), "--out", str(tmp_path / noise), "--noise", noise,
                     "--tokenizer", "gpt2", "--mask-id", str(MASK)]) == 0
    x = _x()
    want = reference_logits(sd, x, torch.zeros(2), DIMS.heads)
    torch.testing.assert_close(_logits(tmp_path / "none", x), want, atol=2e-4, rtol=2e-4)
    assert torch.equal(_logits(tmp_path / "rand", x), _logits(tmp_path / "none", x))
    state = json.loads((tmp_path / "rand" / "state.json").read_text())
    assert state["config"]["model"]["size"] == "tiny-cpu" and state["config"]["data"]["length"] == 16


def test_lightning_ckpt_with_pickled_objects_and_ema(tmp_path):
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=4)
    ema = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=5)
    shadow = [v for k, v in ema.items() if "inv_freq" not in k]
    torch.save({"state_dict": {**sd, "noise.sigma_max": torch.tensor(1.0)},
                "hyper_parameters": {"config": Trap()}, "ema": {"shadow_params": shadow, "num_updates": 7}},
               tmp_path / "last.ckpt")
    x = _x()
    for weights, source in (("raw", sd), ("ema", ema)):
        out = tmp_path / weights
        assert main(["import-mdlm", "--from", str(tmp_path / "last.ckpt"), "--out", str(out),
                     "--weights", weights, "--tokenizer", "gpt2", "--mask-id", str(MASK)]) == 0
        want = reference_logits(source, x, torch.zeros(2), DIMS.heads)
        torch.testing.assert_close(_logits(out, x), want, atol=2e-4, rtol=2e-4)


def test_mismatched_keys_and_shapes_are_listed(tmp_path, capsys):
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=6)
    sd["backbone.blocks.1.attn_out.weight"] = torch.zeros(DIMS.hidden, DIMS.hidden + 1)
    sd["backbone.blocks.0.extra.weight"] = torch.zeros(3)
    del sd["backbone.blocks.0.norm2.weight"]
    src = _hf_folder(tmp_path / "hf", sd)
    assert main(["import-mdlm", "--from", str(src), "--out", str(tmp_path / "o"), "--tokenizer", "gpt2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("--from:")
    for needle in ("blocks.0.norm2.weight", "blocks.0.extra.weight", "blocks.1.attn_out.weight (32, 33)"):
        assert needle in err


@pytest.mark.parametrize("source", ["no/such/dir.ckpt", "not-a-hub-id"])
def test_missing_source_is_a_clear_error(tmp_path, capsys, source):
    assert main(["import-mdlm", "--from", source, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("--from:")
