"""Checkpoints as Hub repositories, never over the network: `push` with a mocked create_repo / upload_folder
that copies the uploaded folder, `--ckpt user/name` with a mocked snapshot_download that returns it."""
import base64
import json
import shutil

import huggingface_hub
import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from safetensors.torch import load_file

from scale.checkpoints.checkpoint import load_model, read_state, save_checkpoint
from scale.checkpoints.config import load_config
from scale.checkpoints.hub import export_hub_folder, resolve_checkpoint
from scale.cli import main
from scale.model.dit import DiT

pytestmark = pytest.mark.usefixtures("token_cache")  # $IMDM_CACHE in a temporary folder, hub offline


@pytest.fixture
def ckpt(tmp_path):
    """A tiny checkpoint whose EMA differs from its raw weights, with an optimizer state and RNG states."""
    config = load_config("tiny-cpu", ["model.vocab_size=30522", "model.mask_id=103"])
    torch.manual_seed(0)
    model = DiT(config.model)
    raw = model.state_dict()
    ema = {k: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) for k, v in raw.items()}
    folder = tmp_path / "run"
    save_checkpoint(folder, raw, ema, {"state": {}, "param_groups": []}, {
        "step": 7, "config": config.to_dict(), "tokenizer": "bert-base-uncased",
        "rng": {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()},
        "data": {"epoch": 0, "offset": 3, "seed": 0, "global_batch": 8, "num_blocks": 64}})
    return folder


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A stand-in Hub: upload_folder copies into repos/<user>--<name>/<commit>, snapshot_download returns it."""
    root = tmp_path / "repos"
    calls = {}

    def create_repo(repo_id, private=None, exist_ok=False, **kw):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(*, repo_id, folder_path, commit_message=None, **kw):
        calls["upload"] = (repo_id, commit_message)
        shutil.copytree(folder_path, root / repo_id.replace("/", "--") / "0123abcd")

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kw):
        calls["download"] = (repo_id, revision, allow_patterns)
        folder = root / repo_id.replace("/", "--") / "0123abcd"
        if not folder.is_dir():
            raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")
        return str(folder)

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for name, fn in (("create_repo", create_repo), ("upload_folder", upload_folder),
                     ("snapshot_download", snapshot_download)):
        monkeypatch.setattr(huggingface_hub, name, fn)
    return root, calls


def test_push_then_load_by_id_is_bit_for_bit(ckpt, hub, capsys):
    root, calls = hub
    assert main(["push", "--ckpt", str(ckpt), "--repo", "someone/tiny", "--private"]) == 0
    assert calls["create"] == ("someone/tiny", True, True) and calls["upload"][1] == "imdm-lab checkpoint, step 7"
    repo = root / "someone--tiny" / "0123abcd"
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "config.json", "ema.safetensors",
                                                      "model.safetensors"]
    config = json.loads((repo / "config.json").read_text())
    assert "rng" not in config and "data" not in config and config["step"] == 7
    assert "python -m scale sample --ckpt someone/tiny" in (repo / "README.md").read_text()

    local = resolve_checkpoint("someone/tiny")
    assert calls["download"][0] == "someone/tiny"
    for weights, name in (("model", "model.safetensors"), ("ema", "ema.safetensors")):
        got = load_model(local, weights)[0].state_dict()
        want = load_file(str(ckpt / name))
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    state, original = read_state(local), read_state(ckpt)
    assert (state.step, state.config, state.tokenizer) == (original.step, original.config, original.tokenizer)
    assert (state.rng, state.position) == (None, None) and original.position["offset"] == 3
    assert resolve_checkpoint("someone/tiny") == local  # rebuilt once per commit


def test_sample_accepts_a_hub_id(ckpt, hub, capsys):
    root, _ = hub
    export_hub_folder(ckpt, root / "someone--tiny" / "0123abcd", "someone/tiny")
    assert main(["sample", "--ckpt", "someone/tiny", "--steps", "1", "--n", "1", "--length", "8"]) == 0
    assert "=== 1 step (1 network calls per sample) ===" in capsys.readouterr().out


def test_import_without_ema_pushes_one_weights_file(tmp_path):
    config = load_config("tiny-cpu", ["model.vocab_size=40", "model.mask_id=39"])
    model = DiT(config.model)
    save_checkpoint(tmp_path / "imp", model.state_dict(), None, None, {
        "step": 0, "config": config.to_dict(), "tokenizer": "gpt2"})
    out = export_hub_folder(tmp_path / "imp", tmp_path / "hubdir")
    assert not (out / "ema.safetensors").exists() and (out / "model.safetensors").is_file()


def test_offline_or_unknown_ids_are_one_line_errors(ckpt, capsys, monkeypatch):
    # the real snapshot_download under HF_HUB_OFFLINE=1 (set by the session fixture): no network is touched
    assert main(["sample", "--ckpt", "nobody/no-such-model", "--steps", "1", "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ckpt: 'nobody/no-such-model' is no local folder")
    assert "HF_HUB_OFFLINE=1" in err
    assert main(["push", "--ckpt", str(ckpt), "--repo", "someone/tiny"]) == 2
    assert capsys.readouterr().err.startswith("--repo: HF_HUB_OFFLINE=1 forbids uploading")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert main(["push", "--ckpt", str(ckpt), "--repo", "not an id"]) == 2
    assert capsys.readouterr().err.startswith("--repo: expected a Hub repository id user/name")


def test_a_foreign_hub_folder_is_refused(tmp_path, hub):
    root, _ = hub
    folder = root / "other--model" / "0123abcd"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "mdlm"}))
    with pytest.raises(ValueError, match="ckpt: .* is not an imdm-lab-dit/1 Hub repository"):
        resolve_checkpoint("other/model")
