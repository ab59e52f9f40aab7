"""Bad input to every command line ends with exit status 2 and exactly one line on stderr naming the
argument, before any long work (the outputs these commands would write are checked not to exist); the
kernels behind them refuse or handle the extremes (tiny temperatures, huge step counts, hostile files)."""
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from refusals import one_line, write_coupling

from imdm_lab.checks import check_writable, parse_steps
from imdm_lab.exact import Marginals, check_steps_cost, mdm_law
from imdm_lab.process import Process
from imdm_lab.sampling import SamplerOptions, sample, token_weights_
from scale.cli import main as scale_main
from scale.training.coupling import FORMAT, Coupling
from toy_tasks.cli import main as toy_main

pytestmark = pytest.mark.usefixtures("token_cache")

TINY_TOY = ["--task", "align", "--V", "4", "--L", "2"]




# ---- toy_tasks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", ["100000000000", "1000000000", "100000000000000000000", "1,5011"])
def test_bound_refuses_step_counts_over_the_budget_naming_the_largest(capsys, steps):
    line = one_line(capsys, toy_main, ["bound", "--task", "align", "--V", "16", "--L", "4", "--steps", steps],
                     ["steps:"])
    # (2V+1)^L = 33^4 products and 10^4 x 3^4 for the array operations per step, against 1e10
    assert f"expected at most {10**10 // (33**4 + 10**4 * 3**4)} " in line


def test_success_curve_refuses_step_counts_over_the_memory_budget(capsys):
    line = one_line(capsys, toy_main, ["success-curve", "--V", "8", "--L", "3", "--steps", "1,10000000000"],
                     ["steps:"])
    # 3 (L+1)^2 + 8 L + 8 = 80 float64 per step in 4 GiB
    assert f"expected at most {4 * 2**30 // (8 * 80)} " in line


def test_largest_admitted_step_count_runs():
    m = Marginals(np.full((2, 2), 0.25))
    most = 10**10 // (5**2 + 10**4 * 3**2)
    assert check_steps_cost(2, 2, most, law=True) == most
    with pytest.raises(ValueError, match="steps: expected at most"):
        mdm_law(m, most + 1)
    np.testing.assert_allclose(mdm_law(m, 3), 0.25)  # independent positions: every k gives p back


def test_npy_header_claiming_a_huge_shape_is_refused_before_reading(capsys, tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:  # a header only: 10^6 x 10^6 x 10^6 x 10^6 float64, no data at all
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**6,) * 4})
    assert path.stat().st_size < 200
    line = one_line(capsys, toy_main, ["bound", "--probs", str(path), "--steps", "1"], ["path:"])
    assert "V=1000000, L=4" in line


@pytest.mark.parametrize("content", ["object", "npz", "truncated", "ragged"])
def test_npy_files_of_another_kind_are_refused(capsys, tmp_path, content):
    path = tmp_path / "p.npy"
    if content == "object":
        np.save(path, np.array([None, 1], dtype=object), allow_pickle=True)
    elif content == "npz":
        np.savez(tmp_path / "p", a=np.ones(3))
        path = tmp_path / "p.npz"
    elif content == "ragged":
        np.save(path, np.full((2, 3), 1 / 6))
    else:
        np.save(path, np.full((2, 2), 0.25))
        path.write_bytes(path.read_bytes()[:-8])
    one_line(capsys, toy_main, ["bound", "--probs", str(path), "--steps", "1"], ["path:"])


