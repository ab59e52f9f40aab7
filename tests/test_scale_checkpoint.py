"""Crash consistency of checkpoints: a run killed at every file-system step of a commit resumes to the
bit-identical result of an uninterrupted run; run folders and single checkpoint folders resolve the
same way; a dead writer's leftovers are cleaned; metrics.jsonl cut by a kill is repaired, a damaged
one is refused; weights that are not finite are refused on load."""
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from scale.checkpoints.checkpoint import (
    KEEP,
    RunFolder,
    checkpoint_folder,
    find_checkpoint,
    load_model,
    read_state,
    save_checkpoint,
)
from scale.checkpoints.config import load_config
from scale.cli import main
from scale.model.dit import DiT
from scale.training.trainer import elbo_trainer

ROOT = Path(__file__).resolve().parents[1]
DEAD_PID = 2 ** 22 + 12345  # above the largest pid Linux hands out (pid_max <= 2**22): never alive


@pytest.fixture
def fast_dir(tmp_path):
    """A folder on tmpfs when there is one (fsync there costs nothing; renames behave the same)."""
    if os.access("/dev/shm", os.W_OK):
        with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
            yield Path(d)
    else:
        yield tmp_path


def test_killed_at_every_step_of_a_commit_resumes_bit_identically(fast_dir, subprocess_env):
    """tests/checkpoint_faults.py kills a 4-step run at the n-th rename / replace / fsync / unlink / rmdir
    of the commit of step 3 (also pruning step 1), for every n, once more with the file being fsynced
    cut to half, and half-way through the metrics record before that commit (n = 0); each killed run is
    resumed in a fresh process."""
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "checkpoint_faults.py"), "sweep", str(fast_dir)],
                          env={**subprocess_env, "TQDM_DISABLE": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    cases = [json.loads(line) for line in done.stdout.splitlines()]
    whole = [c for c in cases if not c["torn"] and c["n"] > 0]
    assert len(whole) >= 12 and len(cases) - len(whole) >= 6  # 4 file writes, the pointer, the log
    for c in cases:
        assert c["resume_exit"] == 0 and c["bit_identical"] and c["same_metrics"], c
        assert c["leftovers"] == [] and c["checkpoints"] == ["latest", "step-00000003", "step-00000004"], c
    # Before the pointer moves the run continues from step 2, from then on from step 3.
    starts = [c["resumed_from"] for c in whole]
    assert starts == sorted(starts) and starts[0] == 2 and starts[-1] == 3
    assert all(c["resumed_from"] == 2 for c in cases if c["torn"] or c["n"] == 0)
    assert [c["n"] for c in cases].count(0) == 1


# ---- folders ---------------------------------------------------------------------------------------------
def _state(step: int) -> dict:
    config = load_config("tiny-cpu", ["model.vocab_size=40", "model.mask_id=39"])
    return {"step": step, "config": config.to_dict(), "tokenizer": "gpt2"}


def _weights(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return DiT(load_config("tiny-cpu", ["model.vocab_size=40", "model.mask_id=39"]).model).state_dict()


def test_run_folder_commits_resolve_and_prune(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert find_checkpoint(run.root) is None
    run.acquire()
    for step in (1, 2, 3):
        run.commit(_weights(step), _weights(step), None, _state(step))
    assert (run.dir / "latest").read_text() == "step-00000003\n"
    assert sorted(p.name for p in run.dir.iterdir()) == ["latest", "step-00000002", "step-00000003"][:KEEP + 1]
    assert checkpoint_folder(run.root) == run.dir / "step-00000003" and read_state(run.root).step == 3
    model, state = load_model(run.root)  # a run folder means its latest commit
    assert state.step == 3 and torch.equal(model.state_dict()["vocab_embed.embedding"],
                                              _weights(3)["vocab_embed.embedding"])
    with pytest.raises(ValueError, match="being written by another running process"):
        RunFolder(run.root).acquire()
    run.release()
    RunFolder(run.root).acquire()  # the lock went with its holder


def test_a_dead_writers_leftovers_are_cleaned_and_uncommitted_folders_ignored(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.acquire()
    run.commit(_weights(), None, None, _state(1))
    run.release()
    # What a writer killed while committing step 2 leaves: a renamed but uncommitted step-2 folder,
    # a staging folder, a pointer temporary, a half-copied round, a half-rewritten log.
    save_checkpoint(run.dir / "step-00000002", _weights(2), None, None, _state(2))
    leftovers = [run.dir / f".step-00000005.tmp-{DEAD_PID}", run.dir / f".latest.tmp-{DEAD_PID}",
                 run.root / "rounds" / f".round-1-8-steps.tmp-{DEAD_PID}", run.root / f".metrics.jsonl.tmp-{DEAD_PID}"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if "step" in path.name or "round" in path.name else path.write_text("partial")
    assert read_state(run.root).step == 1  # invisible before any clean-up
    run.acquire()
    assert not any(p.exists() for p in leftovers) and not (run.dir / "step-00000002").exists()
    assert sorted(p.name for p in run.dir.iterdir()) == ["latest", "step-00000001"]


def test_single_checkpoint_folders_are_atomic_and_never_overwritten(tmp_path):
    final = tmp_path / "imported"
    stale = tmp_path / f".imported.tmp-{DEAD_PID}"  # an import killed before its rename
    stale.mkdir()
    save_checkpoint(final, _weights(), None, None, _state(0))
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["imported"]
    assert find_checkpoint(final) == final and load_model(final)[1].step == 0
    with pytest.raises(ValueError, match="already exists; expected a new or empty folder"):
        save_checkpoint(final, _weights(), None, None, _state(0))


def test_a_failed_rename_leaves_no_visible_checkpoint(tmp_path, monkeypatch):
    """A round snapshot (or an import) that fails at its rename does not exist; the retry succeeds."""
    src = save_checkpoint(tmp_path / "src", _weights(), _weights(), None, _state(4))
    rename = os.rename

    def fail(a, b):
        raise OSError("disk full")
    monkeypatch.setattr(os, "rename", fail)
    from scale.checkpoints.checkpoint import copy_checkpoint
    with pytest.raises(OSError):
        copy_checkpoint(src, tmp_path / "rounds" / "round-1-8-steps")
    assert find_checkpoint(tmp_path / "rounds" / "round-1-8-steps") is None
    monkeypatch.setattr(os, "rename", rename)
    final = copy_checkpoint(src, tmp_path / "rounds" / "round-1-8-steps")
    assert read_state(final).step == 4 and [p.name for p in final.parent.iterdir()] == ["round-1-8-steps"]


# ---- metrics.jsonl ---------------------------------------------------------------------------------------
def _trainer(out: Path):
    config = load_config("tiny-cpu", ["data.length=16", "model.vocab_size=40", "model.mask_id=39"])
    blocks = torch.randint(0, 39, (16, 16), generator=torch.Generator().manual_seed(0))
    trainer = elbo_trainer(config, out, blocks, blocks)
    trainer.step, trainer.resumed = 2, True
    return trainer


def test_a_last_line_cut_by_a_kill_is_dropped_and_later_records_too(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 0, "parameters": 1}\n{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
                   '{"step": 3, "loss": 1.2}\n{"step": 4, "lo')
    trainer = _trainer(tmp_path)
    trainer._open_run()
    assert log.read_text() == '{"step": 0, "parameters": 1}\n{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    trainer.run_folder.release()


@pytest.mark.parametrize("text,line", [('{"step": 0}\n{"step": 1, "lo\n{"step": 2}\n', 2),
                                       ('{"step": 0}\n\x00\x00garbage\n', 2), ('{"step": 0}\n[1, 2]\n', 2)])
def test_an_unreadable_line_is_an_error_naming_file_and_line(tmp_path, text, line):
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.raises(ValueError, match=rf"^--resume: {tmp_path / 'metrics.jsonl'} line {line}: expected a"):
        _trainer(tmp_path)._open_run()


# ---- weights that are not finite -------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, capsys, value):
    folder = save_checkpoint(tmp_path / "ckpt", _weights(), None, None, _state(0))
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors["blocks.1.mlp.0.weight"][3, 5] = value
    save_file(tensors, path, metadata={"step": "0", "format": "imdm-lab-dit/1"})
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor 'blocks\.1\.mlp\.0\.weight' holds non-finite"):
        load_model(folder)
    assert main(["sample", "--ckpt", str(folder), "--steps", "1", "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ckpt:") and str(path) in err and "blocks.1.mlp.0.weight" in err


def test_resume_refuses_non_finite_weights_and_optimizer_state(tmp_path):
    trainer = _trainer(tmp_path / "run")
    trainer.step, trainer.resumed = 0, False
    trainer.run(1)
    folder = checkpoint_folder(tmp_path / "run")
    ema = load_file(folder / "ema.safetensors")
    ema["output_layer.linear.weight"][0, 0] = math.nan
    save_file(ema, folder / "ema.safetensors", metadata={"step": "1", "format": "imdm-lab-dit/1"})
    with pytest.raises(ValueError, match=r"ema\.safetensors: tensor 'output_layer\.linear\.weight'"):
        _trainer(tmp_path / "run").resume()
    blob = torch.load(folder / "optimizer.pt", weights_only=True)
    blob["optimizer"]["state"][0]["exp_avg_sq"].fill_(math.inf)
    torch.save(blob, folder / "optimizer.pt")
    with pytest.raises(ValueError, match=r"optimizer\.pt: tensor 'state\.0\.exp_avg_sq' holds non-finite"):
        _trainer(tmp_path / "run").resume()


# ---- the command line ------------------------------------------------------------------------------------
def test_resume_without_a_complete_checkpoint_starts_from_step_0_and_says_so(token_cache, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints" / f".step-00000002.tmp-{DEAD_PID}").mkdir(parents=True)  # killed in its first commit
    (run / "metrics.jsonl").write_text('{"step": 0, "parameters": 5}\n{"step": 1, "loss": 9.0}\n{"step": 2, "lo')
    assert main(["train", "--config", "tiny-cpu", "--out", str(run), "--resume", "--max-steps", "1",
                 "--set", "eval.every=0", "--set", "train.log_every=1"]) == 0
    assert f"--resume: {run} holds no complete checkpoint; starting from step 0" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000001"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1] and records[1]["loss"] != 9.0
