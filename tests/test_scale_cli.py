"""Bad input to the scale CLI ends with exit status 2 and one line naming the argument, never a traceback:
missing data path, unknown config key, checkpoint of another size, corrupted checkpoint files."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scale.cli import main

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("token_cache")  # the session's block cache: tokenized once


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint):
    """A fresh tiny-cpu checkpoint with the BERT vocabulary (what `train` writes at its first save)."""
    return tiny_checkpoint(0)


def _fails(capsys, argv, prefix):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    err = err.splitlines()[-1]  # earlier lines can only be progress bars (corpus tokenization)
    assert err.startswith(prefix), err
    return err


def test_unknown_config_key_lists_the_valid_ones(capsys, tmp_path):
    err = _fails(capsys, ["train", "--config", "tiny-cpu", "--out", str(tmp_path), "--set", "train.lrr=1e-4"],
                 "config: unknown key(s) train.lrr")
    assert "train.lr," in err and "model.size" in err


@pytest.mark.parametrize("override,prefix", [("train.lr=fast", "train.lr: expected a float"),
                                             ("lr=1", "--set: expected section.key=value"),
                                             ("optim.lr=1", "config: unknown section 'optim'")])
def test_badly_typed_or_formed_overrides(capsys, tmp_path, override, prefix):
    _fails(capsys, ["train", "--config", "tiny-cpu", "--out", str(tmp_path), "--set", override], prefix)


def test_missing_config_file(capsys, tmp_path):
    _fails(capsys, ["train", "--config", str(tmp_path / "nope.toml"), "--out", str(tmp_path)], "--config: no file")


def test_missing_data_path(capsys, tmp_path):
    _fails(capsys, ["train", "--config", "tiny-cpu", "--out", str(tmp_path / "run"),
                    "--set", f"data.dataset={tmp_path / 'no-such-corpus'}"], "data:")


def test_resume_with_a_model_of_another_size(capsys, tmp_path, ckpt):
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    err = _fails(capsys, ["train", "--config", "tiny-cpu", "--out", str(run), "--resume",
                          "--set", "model.size=synthetic"], "--resume: the checkpoint")
    assert "model.size: 'tiny-cpu' in the checkpoint, 'synthetic' here" in err


def test_weights_of_another_size_than_state_json_says(capsys, tmp_path, ckpt):
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    state = json.loads((run / "state.json").read_text())
    state["config"]["model"]["size"] = "synthetic"
    (run / "state.json").write_text(json.dumps(state))
    err = _fails(capsys, ["sample", "--ckpt", str(run), "--steps", "1", "--n", "1"], "ckpt:")
    assert "shape mismatches" in err and "vocab_embed.embedding" in err


@pytest.mark.parametrize("name,damage", [("ema.safetensors", b"\x00" * 64), ("state.json", b"{not json"),
                                         ("ema.safetensors", None)])
def test_corrupted_or_missing_checkpoint_files(capsys, tmp_path, ckpt, name, damage):
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    if damage is None:
        (run / name).unlink()
        (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:1000])
    else:
        (run / name).write_bytes(damage)
    err = _fails(capsys, ["sample", "--ckpt", str(run), "--steps", "1", "--n", "1"], "ckpt:")
    assert "corrupted" in err


def test_resume_of_a_truncated_optimizer_state(capsys, tmp_path, ckpt):
    run = tmp_path / "run"
    shutil.copytree(ckpt, run)
    (run / "optimizer.pt").write_bytes(b"PK\x03\x04 truncated")
    err = _fails(capsys, ["train", "--config", "tiny-cpu", "--out", str(run), "--resume"], "ckpt:")
    assert "optimizer.pt" in err


@pytest.mark.parametrize("command", [["train", "--config", "tiny-cpu"],
                                     ["distill", "--method", "imdm-sdtt", "--teacher", "{ckpt}"]])
def test_train_and_distill_refuse_a_used_folder_and_a_step_limit_below_1(capsys, tmp_path, ckpt, command):
    command = [a.replace("{ckpt}", str(ckpt)) for a in command]
    err = _fails(capsys, [*command, "--out", str(ckpt)], "--out:")
    assert "already holds a checkpoint; pass --resume" in err
    _fails(capsys, [*command, "--out", str(tmp_path / "run"), "--max-steps", "0"],
           "--max-steps: expected an integer >= 1, got 0")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,prefix", [(["sample", "--ckpt", "/no/such/run"], "ckpt:"),
                                         (["sample", "--ckpt", "{ckpt}", "--steps", "1,x"], "--steps:"),
                                         (["frobnicate"], "python -m scale: error: argument command: invalid choice")])
def test_sample_and_command_errors(capsys, ckpt, argv, prefix):
    _fails(capsys, [a.replace("{ckpt}", str(ckpt)) for a in argv], prefix)


def test_the_module_entry_point_exits_2_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scale", "sample", "--ckpt", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("ckpt:") and "Traceback" not in done.stderr


@pytest.mark.parametrize("command,option,what", [
    (["train-tokenizer"], "--out", "a tokenizer"),
    (["train-ngram-judge", "--tokenizer", "gpt2"], "--out", "an n-gram judge"),
    (["train-judge"], "out", "a judge")])
def test_an_out_folder_the_command_did_not_write_is_refused_and_kept(capsys, tmp_path, command, option, what):
    """Checked before any data is read (the corpus does not exist): the user's folder is never replaced."""
    out = tmp_path / "D"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    err = _fails(capsys, [*command, "--data", str(tmp_path / "no-such-corpus"), "--out", str(out)], f"{option}:")
    assert f"{out} is a non-empty folder that is not {what} written by this command" in err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"] and (out / "thesis.tex").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]


def test_a_command_replaces_its_own_earlier_folder(tmp_path):
    """train-ngram-judge into the folder of its earlier run: the new judge replaces the old one whole."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"{i:02d}.txt").write_text(f"document {i} says the cat sat on the mat and the dog ran. " * 3)
    out = tmp_path / "judge"
    argv = ["train-ngram-judge", "--tokenizer", "gpt2", "--data", str(corpus), "--block", "8", "--out", str(out)]
    assert main([*argv, "--order", "2"]) == 0
    (out / "counts.npz").rename(out / "stale-counts.npz")  # a file the new judge does not write
    assert main([*argv, "--order", "3"]) == 0
    assert json.loads((out / "ngram.json").read_text())["order"] == 3 and not (out / "stale-counts.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "judge"]
