"""What a checkpoint says about itself: state.json is read into a typed CheckpointState, every entry
checked, a bad one named with its file; the [data] section it records is opened one way
(scale.data.blocks.open_blocks) by training, distillation, the coupling, the evaluation and the report,
so each passes the section's hub configuration and revision to its own corpus."""
import base64
import json
import re

import pytest
import torch

from scale.checkpoints.checkpoint import read_state, save_checkpoint
from scale.checkpoints.config import load_config
from scale.checkpoints.state import CheckpointState
from scale.model.dit import DiT

CONFIG = ["model.vocab_size=40", "model.mask_id=39", "data.dataset=someone/corpus", "data.tokenizer=gpt2",
          "data.hf_config=en", "data.revision=refs/convert/parquet", "data.length=16"]


def _checkpoint(folder, **entries):
    config = load_config("tiny-cpu", CONFIG)
    torch.manual_seed(0)
    weights = DiT(config.model).state_dict()
    return save_checkpoint(folder, weights, weights, None, {
        "step": 4, "config": config.to_dict(), "tokenizer": "gpt2", **entries})


def test_state_json_reads_back_typed(tmp_path):
    position = {"epoch": 1, "offset": 8, "seed": 0, "global_batch": 8, "num_blocks": 40}
    rng = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    folder = _checkpoint(tmp_path / "ckpt", world_size=2, ema_updates=4, rng=rng, data=position)
    state = read_state(folder)
    assert isinstance(state, CheckpointState)
    assert (state.step, state.tokenizer, state.world_size, state.ema_updates) == (4, "gpt2", 2, 4)
    assert state.config == load_config("tiny-cpu", CONFIG) and state.config.data.revision == "refs/convert/parquet"
    assert state.position == position and state.imported_from is None
    raw = json.loads((folder / "state.json").read_text())
    assert {"format": raw.pop("format"), **state.to_dict()} == {"format": "imdm-lab-dit/1", **raw}


@pytest.mark.parametrize("change,message", [
    ({"step": -1}, "step: expected an integer >= 0, got -1"),
    ({"step": "4"}, "step: expected an integer >= 0, got '4'"),
    ({"tokenizer": None}, "tokenizer: expected a tokenizer name or folder, got None"),
    ({"tokenizer": ...}, "tokenizer: expected a tokenizer name or folder, but it is missing"),
    ({"data": {"epoch": 0, "offset": 3}}, "data: expected a data position with the integers epoch, offset, seed"),
    ({"rng": {"torch": 5}}, "rng: expected generator states"),
    ({"rng": {"torch": "AAAA"}},  # cut short: torch.set_rng_state would refuse it on resume
     f"rng: expected generator states {{'torch': base64 of {torch.get_rng_state().numel()} bytes"),
    ({"rng": {"torch": "not base64!"}}, "rng: expected generator states"),
    ({"rng": {"torch": base64.b64encode(bytes(torch.get_rng_state().numel())).decode(), "cuda": [""]}},
     "rng: expected generator states"),
    ({"notes": "x"}, "unknown entries ['notes']"),
    ({"config": [1]}, "config: expected the run's config sections, got [1]"),
    ({("data", "length"): 1}, "config: data.length: expected an integer >= 2, got 1"),
    ({("model", "blocks"): "two"}, "config: model.blocks: expected an integer, got 'two'"),
])
def test_a_bad_entry_is_refused_naming_the_file_and_the_entry(tmp_path, change, message):
    folder = _checkpoint(tmp_path / "ckpt")
    path = folder / "state.json"
    raw = json.loads(path.read_text())
    for key, value in change.items():
        if isinstance(key, tuple):
            raw["config"][key[0]][key[1]] = value
        elif value is ...:
            del raw[key]
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="^" + re.escape(f"ckpt: {path}: {message}")):
        read_state(folder)


def test_resuming_needs_the_training_state(tmp_path):
    from scale.training.trainer import elbo_trainer

    config = load_config("tiny-cpu", CONFIG)
    blocks = torch.randint(0, 39, (8, 16), generator=torch.Generator().manual_seed(0))
    trainer = elbo_trainer(config, tmp_path / "run", blocks, blocks)
    weights = trainer.model.state_dict()
    # complete files, but an imported model's state: no RNG states, EMA count or data position
    folder = save_checkpoint(tmp_path / "run", weights, weights, trainer.optimizer.state_dict(),
                             {"step": 4, "config": config.to_dict(), "tokenizer": "gpt2"})
    with pytest.raises(ValueError, match="^" + re.escape(f"ckpt: {folder / 'state.json'} holds no training state")):
        trainer.resume()


class Opened(Exception):
    pass


@pytest.fixture
def opened(monkeypatch):
    """The (dataset, split, keywords) of every load_blocks call; the first call stops the caller."""
    import scale.data.blocks

    calls = []

    def load_blocks(dataset, split, **kwargs):
        calls.append((dataset, split, kwargs))
        raise Opened
    monkeypatch.setattr(scale.data.blocks, "load_blocks", load_blocks)
    return calls


OWN = {"tokenizer": "gpt2", "length": 16, "hf_config": "en", "text_column": "text",
       "revision": "refs/convert/parquet"}


def test_the_report_opens_the_checkpoints_data_with_its_revision(tmp_path, opened):
    from scale.evaluation.report import references

    with pytest.raises(Opened):
        references(str(_checkpoint(tmp_path / "ckpt")), judge=None, n=4, n_boot=10, seed=0)
    assert opened == [("someone/corpus", "validation", {**OWN, "progress": False})]


def test_the_coupling_the_evaluation_and_training_open_it_the_same_way(tmp_path, opened):
    from scale.data.blocks import open_blocks, open_data
    from scale.evaluation.evaluate import EvalSettings, zero_shot
    from scale.training.coupling import CouplingSettings, generate

    folder = _checkpoint(tmp_path / "ckpt")
    with pytest.raises(Opened):
        generate(folder, tmp_path / "coupling", CouplingSettings(n=4, steps=2), progress=False)
    assert opened.pop() == ("someone/corpus", "train", {**OWN, "progress": False})
    data = read_state(folder).config.data
    with pytest.raises(Opened):
        open_data(data, progress=True)
    assert opened.pop() == ("someone/corpus", "train", {**OWN, "progress": True})
    with pytest.raises(Opened):
        open_blocks(data, "validation", dataset="someone/corpus")
    assert opened.pop() == ("someone/corpus", "validation", {**OWN, "progress": False})
    # another corpus (a zero-shot perplexity) is cut the same way, without this one's hub settings
    with pytest.raises(Opened):
        zero_shot(None, data, ("lm1b",), EvalSettings(steps=(1,)), "cpu")
    assert opened.pop() == ("lm1b", "validation", {**OWN, "hf_config": None, "revision": "", "progress": False})
