"""The (IM-)ReDi coupling of `python -m scale coupling`: the eps a student regenerates from a stored seed
is the eps the teacher sampled from, shards split across ranks add up to the one-process coupling, and a
run killed with SIGKILL resumes to the uninterrupted result, without duplicates or gaps."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import imdm_lab.distill.redi as redi
from imdm_lab.schedules import get_schedule
from scale.checkpoints.checkpoint import load_model
from scale.cli import main
from scale.training.coupling import Coupling, CouplingSettings, generate
from scale.training.distributed import Runtime

CPU = Runtime(0, 1, 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def teacher(token_cache, tmp_path_factory):
    """A tiny-cpu IMDM after a few training steps (its eps path is still inert; the tests only need
    a working denoiser on real blocks)."""
    run = tmp_path_factory.mktemp("teacher") / "imdm"
    assert main(["train", "--config", "tiny-cpu", "--out", str(run), "--max-steps", "2",
                 "--set", "eval.every=0", "--set", "model.label_dim=8"]) == 0
    return run


def _arrays(folder: Path) -> dict:
    c = Coupling(folder)
    return {"x_t": c.x_t, "x_0": c.x_0, "t": c.t, "seed": c.seed}


def test_eps_from_the_stored_seed_is_the_eps_the_teacher_started_from(teacher, tmp_path, monkeypatch):
    seen = []  # eps of the teacher's first network call of each sampler call

    def spying_sample(denoiser, **kw):
        def spy(x, eps, t):
            if len(seen) == calls[0]:
                seen.append((eps.clone(), x == denoiser.process.mask_id))
            return denoiser(x, eps, t)
        calls[0] = len(seen)
        return real_sample(spy, **{**kw, "process": denoiser.process})

    calls, real_sample = [0], redi.sample
    monkeypatch.setattr(redi, "sample", spying_sample)
    out = generate(teacher, tmp_path / "c", CouplingSettings(n=6, steps=4, batch_size=3, shard_size=6), runtime=CPU,
                   progress=False)
    data = Coupling(out)
    model, _ = load_model(teacher)
    eps_teacher = torch.cat([e for e, _ in seen])
    masked = torch.cat([m for _, m in seen])
    assert masked.any()
    regenerated = model.process.labels.from_seeds(data.seed, data.length)
    assert torch.equal(regenerated, eps_teacher)  # every position, masked or not
    assert torch.equal(masked, data.x_t == model.config.mask_id)
    # The stored time and masks follow the teacher's schedule: about 1 - alpha(t) of each row is masked.
    frac = masked.double().mean(1)
    expect = 1 - get_schedule("loglinear").alpha(data.t)
    assert (frac - expect).abs().mean() < 0.25
    assert len(set(data.seed.tolist())) == 6


def test_fix_eps_keeps_the_initial_eps_over_the_whole_path(teacher, tmp_path, monkeypatch):
    calls = []

    def spying_sample(denoiser, **kw):
        def spy(x, eps, t):
            calls.append((eps.clone(), x == denoiser.process.mask_id))
            return denoiser(x, eps, t)
        return real_sample(spy, **{**kw, "process": denoiser.process})

    real_sample = redi.sample
    monkeypatch.setattr(redi, "sample", spying_sample)
    out = generate(teacher, tmp_path / "c", CouplingSettings(n=4, steps=6, batch_size=4, shard_size=4, fix_eps=True),
                   runtime=CPU, progress=False)
    first = calls[0][0]
    assert len(calls) > 1 and all(torch.equal(eps, first) for eps, _ in calls)
    model, _ = load_model(teacher)
    assert torch.equal(first, model.process.labels.from_seeds(Coupling(out).seed, Coupling(out).length))
    assert json.loads((out / "meta.json").read_text())["fix_eps"] is True


def test_ranks_split_the_shards_and_add_up_to_one_process(teacher, tmp_path):
    settings = CouplingSettings(n=10, steps=3, batch_size=2, shard_size=3)
    one = generate(teacher, tmp_path / "one", settings, runtime=CPU, progress=False)
    for rank in (1, 0):  # rank 1 first: a rank never needs the others' shards
        generate(teacher, tmp_path / "two", settings, runtime=Runtime(rank, 2, rank, torch.device("cpu")),
                 progress=False)
        if rank == 1:
            assert sorted(p.name for p in (tmp_path / "two").glob("shard-*")) == ["shard-000001", "shard-000003"]
    a, b = _arrays(one), _arrays(tmp_path / "two")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # x_0 completes x_t: the visible tokens are kept and no mask is left.
    visible = a["x_t"] != 103
    assert torch.equal(a["x_0"][visible], a["x_t"][visible]) and not (a["x_0"] == 103).any()


def test_two_torchrun_processes_make_the_one_process_coupling(teacher, subprocess_env, tmp_path):
    settings = CouplingSettings(n=6, steps=3, batch_size=2, shard_size=2)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "scale", "coupling", "--teacher", str(teacher), "--num-samples", "6", "--steps", "3",
                          "--batch-size", "2", "--shard-size", "2", "--out", str(tmp_path / "two")],
                         env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    one = generate(teacher, tmp_path / "one", settings, runtime=CPU, progress=False)
    a, b = _arrays(one), _arrays(tmp_path / "two")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=0), "--n: expected an integer >= 1, got 0"),
    (dict(shard_size=1.5), "--shard-size: expected an integer >= 1, got 1.5"),
    (dict(t_min=1.0), r"--t-min: expected a number in \(0, 1\), got 1.0"),
    (dict(t_min="0.1"), r"--t-min: expected a number in \(0, 1\), got '0.1'"),
    (dict(fix_eps=1), "--fix-eps: expected a bool, got 1"),
    (dict(seed=-1), r"--seed: expected an integer in \[0, 2\^31\), got -1")])
def test_coupling_settings_are_refused_when_built(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        CouplingSettings(**(dict(n=4, steps=2) | kwargs))


def test_coupling_settings_hold_plain_integers_for_meta_json():
    settings = CouplingSettings(n=np.int64(4), steps=np.int32(2), seed=np.int64(3))
    assert json.loads(json.dumps([settings.n, settings.steps, settings.seed])) == [4, 2, 3]
    assert settings.rollout.fix_eps is False and CouplingSettings(n=1, steps=1, fix_eps=True).rollout.fix_eps


def test_other_settings_in_the_same_folder_are_refused(teacher, tmp_path, capsys):
    args = ["coupling", "--teacher", str(teacher), "--n", "2", "--steps", "2", "--out", str(tmp_path / "c")]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args[:-4], "--steps", "3", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("--out:") and "steps" in err and "\n" not in err
    assert main(["coupling", "--teacher", str(teacher), "--n", "0", "--out", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.startswith("--n: expected an integer >= 1")


def test_sigkill_then_rerun_has_no_duplicates_or_gaps(teacher, subprocess_env, tmp_path):
    n, size = 16, 2
    args = [sys.executable, "-m", "scale", "coupling", "--teacher", str(teacher), "--n", str(n),
            "--steps", "32", "--batch-size", "2", "--shard-size", str(size)]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(killed)], env=subprocess_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "shard-000002").exists():
        time.sleep(0.005)
    assert proc.poll() is None, "coupling finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(killed.glob("shard-*")))
    assert 3 <= done_before < n // size
    with pytest.raises(ValueError, match="incomplete"):
        Coupling(killed)

    resumed = subprocess.run([*args, "--out", str(killed)], env=subprocess_env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    data = Coupling(killed)  # checks that samples 0..n-1 are present exactly once
    assert len(data) == n and len(list(killed.glob("shard-*"))) == n // size
    reference = generate(teacher, tmp_path / "reference",
                         CouplingSettings(n=n, steps=32, batch_size=2, shard_size=size), runtime=CPU, progress=False)
    a, b = _arrays(killed), _arrays(reference)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.unique(a["seed"].numpy()).size == n
