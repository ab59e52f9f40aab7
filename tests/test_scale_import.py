"""import-mdlm on checkpoints built here with the official key layout: a Hugging Face folder
(config.json + model.safetensors) and a Lightning .ckpt (state_dict, pickled hyper-parameters, EMA);
hostile files of every torch format, whose payload must never run."""
import collections
import io
import json
import os
import pickle
import pickletools

import pytest
import torch
from safetensors.torch import save_file

from dit_reference import official_state_dict, reference_logits
from scale.checkpoint import load_model
from scale.cli import main
from scale.model import SIZES
from scale.tokenizers import load_tokenizer

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


def _import(tmp_path, source, capsys, weights="raw"):
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
    code, err = _import(tmp_path, source, capsys)
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
    code, err = _import(tmp_path, source, capsys)
    assert not marker.exists(), "the payload ran"
    assert code == 0, err
    x = _x()
    want = reference_logits(sd, x, torch.zeros(2), DIMS.heads)
    torch.testing.assert_close(_logits(tmp_path / "out", x), want, atol=2e-4, rtol=2e-4)


def test_torch_keeps_its_own_allow_list_for_tensors(tmp_path):
    """Stand-ins are offered for every global the file names, the tensor rebuilders included: torch
    looks its own allow-list up first, so the tensors are real ones, and os / posix stay blocked."""
    from scale.torch_files import Inert, load_skipping_objects, pickle_globals
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