def test_sample_out_a_folder_leaves_nothing_behind(capsys, tmp_path):
    one_line(capsys, toy_main, ["sample", *TINY_TOY, "--model", "oracle-mdm", "--steps", "1", "--samples", "4",
                                 "--out", str(tmp_path)], ["out:"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["/proc/x.npy", "/proc/no/such/x.npy", "FILE/x.npy"])
def test_sample_out_not_writable(capsys, tmp_path, out):
    (tmp_path / "FILE").write_text("")
    out = out.replace("FILE", str(tmp_path / "FILE"))
    one_line(capsys, toy_main, ["sample", *TINY_TOY, "--model", "oracle-mdm", "--steps", "1", "--samples", "4",
                                 "--out", out], ["out:"])


def test_sample_out_in_new_folders_is_written(capsys, tmp_path):
    out = tmp_path / "a" / "b" / "s.npy"
    assert toy_main(["sample", *TINY_TOY, "--model", "oracle-mdm", "--steps", "1", "--samples", "4",
                     "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 2) and sorted(p.name for p in out.parent.iterdir()) == ["s.npy"]


@pytest.mark.parametrize("flag", ["--plot", "--json"])
def test_experiment_outputs_checked_before_training(capsys, tmp_path, flag):
    # the check comes before the training, which would take minutes: a run reaching it would time out
    one_line(capsys, toy_main, ["experiment", "--preset", "demo", flag, "/proc/x.png"], [flag[2:] + ":"])


@settings(max_examples=25, deadline=None)
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31, max_value=2**70)))
def test_one_seed_range_for_every_command(seed):
    commands = [["sample", *TINY_TOY, "--model", "oracle-mdm", "--steps", "1", "--samples", "1",
                 "--out", "/proc/x.npy", "--seed", str(seed)],
                ["experiment", "--preset", "demo", "--seed", str(seed)]]
    for argv in commands:
        assert _error_line(toy_main, argv).startswith("seed: expected an integer in [0, 2^31)")
    # a task's seed has the same range, under its own option in every command
    task = ["--task", "dirichlet", "--V", "2", "--L", "2", "--steps", "1", "--task-seed", str(seed)]
    for argv in (["bound", *task], ["sample", *task, "--model", "oracle-mdm", "--samples", "1", "--out", "x.npy"]):
        assert _error_line(toy_main, argv).startswith("task-seed: expected an integer in [0, 2^31)")
    # the scale commands keep the same range (their options are named with the dashes)
    assert _error_line(scale_main, ["sample", "--ckpt", "/nonexistent", "--seed", str(seed)]).startswith(
        "--seed: expected an integer in [0, 2^31)")


