"""import-mdlm on checkpoints built here with the official key layouts: MDLM's Hugging Face folder
(config.json + model.safetensors) and Lightning .ckpt (state_dict, pickled hyper-parameters, EMA), IMDM's
eps paths (eps-MLP with D != hidden, finite table, learnable labels) and SDTT's Hub layout, at shapes
outside the named sizes; each import reproduces the float64 official forward of tests/dit_reference.py.
Hostile files of every torch format: their payload must never run."""
import collections
import io
import json
import os
import pickle
import pickletools

import pytest
import torch
from dit_reference import official_state_dict, reference_logits
from safetensors.torch import save_file

from scale.checkpoints.checkpoint import load_model
from scale.cli import main
from scale.data.tokenizers import load_tokenizer
from scale.model.dit import SIZES

V, MASK = 40, 39
DIMS = SIZES["tiny-cpu"]


class Trap:
    """Stands for Lightning's pickled hyper-parameters; unpickling it must never run its code. Pickled
    as NEWOBJ (its class) then BUILD (its attributes), which would call __setstate__."""

    def __init__(self):
        self.armed = True

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
    eps = model.process.draw_labels(*x.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(x, eps, t).double()


def _x():
    x = torch.randint(0, V - 1, (2, 16), generator=torch.Generator().manual_seed(0))
    x[:, ::3] = MASK
    return x


def test_hf_folder_imports_to_an_imdm_with_the_mdlm_logits(tmp_path, capsys):
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=3)
    src = _hf_folder(tmp_path / "hf", sd)
    for labels in ("none", "rand"):
        assert main(["import-mdlm", "--from", str(src), "--out", str(tmp_path / labels), "--labels", labels,
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
    for weights, source in (("model", sd), ("ema", ema)):
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


# ---- dimensions from the source, every family --------------------------------------------------
def _import(tmp_path, src, name, *extra):
    out = tmp_path / name
    assert main(["import-mdlm", "--from", str(src), "--out", str(out), "--mask-id", str(MASK), *extra]) == 0
    return out


def _eps_logits(folder, x, t):
    """(logits of the imported model, the labels eps it read) at times t."""
    model, _ = load_model(folder)
    eps = model.process.draw_labels(*x.shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return model(x, eps, t).double(), eps


# The peer's `tiny` (512 / 8 blocks / 8 heads) in full and `medium` (1024 / 24 / 16) with its block and
# head counts but a narrower width; neither is a named size here.
@pytest.mark.parametrize("hidden,blocks,heads,cond", [pytest.param(512, 8, 8, 128, marks=pytest.mark.slow),
                                                       (128, 24, 16, 128)])
def test_mdlm_of_the_peer_shapes_imports_with_its_own_dims(tmp_path, hidden, blocks, heads, cond):
    sd = official_state_dict(V, hidden, blocks, heads, cond, seed=7, scale=0.05)
    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({
        "model_type": "mdlm", "vocab_size": V, "model_length": 16, "hidden_dim": hidden, "cond_dim": cond,
        "n_blocks": blocks, "n_heads": heads, "dropout": 0.1, "time_conditioning": False}))
    save_file(sd, src / "model.safetensors")
    out = _import(tmp_path, src, "o", "--tokenizer", "gpt2", "--labels", "none")
    model_cfg = json.loads((out / "state.json").read_text())["config"]["model"]
    dims = (model_cfg["hidden"], model_cfg["blocks"], model_cfg["heads"], model_cfg["cond"])
    assert dims == (hidden, blocks, heads, cond)
    x = _x()
    got, _ = _eps_logits(out, x, torch.zeros(2))
    torch.testing.assert_close(got, reference_logits(sd, x, torch.zeros(2), heads), atol=2e-4, rtol=2e-4)


def test_imdm_lightning_ckpt_eps_mlp_qk_norm_softcap_from_its_config(tmp_path):
    """An IMDM .ckpt: eps-MLP with D = 24 != hidden 64, qk-norm, softcap and the Hydra config as plain data;
    raw and EMA weights each reproduce the official forward with the same eps."""
    hidden, blocks, heads, cond, D = 64, 2, 4, 32, 24
    kw = dict(label_dim=D, qk_norm=True)
    sd = official_state_dict(V, hidden, blocks, heads, cond, seed=8, **kw)
    ema = official_state_dict(V, hidden, blocks, heads, cond, seed=9, **kw)
    hydra = {"model": {"hidden_size": hidden, "n_heads": heads, "n_blocks": blocks, "cond_dim": cond, "length": 16,
                       "softcap": 3.0, "qk_norm": True, "noise_dim": D, "dropout": 0.1},
             "algo": {"noise_type": "randn", "noise_scale": 1.0, "time_conditioning": False}}
    torch.save({"state_dict": sd, "hyper_parameters": {"config": hydra},
                "ema": {"shadow_params": [v for k, v in ema.items() if "inv_freq" not in k]}}, tmp_path / "imdm.ckpt")
    x = _x()
    for weights, source in (("model", sd), ("ema", ema)):
        out = _import(tmp_path, tmp_path / "imdm.ckpt", weights, "--weights", weights, "--tokenizer", "gpt2")
        m = json.loads((out / "state.json").read_text())["config"]["model"]
        assert (m["labels"], m["label_dim"], m["qk_norm"], m["softcap"]) == ("randn", D, True, 3.0)
        got, eps = _eps_logits(out, x, torch.zeros(2))
        assert eps.shape == (2, 16, D)
        want = reference_logits(source, x, torch.zeros(2), heads, softcap=3.0, eps=eps, mask_id=MASK)
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("num_mask", [3, 1])
def test_imdm_finite_mask_table_with_ema(tmp_path, num_mask):
    """The official finite table vocab_embed.imdm_mlp.weight (K x d); with K = 1 it is frozen and the EMA
    list skips it, so the shadow parameters still line up."""
    d = SIZES["tiny-cpu"]
    sd = official_state_dict(V, d.hidden, d.blocks, d.heads, d.cond, seed=10, num_mask=num_mask)
    ema = official_state_dict(V, d.hidden, d.blocks, d.heads, d.cond, seed=11, num_mask=num_mask)
    frozen = {"backbone.rotary_emb.inv_freq"} | ({"backbone.vocab_embed.imdm_mlp.weight"} if num_mask == 1 else set())
    torch.save({"state_dict": sd, "ema": {"shadow_params": [v for k, v in ema.items() if k not in frozen]}},
               tmp_path / "finite.ckpt")
    out = _import(tmp_path, tmp_path / "finite.ckpt", "o", "--tokenizer", "gpt2")
    m = json.loads((out / "state.json").read_text())["config"]["model"]
    assert (m["labels"], m["num_mask"]) == ("finite", num_mask)
    x = _x()
    got, eps = _eps_logits(out, x, torch.zeros(2))
    if num_mask == 1:
        ema["backbone.vocab_embed.imdm_mlp.weight"] = sd["backbone.vocab_embed.imdm_mlp.weight"]
    want = reference_logits(ema, x, torch.zeros(2), d.heads, eps=eps, mask_id=MASK)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


def test_imdm_learnable_labels(tmp_path):
    d = SIZES["tiny-cpu"]
    sd = official_state_dict(V, d.hidden, d.blocks, d.heads, d.cond, seed=12, label_dim=20, learnable=True)
    torch.save({"state_dict": sd}, tmp_path / "learn.ckpt")
    out = _import(tmp_path, tmp_path / "learn.ckpt", "o", "--tokenizer", "gpt2")
    m = json.loads((out / "state.json").read_text())["config"]["model"]
    assert (m["labels"], m["label_dim"]) == ("learnable", 20)
    x = _x()
    got, eps = _eps_logits(out, x, torch.zeros(2))
    want = reference_logits(sd, x, torch.zeros(2), d.heads, eps=eps, mask_id=MASK)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)
    assert main(["import-mdlm", "--from", str(tmp_path / "learn.ckpt"), "--out", str(tmp_path / "bad"),
                 "--labels", "finite", "--tokenizer", "gpt2"]) == 2


def test_sdtt_student_hub_layout(tmp_path, capsys):
    """SDTT's Hub layout: the Hydra config as config.json (model.hidden_size, model.n_heads, tokenizer.name,
    time_conditioning) and a student of the Hub MDLM, whose keys read backbone.backbone.*; no rotary table."""
    hidden, blocks, heads, cond = 64, 3, 8, 48
    sd = official_state_dict(V, hidden, blocks, heads, cond, seed=13)
    del sd["backbone.rotary_emb.inv_freq"]
    src = tmp_path / "sdtt"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({
        "time_conditioning": True, "tokenizer": {"name": "gpt2"},
        "model": {"name": "small", "type": "ddit-orig", "hidden_size": hidden, "cond_dim": cond, "length": 16,
                  "n_blocks": blocks, "n_heads": heads, "dropout": 0.1},
        "data_preprocess": {"seq_len": "${model.length}"}}))
    save_file({**{"backbone." + k: v for k, v in sd.items()}, "noise.sigma_max": torch.tensor(1.0)},
              src / "model.safetensors")
    out = _import(tmp_path, src, "student", "--labels", "none")
    state = json.loads((out / "state.json").read_text())
    assert state["tokenizer"] == "gpt2" and state["config"]["model"]["time_conditioning"]
    x, t = _x(), torch.tensor([0.3, 0.8])
    got, _ = _eps_logits(out, x, t)
    sigma = -torch.log(1 - (1 - 1e-3) * t)  # the log-linear schedule's -log alpha_t
    torch.testing.assert_close(got, reference_logits(sd, x, sigma, heads), atol=2e-4, rtol=2e-4)
    # without config.json and rotary table the heads are unknown: a clear refusal, then --heads decides
    (src / "config.json").write_text("{}")
    assert main(["import-mdlm", "--from", str(src), "--out", str(tmp_path / "x"), "--tokenizer", "gpt2"]) == 2
    assert "--heads" in capsys.readouterr().err
    _import(tmp_path, src, "y", "--tokenizer", "gpt2", "--heads", str(heads))


