"""End-to-end training of the tiny-cpu DiT on the offline Wikipedia corpus: the validation ELBO drops,
2 gloo processes under torchrun equal 1 process at the same global batch, a run killed with SIGKILL
after a checkpoint resumes to the bit-identical result, and so does a 2-process run whose rank 0 dies
inside a commit."""
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from scale.checkpoints.checkpoint import find_checkpoint, read_state
from scale.cli import main

ROOT = Path(__file__).resolve().parents[1]

# 4 steps of 2 micro-batches of 4 sequences, a checkpoint every 2 steps.
SHORT = ["train", "--config", "tiny-cpu", "--max-steps", "4", "--set", "train.micro_batch=4",
         "--set", "train.checkpoint_every=2", "--set", "train.log_every=1", "--set", "eval.every=0"]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in _records(run) if "loss" in r}


def test_tiny_cpu_30_steps_lowers_the_validation_elbo_and_samples(token_cache, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny-cpu", "--out", str(run)]) == 0
    (final,) = [r for r in _records(run) if "val_nll" in r]
    assert final["step"] == 30
    # A fresh DiT (zero output layer) predicts the uniform law over the C - 1 non-mask classes, whose
    # ELBO is E_t[w(t) (1 - alpha_t)] log(C - 1) = 0.999 log(C - 1) nats per token.
    fresh = 0.999 * math.log(30522 - 1)
    assert final["val_nll"] < 0.85 * fresh
    assert set(final["samples"]) == {"1", "2", "4", "8"}
    assert all(isinstance(s, str) and s for texts in final["samples"].values() for s in texts)
    folder = find_checkpoint(run)
    assert folder == run / "checkpoints" / "step-00000030"
    assert {p.name for p in folder.iterdir()} == {"model.safetensors", "ema.safetensors", "optimizer.pt", "state.json"}
    state = read_state(run)
    assert state.step == 30 and state.position["offset"] > 0
    # `scale sample` at the run's seed draws the training-time samples of the same (EMA) weights again
    assert main(["sample", "--ckpt", str(run), "--steps", "1,2,4,8", "--n", "2", "--seed", "0", "--out",
                 str(tmp_path / "samples.json")]) == 0
    assert json.loads((tmp_path / "samples.json").read_text()) == final["samples"]
    capsys.readouterr()
    assert main(["sample", "--ckpt", str(run), "--steps", "1,2", "--n", "2", "--prefix", "the history of"]) == 0
    printed = capsys.readouterr().out
    assert "=== 2 steps" in printed and printed.count("[CLS] the history of") == 4


@pytest.fixture(scope="module")
def reference_run(subprocess_env, tmp_path_factory):
    """One process, uninterrupted."""
    run = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run([sys.executable, "-m", "scale", *SHORT, "--out", str(run)], env=subprocess_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return run


def _same_weights(a: Path, b: Path, name: str, tol: float = 0.0) -> None:
    """The latest checkpoints of two run folders hold the same `name` weights (up to tol)."""
    wa, wb = load_file(find_checkpoint(a) / name), load_file(find_checkpoint(b) / name)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() <= tol, (name, key)


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def two_process_run(subprocess_env, tmp_path_factory):
    """2 gloo processes, uninterrupted."""
    run = tmp_path_factory.mktemp("two") / "run"
    two = subprocess.run([*TORCHRUN, "-m", "scale", *SHORT, "--out", str(run)],
                         env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    return run


def test_two_gloo_processes_equal_one_process(two_process_run, reference_run):
    assert _records(two_process_run)[0]["world_size"] == 2
    assert _records(reference_run)[0]["accumulation"] == 2
    assert _losses(two_process_run) == pytest.approx(_losses(reference_run), rel=1e-5)
    _same_weights(two_process_run, reference_run, "model.safetensors", tol=1e-5)


def test_rank_0_killed_inside_a_commit_then_resumed_is_bit_identical(subprocess_env, two_process_run, tmp_path):
    """Rank 0 dies (os._exit) at the 9th file-system call of the commit of step 4, the os.replace that
    would move `latest`: step 4's folder is complete but uncommitted; the resumed run ignores it,
    continues from step 2 and ends as the uninterrupted 2-process run, bit for bit."""
    run = tmp_path / "run"
    killed = subprocess.run([*TORCHRUN, str(ROOT / "tests" / "checkpoint_faults.py"), "9", "4", "--", *SHORT,
                             "--out", str(run)], env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert killed.returncode != 0
    assert (run / "checkpoints" / "latest").read_text() == "step-00000002\n"
    assert (run / "checkpoints" / "step-00000004" / "state.json").is_file()  # renamed, never committed
    resumed = subprocess.run([*TORCHRUN, "-m", "scale", *SHORT, "--out", str(run), "--resume"],
                             env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("model.safetensors", "ema.safetensors"):
        _same_weights(run, two_process_run, name)
    assert _losses(run) == _losses(two_process_run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000004"]


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(subprocess_env, reference_run, tmp_path):
    args = [sys.executable, "-m", "scale", *SHORT, "--out", str(tmp_path / "run")]
    killed = tmp_path / "run"
    proc = subprocess.Popen(args, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        latest = killed / "checkpoints" / "latest"
        if latest.exists() and latest.read_text() == "step-00000002\n":
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert max(_losses(killed)) < 4

    resumed = subprocess.run([*args, "--resume"], env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for name in ("model.safetensors", "ema.safetensors"):
        _same_weights(killed, reference_run, name)
    assert _losses(killed) == _losses(reference_run)
