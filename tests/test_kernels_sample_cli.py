"""`python -m toy_tasks sample`: output contract, reproducibility, errors."""
import subprocess
import sys

import numpy as np
import pytest

from imdm_lab import exact
from toy_tasks.cli import main
from toy_tasks.distributions import make_task


def _run(tmp_path, *extra, name="s.npy"):
    out = tmp_path / name
    code = main(["sample", *extra, "--out", str(out)])
    assert code == 0
    return np.load(out)


def test_writes_n_by_l_int64_in_range(tmp_path, capsys):
    x = _run(tmp_path, "--task", "parity", "--V", "3", "--L", "4", "--model", "oracle-mdm", "--steps", "2",
             "--samples", "500", "--seed", "1")
    assert x.shape == (500, 4) and x.dtype == np.int64 and x.min() >= 0 and x.max() < 3
    assert "mean network calls per batch: 2.000" in capsys.readouterr().out


def test_one_step_oracle_imdm_stays_on_the_support_and_ignores_batching(tmp_path):
    args = ["--task", "markov", "--task-seed", "4", "--V", "3", "--L", "3", "--model", "oracle-imdm",
            "--steps", "1", "--samples", "3000", "--seed", "9"]
    a = _run(tmp_path, *args, name="a.npy")
    b = _run(tmp_path, *args, "--batch-size", "700", name="b.npy")
    # one step of partition-and-map is a function of the seeded labels only
    assert np.array_equal(a, b)
    p = make_task("markov", V=3, L=3, seed=4).probs
    assert (p[tuple(a.T)] > 0).all()
    c = _run(tmp_path, *args[:-1], "10", name="c.npy")
    assert not np.array_equal(a, c)


def test_probs_file_and_fix_eps(tmp_path):
    p = make_task("align", V=4, L=2).probs
    np.save(tmp_path / "p.npy", p)
    x = _run(tmp_path, "--probs", str(tmp_path / "p.npy"), "--model", "oracle-mdm", "--steps", "1",
             "--samples", "4000", "--schedule", "loglinear", "--fix-eps")
    # one exact-MDM step draws both tokens independently: they agree with probability 1/4
    agree = (x[:, 0] == x[:, 1]).mean()
    assert abs(agree - 0.25) < 5 * np.sqrt(0.25 * 0.75 / 4000)
    assert abs(exact.mdm_law(p, 1)[x[:, 0], x[:, 1]].mean() - 1 / 16) < 1e-12


@pytest.mark.parametrize("args, start", [
    (["--task", "align", "--model", "oracle-x", "--steps", "1", "--samples", "5"],
     "python -m toy_tasks sample: error: argument --model: invalid choice: 'oracle-x'"),
    (["--task", "align", "--model", "oracle-mdm", "--steps", "0", "--samples", "5"], "steps: expected an integer"),
    (["--task", "align", "--model", "oracle-mdm", "--steps", "two", "--samples", "5"],
     "steps: expected comma-separated integers >= 1"),
    (["--task", "align", "--model", "oracle-mdm", "--steps", "1,2", "--samples", "5"],
     "steps: expected one step count (sample writes one array; run it once per count), got '1,2'"),
    (["--task", "align", "--model", "oracle-mdm", "--steps", "1", "--samples", "0"], "samples:"),
    (["--task", "align", "--model", "oracle-mdm", "--steps", "1", "--samples", "5", "--schedule", "x"],
     "schedule:"),
    (["--task", "nope", "--model", "oracle-mdm", "--steps", "1", "--samples", "5"], "task:")])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, start):
    assert main(["sample", *args, "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1
    assert not (tmp_path / "x.npy").exists()


def test_module_entry_point_reports_errors_without_traceback():
    res = subprocess.run([sys.executable, "-m", "toy_tasks", "sample", "--task", "align", "--model",
                          "oracle-mdm", "--steps", "1", "--samples", "10", "--out", "/proc/x.npy"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("out:") and "Traceback" not in res.stderr
