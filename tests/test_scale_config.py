"""The [model] section is scale.model.dit.DiTConfig itself: a TOML file, the run's state.json and the DiT agree,
and a key that moved to [model] is refused with its new name."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from scale.checkpoints.checkpoint import load_model, read_state
from scale.checkpoints.config import load_config
from scale.cli import main
from scale.model.dit import DiT, DiTConfig
from scale.training.trainer import elbo_trainer

TOML = """
[model]
size = "tiny-cpu"
hidden = 48
heads = 4
labels = "randn"
label_dim = 6
dropout = 0.05
schedule = "linear"
bf16 = false

[data]
length = 16

[train]
global_batch = 4
warmup = 0
checkpoint_every = 1

[eval]
every = 0
"""


def test_the_model_section_round_trips_through_a_checkpoint(tmp_path):
    (tmp_path / "run.toml").write_text(TOML)
    config = load_config(tmp_path / "run.toml")
    assert config.model.vocab_size is None and config.model.blocks is None  # the data's / the size's
    config.model = config.model.with_vocabulary(40, 39)
    blocks = torch.randint(0, 39, (8, 16), generator=torch.Generator().manual_seed(0))
    elbo_trainer(config, tmp_path / "run", blocks, blocks).run(1)

    state = read_state(tmp_path / "run")
    saved = state.config.model
    assert saved == config.model and saved.vocab_size == 40
    # the TOML's values, the size's for the rest
    assert (saved.dims.hidden, saved.dims.blocks, saved.dims.heads, saved.dims.dropout) == (48, 2, 4, 0.05)
    torch.manual_seed(3)
    from_toml = DiT(config.model)
    torch.manual_seed(3)
    from_state = DiT(saved)
    assert from_toml.process == from_state.process and from_state.process.schedule == "linear"
    mine, theirs = from_toml.state_dict(), from_state.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert from_state.vocab_embed.imdm_mlp[0].weight.shape[1] == 6 and not from_state.config.bf16
    assert load_model(tmp_path / "run")[0].config == config.model


def test_a_model_without_its_vocabulary_is_not_built():
    with pytest.raises(ValueError, match="^model.vocab_size / model.mask_id: expected the tokenizer's"):
        DiT(DiTConfig())
    with pytest.raises(ValueError, match="^model.mask_id: expected the data's 39, got 7"):
        DiTConfig(mask_id=7).with_vocabulary(40, 39)


@pytest.mark.parametrize("key,value,new", [("schedule", '"linear"', "model.schedule"), ("bf16", "false", "model.bf16")])
def test_a_key_moved_to_the_model_names_its_new_place(tmp_path, capsys, key, value, new):
    (tmp_path / "old.toml").write_text(f"[train]\n{key} = {value}\n")
    with pytest.raises(ValueError, match=f"^train.{key}: expected it as {new}"):
        load_config(tmp_path / "old.toml")
    assert main(["train", "--config", str(tmp_path / "old.toml"), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().startswith(f"train.{key}: expected it as {new}")


def test_unset_values_mean_the_size_and_the_data():
    fields = {f.name: f.default for f in dataclasses.fields(DiTConfig)}
    assert all(fields[k] is None for k in ("hidden", "blocks", "heads", "cond", "dropout", "label_dim",
                                           "vocab_size", "mask_id"))
    with pytest.raises(ValueError, match="^model.hidden: expected an integer >= 1"):
        load_config(None, ["model.hidden=0"])


def test_resume_checks_the_model_but_bf16_and_hands_on_the_checkpoints_vocabulary(tiny_checkpoint):
    from scale.training.runs import resume_step
    out = tiny_checkpoint(5)  # the BERT vocabulary: 30 522 classes, mask id 103
    model = load_config("tiny-cpu").model  # the vocabulary left to the data
    assert (model.vocab_size, model.mask_id) == (None, None)
    step, filled = resume_step(out, True, None, dataclasses.replace(model, bf16=not model.bf16))
    assert step == 5 and (filled.vocab_size, filled.mask_id) == (30522, 103)
    assert filled.with_vocabulary(30522, 103) == filled
    with pytest.raises(ValueError, match="^model.mask_id: expected the data's 0, got 103"):
        filled.with_vocabulary(30522, 0)  # data whose mask id is not the checkpoint's
    with pytest.raises(ValueError, match=r"^--resume: the checkpoint in .* is of another model \(model\.blocks: "):
        resume_step(out, True, None, dataclasses.replace(model, blocks=7))