def test_out_that_is_a_file_is_refused_before_reading(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["import-mdlm", "--from", "no/such/thing.ckpt", "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--out:") and len(err.strip().splitlines()) == 1


# ---- hostile files: no payload may run -----------------------------------------------------------------
class Payload:
    """Unpickled by plain pickle, it writes the marker file: the code execution a loader must prevent."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def _records(data: bytes) -> list[bytes]:
    """The consecutive pickles at the start of a legacy torch file (the storage bytes follow them)."""
    stream, out = io.BytesIO(data), []
    for _ in range(5):
        start = stream.tell()
        for _ in pickletools.genops(stream):  # reads one pickle, up to and including its STOP
            pass
        out.append(data[start:stream.tell()])
    return out + [data[stream.tell():]]


def _legacy(path, obj, replace: dict[int, object] | None = None):
    """torch.save's legacy (non-zip) format, with record i replaced by the pickle of replace[i]."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    parts = _records(buf.getvalue())
    for i, value in (replace or {}).items():
        parts[i] = pickle.dumps(value, protocol=2)
    path.write_bytes(b"".join(parts))
    return path


def test_the_payload_is_hostile(tmp_path):
    """The same payload does run under plain pickle, so the tests below prove something."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "ran"), protocol=2))
    assert (tmp_path / "ran").read_text() == "ran"


def _import_hostile(tmp_path, source, capsys, weights="model"):
    code = main(["import-mdlm", "--from", str(source), "--out", str(tmp_path / "out"), "--weights", weights,
                 "--tokenizer", "gpt2", "--mask-id", str(MASK)])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("case", ["legacy-magic-record", "legacy-storage-keys-record", "raw-pickle",
                                  "raw-pickle-protocol-4", "hf-pytorch-model-bin", "zip-state-dict-payload",
                                  "zip-dict-subclass-with-items"])
def test_hostile_files_are_refused_without_running_code(tmp_path, capsys, case):
    marker = tmp_path / "marker"
    payload = Payload(marker)
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=7)
    source = tmp_path / "last.ckpt"
    if case == "legacy-magic-record":
        _legacy(source, {"state_dict": sd}, {0: payload})
    elif case == "legacy-storage-keys-record":
        _legacy(source, {"state_dict": sd}, {4: payload})
    elif case.startswith("raw-pickle"):
        source.write_bytes(pickle.dumps({"state_dict": payload}, protocol=4 if case.endswith("4") else 2))
    elif case == "hf-pytorch-model-bin":
        source = _hf_folder(tmp_path / "hf", {})
        (source / "model.safetensors").unlink()
        torch.save({**sd, "backbone.extra": payload}, source / "pytorch_model.bin")
    elif case == "zip-state-dict-payload":  # where a weight belongs: it becomes inert, then is refused
        torch.save({"state_dict": {**sd, "backbone.blocks.0.norm1.weight": payload}}, source)
    else:  # the items of a dict subclass cannot be set on a placeholder: refused, not executed
        torch.save({"state_dict": sd, "hyper_parameters": collections.defaultdict(list, run=[payload])}, source)
    code, err = _import_hostile(tmp_path, source, capsys)
    assert not marker.exists(), "the payload ran"
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("--from:") and "Traceback" not in err
    assert str(source) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_payloads_in_hyper_parameters_are_skipped_and_the_weights_import(tmp_path, capsys, fmt):
    """Lightning pickles Python objects next to the weights (here also a tokenizer, whose Rust parts
    pickle their state as bytes): each becomes inert (REDUCE, NEWOBJ and BUILD of any state), none
    runs, and the weights still import exactly."""
    marker = tmp_path / "marker"
    sd = official_state_dict(V, DIMS.hidden, DIMS.blocks, DIMS.heads, DIMS.cond, seed=8)
    blob = {"state_dict": sd, "hyper_parameters": {"config": Trap(), "run": Payload(marker),
                                                   "nested": [Payload(marker), {"deep": Trap()}],
                                                   "tokenizer": load_tokenizer("bert-base-uncased")},
            "callbacks": {"Trap": Trap()}}
    source = tmp_path / "last.ckpt"
    if fmt == "zip":
        torch.save(blob, source)
    else:
        _legacy(source, blob)
    code, err = _import_hostile(tmp_path, source, capsys)
    assert not marker.exists(), "the payload ran"
    assert code == 0, err
    x = _x()
    want = reference_logits(sd, x, torch.zeros(2), DIMS.heads)
    torch.testing.assert_close(_logits(tmp_path / "out", x), want, atol=2e-4, rtol=2e-4)


def test_torch_keeps_its_own_allow_list_for_tensors(tmp_path):
    """Stand-ins are offered for every global the file names, the tensor rebuilders included: torch
    looks its own allow-list up first, so the tensors are real ones, and os / posix stay blocked."""
    from scale.checkpoints.torch_files import Inert, load_skipping_objects, pickle_globals
    path = tmp_path / "w.pt"
    torch.save({"w": torch.arange(3.0), "cfg": Trap()}, path)
    names = pickle_globals(path) | {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict"}
    with torch.serialization.safe_globals([(Inert, n) for n in names]):
        blob = torch.load(path, weights_only=True)
    assert torch.equal(blob["w"], torch.arange(3.0)) and isinstance(blob["cfg"], Inert)

    class System:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'marker'}",)
    torch.save({"x": System()}, path)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_skipping_objects(path, "--from")
    assert not (tmp_path / "marker").exists()