def _error_line(main, argv) -> str:
    """The one stderr line of a command line that must exit 2 (capsys does not reset between hypothesis
    examples, so stderr is captured here)."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


BAD_STEP_LISTS = ["2,2", "1,,2", "", "0", "-1", "1,a", "1.5", ",", "1,2,1"]


@pytest.mark.parametrize("text", BAD_STEP_LISTS)
def test_toy_and_scale_refuse_the_same_step_lists(capsys, text):
    one_line(capsys, toy_main, ["bound", *TINY_TOY, "--steps", text], ["steps:"])
    one_line(capsys, scale_main, ["sample", "--ckpt", "/nonexistent", "--steps", text], ["--steps:"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=-3, max_value=6), min_size=1, max_size=5))
def test_step_list_rule(values):
    text = ",".join(map(str, values))
    if min(values) >= 1 and len(set(values)) == len(values):
        assert parse_steps("steps", text) == values
    else:
        with pytest.raises(ValueError, match="^steps: expected"):
            parse_steps("steps", text)


# ---- the shared writability check --------------------------------------------------------------------

def test_writability_probe_leaves_nothing_and_accepts_new_folders(tmp_path):
    assert check_writable("out", tmp_path / "new" / "deeper" / "f.json") == tmp_path / "new" / "deeper" / "f.json"
    assert check_writable("out", tmp_path / "run", folder=True) == tmp_path / "run"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("x")
    for path, folder in ((tmp_path, False), (tmp_path / "f", True), (tmp_path / "f" / "x", False)):
        with pytest.raises(ValueError, match="^out: expected"):
            check_writable("out", path, folder=folder)
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


# ---- the sampler's temperature ------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from([torch.float64, torch.float32]), scale=st.floats(0.0, 1.0),
       magnitude=st.sampled_from([1.0, 1e10, 1e30]),
       logits=st.lists(st.integers(-2**20, 2**20), min_size=3, max_size=6, unique=True))
def test_tiny_temperature_gives_the_argmax(dtype, scale, magnitude, logits):
    tiny = torch.finfo(dtype).tiny
    T = tiny * (1e-20 / tiny) ** scale  # from the smallest normal number up to 1e-20, log-uniform
    z = (torch.tensor([logits], dtype=torch.float64) * magnitude).to(dtype)  # gaps >= magnitude >> T
    w = token_weights_(z.clone(), len(logits), T)  # the mask class lies outside the row
    expected = torch.zeros_like(w)
    expected[0, z[0].argmax()] = 1.0
    assert torch.equal(w, expected)


def test_temperature_one_is_unchanged_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float64, torch.float32):
        z = (torch.randn(7, 11, generator=g, dtype=torch.float64) * 5).to(dtype)
        z[:, 3] = -1e6  # the SUBS mask logit
        reference = torch.exp(z - z.max(-1, keepdim=True).values)  # exp(z - max), the T = 1 weights
        assert torch.equal(token_weights_(z.clone(), 3, 1.0), reference)


class _FixedLogits:
    """A denoiser whose logits favour class 2 at every position; class 3 is the mask."""

    def __call__(self, x, eps, t):
        logits = torch.tensor([0.0, 1.0, 1.0 + 1e-12, -1e6], dtype=torch.float64)
        return logits.expand(*x.shape, 4).clone()


@pytest.mark.parametrize("dtype,T", [(torch.float64, 1e-300), (torch.float32, 2e-38)])
def test_sampler_at_a_tiny_temperature_draws_the_argmax(dtype, T):
    out = sample(_FixedLogits(), batch_size=5, length=3, steps=2, process=Process(3),
                 generator=torch.Generator().manual_seed(0), options=SamplerOptions(temperature=T, dtype=dtype))
    expected = 2 if dtype == torch.float64 else 1  # 1 + 1e-12 rounds to 1 in float32: a tie, both drawable
    assert set(out.tokens.flatten().tolist()) <= ({2} if dtype == torch.float64 else {1, 2})
    assert expected in out.tokens.flatten().tolist()


@pytest.mark.parametrize("dtype,T", [(torch.float64, 1e-308), (torch.float32, 1e-38), (torch.float32, 1e-50)])
def test_temperatures_below_the_smallest_normal_number_are_refused(dtype, T):
    with pytest.raises(ValueError, match="^temperature: expected a number >="):
        sample(_FixedLogits(), batch_size=1, length=2, steps=1, process=Process(3),
               options=SamplerOptions(temperature=T, dtype=dtype))


# ---- coupling folders ----------------------------------------------------------------------------------

VOCAB, MASK, LENGTH = 10, 10, 4


def _coupling(folder: Path, n: int = 6, shard_size: int = 4) -> Path:
    """A coupling folder written by hand in the layout of `python -m scale coupling`."""
    return write_coupling(folder, {
        "format": FORMAT, "teacher": "/runs/teacher", "teacher_step": 5, "weights": "ema", "n": n, "steps": 8,
        "fix_eps": False, "seed": 0, "shard_size": shard_size, "t_min": 1e-3, "length": LENGTH,
        "num_classes": VOCAB + 1, "mask_id": MASK, "schedule": "loglinear", "labels": "rand",
        "tokenizer": "gpt2", "dataset": "wiki", "num_blocks": 100}, (0, VOCAB), np.uint8)


def test_a_valid_coupling_opens(tmp_path):
    c = Coupling(_coupling(tmp_path / "c"))
    assert len(c) == 6 and c.length == LENGTH and c.x_0.dtype == torch.int64


def _corrupt(shard: Path, case: str) -> str:
    """Break one field of the shard; returns the field the error must name."""
    if case == "negative t":
        np.save(shard / "t.npy", -np.load(shard / "t.npy"))
        return "t.npy"
    if case == "nan t":
        t = np.load(shard / "t.npy")
        t[1] = np.nan
        np.save(shard / "t.npy", t)
        return "t.npy"
    if case == "token >= vocab at a masked position":
        x_t, x_0 = np.load(shard / "x_t.npy"), np.load(shard / "x_0.npy")
        x_0[x_t == MASK] = VOCAB + 5
        np.save(shard / "x_0.npy", x_0)
        return "x_0.npy"
    if case == "kept token changed":
        x_t = np.load(shard / "x_t.npy")
        x_t[x_t != MASK] = (x_t[x_t != MASK] + 1) % VOCAB
        np.save(shard / "x_t.npy", x_t)
        return "x_t.npy"
    if case == "missing x_t":
        (shard / "x_t.npy").unlink()
        return "x_t.npy"
    if case == "other length":
        np.save(shard / "x_0.npy", np.zeros((2, LENGTH + 1), np.uint8))
        return "x_0.npy"
    if case == "other row count":
        np.save(shard / "seed.npy", np.load(shard / "seed.npy")[:1])
        return "seed.npy"
    if case == "object seed":
        np.save(shard / "seed.npy", np.array([object()] * 2, dtype=object), allow_pickle=True)
        return "seed.npy"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["negative t", "nan t", "token >= vocab at a masked position", "kept token changed",
                                  "missing x_t", "other length", "other row count", "object seed"])
def test_a_bad_coupling_shard_is_named_with_its_field(tmp_path, case):
    folder = _coupling(tmp_path / "c")
    field = _corrupt(folder / "shard-000001", case)
    with pytest.raises(ValueError) as err:
        Coupling(folder)
    assert str(err.value).startswith("coupling: shard-000001") and field in str(err.value), str(err.value)


# ---- scale -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run5(tiny_checkpoint):
    """A tiny-cpu checkpoint at step 5 (what `train --max-steps 5` leaves), written without training."""
    return tiny_checkpoint(5)


def _train(out, *sets):
    return ["train", "--config", "tiny-cpu", "--out", str(out), *[a for s in sets for a in ("--set", s)]]


@pytest.mark.parametrize("override,name", [("train.lr=-1e-4", "train.lr:"), ("train.lr=nan", "train.lr:"),
                                           ("train.lr=inf", "train.lr:"),
                                           ("eval.sample_steps=[0]", "eval.sample_steps:"),
                                           ("eval.sample_steps=[2,2]", "eval.sample_steps:"),
                                           ("train.betas=[0.9]", "train.betas:"), ("train.seed=-1", "train.seed:"),
                                           ("train.grad_clip=0", "train.grad_clip:")])
def test_config_values_refused_before_set_up(capsys, tmp_path, override, name):
    one_line(capsys, scale_main, _train(tmp_path / "run", override), [name])
    assert not (tmp_path / "run").exists()


def test_distill_divergence_refused_before_set_up(capsys, tmp_path, run5):
    one_line(capsys, scale_main, ["distill", "--method", "imdm-sdtt", "--teacher", str(run5), "--out",
                                   str(tmp_path / "d"), "--set", "distill.divergence=xx"], ["distill.divergence:"])
    assert not (tmp_path / "d").exists()


def test_binary_corpus_names_its_file(capsys, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(bytes(range(256)) * 4)
    line = one_line(capsys, scale_main, _train(tmp_path / "run", f"data.dataset={corpus}"), ["data:"])
    assert str(corpus) in line


def test_out_a_file(capsys, tmp_path):
    out = tmp_path / "f"
    out.write_text("")
    one_line(capsys, scale_main, _train(out), ["--out:"])
    one_line(capsys, scale_main, ["import-mdlm", "--from", str(tmp_path / "none.ckpt"), "--out", str(out)],
              ["--out:"])


@pytest.mark.parametrize("argv", [["sample", "--ckpt", "CKPT", "--out", "/proc/x/y.json"],
                                  ["sample", "--ckpt", "CKPT", "--out", "FILE/y.json"],
                                  ["evaluate", "--ckpt", "CKPT", "--out", "/proc/e.json"],
                                  ["evaluate", "--ckpt", "CKPT", "--out", "FILE/e.json"],
                                  ["evaluate", "--ckpt", "CKPT", "--out", "OK/e.json", "--plot", "/proc/e.png"]])
def test_scale_outputs_checked_before_loading(capsys, tmp_path, argv):
    (tmp_path / "FILE").write_text("")
    argv = [a.replace("CKPT", str(tmp_path / "no-ckpt")).replace("FILE", str(tmp_path / "FILE"))
            .replace("OK", str(tmp_path / "ok")) for a in argv]
    # a missing --ckpt would be the first error of a command checking its output late
    one_line(capsys, scale_main, argv, ["--out:", "--plot:"])


@pytest.mark.parametrize("argv,name", [(["sample", "--ckpt", "X", "--length", "0"], "--length:"),
                                       (["sample", "--ckpt", "X", "--seed", "-1"], "--seed:"),
                                       (["sample", "--ckpt", "X", "--n", "0"], "--n:"),
                                       (["sample", "--ckpt", "X", "--n", "abc"], "--n"),
                                       (["sample"], "--ckpt"),
                                       (["sample", "--ckpt", "X", "--no-such-flag"], "--no-such-flag"),
                                       (["train", "--config", "tiny-cpu"], "--out"),
                                       (["train-judge", "--out", "OUT", "--device", "tpu"], "device:"),
                                       (["train-judge", "--out", "OUT", "--device", "cuda:7"], "device:"),
                                       (["train-judge", "--out", "OUT", "--lr", "nan"], "lr:")])
def test_arguments_and_usage_errors_areone_line(capsys, tmp_path, argv, name):
    argv = [a.replace("OUT", str(tmp_path / "judge")) for a in argv]
    one_line(capsys, scale_main, argv, [name])
    assert not (tmp_path / "judge").exists()


def test_judge_folder_with_garbage_weights(capsys, tmp_path):
    from transformers import GPT2Config
    judge = tmp_path / "judge"
    GPT2Config(vocab_size=50257, n_positions=16, n_layer=1, n_embd=8, n_head=2).save_pretrained(judge)
    (judge / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header" + os.urandom(64))
    line = one_line(capsys, scale_main, ["evaluate", "--ckpt", str(tmp_path / "none"), "--judge", str(judge),
                                          "--out", str(tmp_path / "e.json")], ["judge:"])
    assert str(judge) in line and not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("command", ["train", "distill"])
def test_resume_to_a_step_already_passed(capsys, tmp_path, run5, command):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(run5, run)
    before = sorted(p.name for p in run.rglob("*"))
    argv = _train(run) if command == "train" else ["distill", "--method", "imdm-sdtt", "--teacher", str(run5),
                                                    "--out", str(run)]
    line = one_line(capsys, scale_main, argv + ["--resume", "--max-steps", "2"], ["--max-steps:"])
    assert "step 5" in line and sorted(p.name for p in run.rglob("*")) == before


def test_evaluate_refuses_to_write_a_non_finite_metric(capsys, tmp_path, monkeypatch):
    import scale.commands.evaluate as ev
    entry = {"checkpoint": "runs/a", "label": "a", "steps": 1, "gen_ppl": 12.5, "entropy": 4.0, "mauve": None}
    monkeypatch.setattr(ev, "evaluate", lambda checkpoints, settings, samples=None: {
        "judge": "j", "checkpoints": [{"checkpoint": "runs/a", "val_ppl": math.nan, "zero_shot": {"lm1b": None}}],
        "entries": [entry]})
    out = tmp_path / "e.json"
    line = one_line(capsys, scale_main, ["evaluate", "--ckpt", "runs/a", "--out", str(out)], ["val_ppl:"])
    assert "runs/a" in line and not out.exists()
    assert ev.check_finite({"entries": [entry]}) == {"entries": [entry]}
    with pytest.raises(ValueError, match=r"^gen_ppl: expected a finite number, got inf \(checkpoint runs/a\)"):
        ev.check_finite({"entries": [{**entry, "gen_ppl": math.inf}]})
