"""Every argument has a bound checked before the work: a value whose cost does not fit (memory of the
exact engine, of a sampler's time grid, of a bootstrap, of the BPE trainer) ends with exit status 2 and
one line naming the argument and the largest value that fits; an output that cannot be written (a
read-only or full file system, a figure format matplotlib cannot write) is refused before the work, or,
when the disk fills during it, named in one line with what survives; the pipeline checks every stage's
arguments before the first stage; a folder written over time has one writer. The values accepted at the
extremes are the documented ones (README, docs/kernels.md)."""
import errno
import json
import math
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refusals import one_line

from imdm_lab import durable
from imdm_lab.checks import check_cost, largest_fitting
from imdm_lab.exact import DEFAULT_BUDGET_BYTES, check_size, engine_bytes
from imdm_lab.sampling import plan_bytes
from scale.cli import main as scale_main
from toy_tasks.cli import main as toy_main

pytestmark = pytest.mark.usefixtures("token_cache")

ORACLE = ["--model", "oracle-mdm", "--out", "never.npy"]  # a writable path (the cwd), never written




def _most(line: str) -> int:
    """The largest value a refusal names ("expected at most N ...")."""
    return int(line.split("expected at most ")[1].split()[0])


# ---- cost checks -----------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(a=st.integers(1, 10**6), b=st.integers(0, 10**9), budget=st.integers(0, 10**15))
def test_largest_fitting_of_a_linear_cost(a, b, budget):
    # independently: a v + b <= budget  <=>  v <= (budget - b) / a
    assert largest_fitting(lambda v: a * v + b, budget) == max(0, (budget - b) // a)


@settings(max_examples=60, deadline=None)
@given(V=st.integers(2, 10**30), L=st.integers(1, 10**6))
def test_check_size_refuses_without_overflow_naming_the_largest_L(V, L):
    try:
        check_size(V, L)
    except ValueError as err:
        line = str(err)
        assert line.startswith("V, L: expected") and f"got V={V}, L={L}" in line
        if "the largest L that fits" in line:
            most = int(line.rsplit(" ", 1)[1])
            assert engine_bytes(V, most) <= DEFAULT_BUDGET_BYTES < engine_bytes(V, most + 1)
    else:
        assert engine_bytes(V, L) <= DEFAULT_BUDGET_BYTES


@pytest.mark.parametrize("argv", [["bound", "--task", "align", "--V", "2", "--L", "1100", "--steps", "1"],
                                  ["bound", "--task", "align", "--V", "2", "--L", "10000000000", "--steps", "1"],
                                  ["sample", "--task", "align", "--V", "2", "--L", "5000", "--steps", "1",
                                   "--samples", "1", *ORACLE]])
def test_joints_beyond_any_budget_areone_line(capsys, argv):
    line = one_line(capsys, toy_main, argv, ["V, L:"])
    assert "the largest L that fits at V=2 is 17" in line  # 8 (3 * 3^L + (L + 2) 2^L) <= 4 GiB up to L = 17
    assert not os.path.exists("never.npy")


def test_a_success_curve_whose_one_step_does_not_fit(capsys):
    # 3 (L + 1)^2 + 8 L + 8 float64 numbers a step: L = 10^6 needs 24 TB for one step
    line = one_line(capsys, toy_main, ["success-curve", "--L", "1000000", "--steps", "1"], ["V, L:"])
    assert f"one step needs about {8 * (3 * 1000001**2 + 8 * 10**6 + 8)} bytes" in line


@pytest.mark.parametrize("option,value", [("--samples", "100000000000"), ("--steps", "1000000000")])
def test_toy_sample_counts_over_the_memory_budget(capsys, option, value):
    args = {"--samples": "10", "--steps": "1", option: value}
    line = one_line(capsys, toy_main, ["sample", "--task", "align", "--V", "4", "--L", "2", *ORACLE,
                                        *[a for kv in args.items() for a in kv]], [option[2:] + ":"])
    most = _most(line)
    if option == "--samples":  # three int64 copies of (N, 2) and one plan of min(65536, N) rows, 1 step
        assert 3 * 8 * 2 * most + plan_bytes(min(65536, most), 1) <= DEFAULT_BUDGET_BYTES
        assert 3 * 8 * 2 * (most + 1) + plan_bytes(min(65536, most + 1), 1) > DEFAULT_BUDGET_BYTES
    else:  # the plan of a batch of 10 rows in what the samples leave
        left = DEFAULT_BUDGET_BYTES - 3 * 8 * 2 * 10
        assert plan_bytes(10, most) <= left < plan_bytes(10, most + 1)


def test_the_largest_step_count_named_runs(tmp_path):
    """The bound is the real cost: the plan of one batch at the named step count is allocated."""
    assert toy_main(["sample", "--task", "align", "--V", "4", "--L", "2", "--model", "oracle-mdm", "--steps", "3",
                     "--samples", "2", "--batch-size", "2", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (2, 2)
    with pytest.raises(ValueError, match=r"^steps: expected at most 7 "):
        check_cost("steps", 8, lambda k: plan_bytes(2, k), plan_bytes(2, 7), "the plan")


@pytest.mark.parametrize("argv,name", [
    (["coupling", "--teacher", "/nonexistent", "--n", "1000000000000", "--out", "OUT"], "--n:"),
    (["coupling", "--teacher", "/nonexistent", "--n", "8", "--steps", "1000000000", "--out", "OUT"], "--steps:"),
    (["evaluate", "--ckpt", "/nonexistent", "--steps", "1,1000000000", "--out", "OUT/e.json"], "--steps:"),
    (["sample", "--ckpt", "/nonexistent", "--steps", "1000000000"], "--steps:")])
def test_scale_counts_over_this_machines_memory(capsys, tmp_path, argv, name):
    # the checkpoint does not exist: a command checking late would say so instead
    line = one_line(capsys, scale_main, [a.replace("OUT", str(tmp_path / "out")) for a in argv], [name])
    assert "expected at most" in line and not (tmp_path / "out").exists()


def test_report_n_boot_over_this_machines_memory(capsys, tmp_path):
    from scale.evaluation.report import bootstrap_bytes
    from scale.model.cost import device_memory
    entry = {"checkpoint": "/nonexistent", "label": "a", "steps": 1, "gen_ppl": 50.0, "entropy": 4.0, "nfe": 1,
             "val_ppl": 60.0, "mauve": None, "sample": "",
             "per_sample_nll": [1.0] * 8, "per_sample_tokens": [4] * 8, "per_sample_entropy": [1.0] * 8}
    (tmp_path / "eval.json").write_text(json.dumps({
        "judge": "j", "eos_rule": "official", "n": 8, "seed": 0, "weights": "ema",
        "checkpoints": [{"checkpoint": "/nonexistent", "label": "a", "step": 0, "val_ppl": 60.0, "zero_shot": {}}],
        "entries": [entry]}))
    line = one_line(capsys, scale_main, ["report", "--eval", str(tmp_path / "eval.json"), "--judge", "/nonexistent",
                                          "--n-boot", "1000000000", "--out", str(tmp_path / "r.json")], ["--n-boot:"])
    most = _most(line)
    assert bootstrap_bytes(most, 8) <= device_memory("cpu") < bootstrap_bytes(most + 1, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


# ---- values accepted at the extremes (documented) --------------------------------------------------

def test_success_curve_takes_any_V_float64_holds(capsys):
    """V = 10^20: V^(1-n) vanishes for n >= 2, so P(all equal) is the probability that the first step
    revealing anything reveals one token: under the linear schedule each position's step is uniform on
    1..k, so P = sum_j ((k-j+1)/k)^L * L (1/(k-j+1)) (1 - 1/(k-j+1))^(L-1)."""
    assert toy_main(["success-curve", "--V", "99999999999999999999", "--L", "10", "--steps", "1,2,4,8,16",
                     "--json"]) == 0
    curve = json.loads(capsys.readouterr().out)["p_all_equal"]
    L = 10
    for k in (1, 2, 4, 8, 16):
        limit = sum((m / k) ** L * L / m * (1 - 1 / m) ** (L - 1) for m in range(1, k + 1))  # m = k - j + 1
        assert curve[str(k)] == pytest.approx(limit, abs=1e-12)
    one_line(capsys, toy_main, ["success-curve", "--V", "1" + "0" * 400], ["V:"])


@pytest.mark.parametrize("task", ["dirichlet", "markov"])
def test_a_vanishing_alpha_gives_the_point_mass_of_the_limit(capsys, task):
    """Dirichlet(alpha) tends to a uniformly drawn vertex as alpha -> 0: the joint is one state of mass 1,
    so H(p) = TC(p) = 0 and every k-step law is p."""
    from toy_tasks.distributions import make_task
    p = make_task(task, alpha=1e-300).probs
    assert p.max() == 1.0 and np.count_nonzero(p) == 1
    assert toy_main(["bound", "--task", task, "--alpha", "1e-300", "--steps", "1,4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["entropy"] == 0 and result["total_correlation"] == 0
    assert all(v == pytest.approx(0, abs=1e-12) for v in result["mdm_exact_kl"].values())


def test_one_position_and_float16_joints_are_joints(capsys, tmp_path):
    """A 1-D file is a joint of L = 1 (TC = 0, every k-step law is p); float16 values are read exactly
    into float64 and must sum to 1 within 1e-9 like any others."""
    p = np.array([0.5, 0.25, 0.125, 0.125])
    for dtype in (np.float64, np.float16):
        np.save(tmp_path / "p.npy", p.astype(dtype))
        assert toy_main(["bound", "--probs", str(tmp_path / "p.npy"), "--steps", "1,3", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["L"] == 1 and result["entropy"] == pytest.approx(1.75 * math.log(2), abs=1e-15)
        assert result["total_correlation"] == pytest.approx(0, abs=1e-15)
        assert all(v == pytest.approx(0, abs=1e-15) for v in result["mdm_exact_kl"].values())
    np.save(tmp_path / "p.npy", np.full(3, 1 / 3, dtype=np.float16))  # 3 x fl16(1/3) = 0.99976
    one_line(capsys, toy_main, ["bound", "--probs", str(tmp_path / "p.npy"), "--steps", "1"], ["path:"])


def test_experiment_workers_are_capped_at_the_cores(capsys, monkeypatch):
    import torch

    import toy_tasks.commands.experiment as experiment
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the command sets 1 before training

    def stop(preset, seed, methods, tasks, workers):
        raise ValueError(f"stop: {workers} workers")
    monkeypatch.setattr(experiment, "run_preset", stop)
    assert toy_main(["experiment", "--preset", "demo", "--workers", "100000"]) == 2
    cores = len(os.sched_getaffinity(0))
    assert capsys.readouterr().err.splitlines() == [f"workers: 100000 capped at the {cores} cores of this machine",
                                                    f"stop: {cores} workers"]


# ---- figures and output paths, before the work ------------------------------------------------------

@pytest.fixture
def no_training(monkeypatch):
    import toy_tasks.commands.experiment as experiment
    monkeypatch.setattr(experiment, "run_preset", lambda *a, **k: pytest.fail("the training started"))


@pytest.mark.parametrize("name", ["x.xyz", "x", *(["x.pgf"] if shutil.which("xelatex") is None else [])])
def test_figure_formats_are_checked_before_the_work(capsys, tmp_path, no_training, name):
    out = str(tmp_path / name)
    one_line(capsys, toy_main, ["experiment", "--preset", "demo", "--plot", out], ["plot:"])
    one_line(capsys, scale_main, ["evaluate", "--ckpt", "/nonexistent", "--out", str(tmp_path / "e.json"),
                                   "--plot", out], ["--plot:"])
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def run_log(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 3.0}) + "\n")
    return run


@pytest.mark.parametrize("out", ["x.xyz", "FOLDER", "/proc/sys/x.png"])
def test_scale_plot_out(capsys, tmp_path, run_log, out):
    (tmp_path / "FOLDER").mkdir()
    out = out if out.startswith("/") else str(tmp_path / out)
    one_line(capsys, scale_main, ["plot", str(run_log), "--out", out], ["--out:"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FOLDER", "run"]


def _read_only(monkeypatch, folder):
    """`folder` refuses new files as a read-only mount does (chmod stops nothing for root): the
    writability probe of imdm_lab.checks and every open for writing in it get EROFS."""
    import tempfile
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(str(folder)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_scale_plot_default_out_in_a_read_only_run(capsys, monkeypatch, run_log):
    _read_only(monkeypatch, run_log)
    line = one_line(capsys, scale_main, ["plot", str(run_log)], ["--out:"])
    assert "Read-only file system" in line and str(run_log / "metrics.png") in line
    assert sorted(p.name for p in run_log.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("argv,name", [
    (["train-tokenizer", "--data", "CORPUS", "--out", "/proc/sys/tok"], "--out:"),
    (["train-ngram-judge", "--tokenizer", "gpt2", "--data", "CORPUS", "--out", "/proc/sys/judge"], "--out:"),
    (["train-judge", "--data", "CORPUS", "--out", "/proc/sys/judge"], "out:"),
    (["report", "--eval", "/nonexistent.json", "--judge", "j", "--out", "/proc/sys/r.json"], "--out:"),
    (["pipeline", "--out", "/proc/sys/p"], "--out:"),
    (["pipeline", "--out", "FILE"], "--out:"),
    (["evaluate", "--ckpt", "/nonexistent", "--out", "/proc/sys/e.json"], "--out:"),
    (["coupling", "--teacher", "/nonexistent", "--n", "4", "--out", "/proc/sys/c"], "--out:")])
def test_read_only_outputs_are_refused_before_the_work(capsys, tmp_path, argv, name):
    """/proc/sys refuses new files even to root, like a read-only mount."""
    (tmp_path / "FILE").write_text("")
    argv = [a.replace("CORPUS", str(tmp_path / "none.txt")).replace("FILE", str(tmp_path / "FILE")) for a in argv]
    one_line(capsys, scale_main, argv, [name])


def test_a_disk_that_fills_at_the_end_is_one_line_naming_the_file(capsys, tmp_path, monkeypatch):
    import scale.commands.evaluate as ev
    monkeypatch.setattr(ev, "evaluate", lambda checkpoints, settings, samples=None: {"judge": "j", "entries": []})

    def full(staged, final):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write to an open file: no path
    monkeypatch.setattr(durable, "publish_file", full)
    out = tmp_path / "e.json"
    line = one_line(capsys, scale_main, ["evaluate", "--ckpt", "a", "--out", str(out), "--no-plot"],
                     ["python -m scale evaluate:"])
    assert line == f"python -m scale evaluate: {out}: No space left on device"
    assert list(tmp_path.iterdir()) == []  # the staging file went with the error


def test_torch_save_on_a_full_disk_is_the_os_error(tmp_path, monkeypatch):
    """torch.save reports a failed write of its file as a RuntimeError ('unexpected pos'); the checkpoint
    writer raises the OSError that caused it."""
    import io

    import torch

    import scale.checkpoints.checkpoint as ck

    class Full(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(ck, "open", lambda path, mode: Full(), raising=False)
    with pytest.raises(OSError) as err:
        ck._torch_save({"a": torch.zeros(10)}, tmp_path / "optimizer.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "optimizer.pt")


def test_a_commit_on_a_full_disk_names_the_last_checkpoint_and_resume_continues(capsys, tmp_path, monkeypatch):
    import scale.checkpoints.checkpoint as ck
    from scale.checkpoints.checkpoint import find_checkpoint, read_state
    run = tmp_path / "run"
    argv = ["train", "--config", "tiny-cpu", "--out", str(run), "--max-steps", "2",
            "--set", "train.checkpoint_every=1", "--set", "eval.every=0"]
    real, calls = ck._torch_save, []

    def full_at_step_2(obj, path):  # the disk fills while step 2 is committed
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(obj, path)
    monkeypatch.setattr(ck, "_torch_save", full_at_step_2)
    assert scale_main(argv) == 2
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("python -m scale train: ")
    assert "optimizer.pt: No space left on device; the last complete checkpoint is step 1 " in last
    assert last.endswith("--resume continues from it")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-00000001"]
    monkeypatch.undo()
    assert scale_main([*argv, "--resume"]) == 0 and read_state(find_checkpoint(run)).step == 2


# ---- bounds found in the data, before the long part --------------------------------------------------

def test_ngram_block_longer_than_the_text_is_refused_before_counting(capsys, tmp_path, monkeypatch):
    from scale.evaluation.ngram_judge import KneserNey
    monkeypatch.setattr(KneserNey, "fit", classmethod(lambda *a, **k: pytest.fail("the counting started")))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"{i:02d}.txt").write_text(f"document {i} says the cat sat on the mat. ")
    line = one_line(capsys, scale_main, ["train-ngram-judge", "--tokenizer", "gpt2", "--data", str(corpus),
                                          "--block", "100000000", "--out", str(tmp_path / "judge")], ["--block:"])
    assert "expected at most" in line and not (tmp_path / "judge").exists()


def test_bpe_vocabulary_over_memory_and_runs_too_long_for_the_trainer(capsys, tmp_path, token_cache):
    corpus = tmp_path / "long.txt"
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join("".join(rng.choice(list("abcdefghij"), 400_000)) for _ in range(10)))
    line = one_line(capsys, scale_main, ["train-tokenizer", "--data", str(corpus), "--out", str(tmp_path / "t"),
                                          "--vocab-size", "1000000000"], ["--vocab-size:"])
    assert "expected at most" in line
    cache = token_cache / "tokenizers"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".dead-train-bpe9-0.tmp-999999999").mkdir()  # left by a trainer killed before this one
    line = one_line(capsys, scale_main, ["train-tokenizer", "--data", str(corpus), "--out", str(tmp_path / "t")],
                     ["--data:"])
    assert "a run of 400000 characters" in line and not (tmp_path / "t").exists()
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []


def test_prefix_bytes_that_are_not_utf8(capsys):
    prefix = os.fsdecode(b"ab\xff\xfe")  # what argv holds for these bytes (surrogateescape)
    line = one_line(capsys, scale_main, ["sample", "--ckpt", "/nonexistent", "--prefix", prefix], ["--prefix:"])
    assert "b'\\xff\\xfe'" in line


@pytest.mark.parametrize("method,sources,name", [
    ("imdm-sdtt", ["--teacher", "A", "--init", "B"], "--teacher:"),
    ("imdm-eps-coupling", ["--teacher", "A", "--init", "B"], "--teacher:"),
    ("redi", ["--coupling", "C", "--teacher", "A"], "--teacher:"),
    ("sdtt", ["--teacher", "A", "--coupling", "C"], "--coupling:")])
def test_distill_refuses_a_source_its_method_ignores(capsys, tmp_path, method, sources, name):
    # none of A, B, C exists: the refusal comes before anything is read
    one_line(capsys, scale_main, ["distill", "--method", method, *sources, "--out", str(tmp_path / "d")], [name])
    assert not (tmp_path / "d").exists()


# ---- the pipeline checks every stage first; one writer per folder ----------------------------------

@pytest.mark.parametrize("extra,name", [
    (["--args", "evaluate=--n 0"], "pipeline: stage 'evaluate': --n:"),
    (["--args", "imsdtt=--set train.lr=-1"], "pipeline: stage 'imsdtt': train.lr:"),
    (["--args", "coupling=--steps 1000000000"], "pipeline: stage 'coupling': --steps:"),
    (["--args", "evaluate=--n '0"], "--args:"),
    (["--launcher", "torchrun 'x"], "--launcher:"),
    (["--launcher", "/nonexistent/torchrun --nproc_per_node 2"], "--launcher:")])
def test_pipeline_refuses_before_the_first_stage(capsys, tmp_path, extra, name):
    one_line(capsys, scale_main, ["pipeline", "--out", str(tmp_path / "p"), *extra], [name])
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["pipeline", "coupling"])
def test_a_folder_being_written_is_refused_to_a_second_writer(capsys, tmp_path, command, tiny_checkpoint):
    out = tmp_path / "out"
    argv = {"pipeline": ["pipeline", "--out", str(out)],
            "coupling": ["coupling", "--teacher", str(tiny_checkpoint(0)), "--n", "4", "--steps", "2",
                         "--out", str(out)]}[command]
    with durable.writer(out, "--out"):  # a running writer (flock: any other open of the lock conflicts)
        line = one_line(capsys, scale_main, argv, ["--out:"])
    assert "is being written by another running process" in line
    assert sorted(p.name for p in out.iterdir()) == [durable.LOCK]


def test_a_reader_that_leaves_the_pipe_early_gets_no_traceback():
    """`python -m scale pipeline ... --dry-run | head -0`: stdout's reader is gone before the first line, so
    the write fails with EPIPE; the command ends with status 1 and nothing on stderr (no BrokenPipeError)."""
    import subprocess
    import sys
    read, write = os.pipe()
    os.close(read)  # the reader leaves before the writer writes
    proc = subprocess.run([sys.executable, "-m", "scale", "pipeline", "--preset", "text8-cpu", "--out", "runs/x",
                           "--dry-run"], stdout=write, stderr=subprocess.PIPE,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    os.close(write)
    assert proc.returncode == 1 and proc.stderr.decode() == "", proc.stderr.decode()
