"""`python -m toy_tasks`: the JSON contract, values checked against independent enumerations, errors."""
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toy_tasks.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run_json(capsys, *argv):
    assert main(list(argv) + ["--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    return json.loads(out)


def align_by_assignments(V, L, k):
    """Enumerate the k^L uniform reveal assignments: the first non-empty step reveals n tokens, which
    agree with probability V^(1-n) (success) and carry conditional TC (n-1) ln V (the whole bound)."""
    success = bound = 0.0
    for r in itertools.product(range(k), repeat=L):
        n = r.count(min(r))
        success += V ** (1 - n) / k**L
        bound += (n - 1) * math.log(V) / k**L
    return success, bound


def test_bound_json_contract_on_align(capsys):
    V, L = 4, 3
    result = run_json(capsys, "bound", "--task", "align", "--V", str(V), "--L", str(L), "--steps", "1,2,3")
    assert set(result) == {"V", "L", "schedule", "entropy", "total_correlation", "mdm_exact_kl", "stepwise_bound"}
    assert (result["V"], result["L"], result["schedule"]) == (V, L, "linear")
    assert result["entropy"] == pytest.approx(math.log(V), abs=1e-12)
    assert result["total_correlation"] == pytest.approx((L - 1) * math.log(V), abs=1e-12)
    assert list(result["mdm_exact_kl"]) == ["1", "2", "3"] == list(result["stepwise_bound"])
    for k in (1, 2, 3):
        success, bound = align_by_assignments(V, L, k)
        # p_k puts success/V on each constant sequence, so KL(p || p_k) = -ln(success).
        assert result["mdm_exact_kl"][str(k)] == pytest.approx(-math.log(success), abs=1e-12)
        assert result["stepwise_bound"][str(k)] == pytest.approx(bound, abs=1e-12)


def test_bound_from_a_file_equals_the_named_task(capsys, tmp_path):
    p = np.zeros((3, 3))
    p[[0, 1, 2], [0, 1, 2]] = 1 / 3
    np.save(tmp_path / "copy.npy", p)
    from_file = run_json(capsys, "bound", "--probs", str(tmp_path / "copy.npy"), "--steps", "2",
                         "--schedule", "loglinear")
    from_task = run_json(capsys, "bound", "--task", "align", "--V", "3", "--L", "2", "--steps", "2",
                         "--schedule", "loglinear")
    assert from_file == from_task
    assert from_file["mdm_exact_kl"]["2"] == pytest.approx(math.log(1.5), abs=1e-12)
    assert from_file["stepwise_bound"]["2"] == pytest.approx(math.log(3) / 2, abs=1e-12)


def test_the_task_seed_is_task_seed_and_seed_is_no_task_option(capsys):
    """bound --task-seed reaches the task (its entropy summed by hand from the seeded joint); --seed, a
    sampler's or a training seed in the toy commands, is no option of bound."""
    from toy_tasks.distributions import make_task
    args = ["bound", "--task", "dirichlet", "--V", "3", "--L", "2", "--steps", "1"]
    result = run_json(capsys, *args, "--task-seed", "5")
    p = make_task("dirichlet", V=3, L=2, seed=5).probs.ravel()
    assert result["entropy"] == pytest.approx(-sum(q * math.log(q) for q in p if q > 0), abs=1e-12)
    assert run_json(capsys, *args, "--task-seed", "6")["entropy"] != result["entropy"]
    assert main([*args, "--seed", "5"]) == 2
    assert "unrecognized arguments: --seed 5" in capsys.readouterr().err


def test_bound_table_is_readable(capsys):
    assert main(["bound", "--task", "parity", "--V", "2", "--L", "3", "--steps", "1,4"]) == 0
    out = capsys.readouterr().out
    assert "task parity (V=2 L=3), schedule linear; nats" in out
    assert f"total correlation TC(p) {math.log(2):.6f}" in out
    assert out.strip().splitlines()[-2].split()[0] == "1"


def test_success_curve_of_the_paper_task(capsys):
    result = run_json(capsys, "success-curve", "--V", "50000", "--L", "10", "--steps", "1,2,4,8,16")
    assert (result["V"], result["L"], result["schedule"]) == (50000, 10, "linear")
    # (L/k) sum_{m<k} (m/k)^(L-1), up to O(1/V): see tests/test_exact.py.
    expected = [0.0, 0.00977, 0.1926, 0.4905, 0.7167]
    assert [round(v, 4) for v in result["p_all_equal"].values()] == pytest.approx(expected, abs=1e-4)
    assert main(["success-curve", "--steps", "2"]) == 0
    assert "0.0098" in capsys.readouterr().out


def test_success_curve_matches_enumeration_on_small_align(capsys):
    result = run_json(capsys, "success-curve", "--V", "3", "--L", "4", "--steps", "1,2,3")
    for k in (1, 2, 3):
        assert result["p_all_equal"][str(k)] == pytest.approx(align_by_assignments(3, 4, k)[0], abs=1e-13)


@pytest.mark.parametrize("argv,message", [
    (["bound", "--task", "align", "--steps", "0"], "steps: expected an integer >= 1, got 0"),
    (["bound", "--task", "align", "--steps", "1,two"], "steps: expected comma-separated integers >= 1"),
    (["bound", "--task", "align", "--steps", "2,2"], "steps: expected distinct step counts"),
    (["bound", "--task", "nope", "--steps", "1"], "task: expected one of"),
    (["bound", "--task", "align", "--steps", "1", "--schedule", "square"], "schedule: expected one of"),
    (["bound", "--task", "align", "--V", "1", "--steps", "1"], "V: expected an integer >= 2, got 1"),
    (["bound", "--task", "align", "--V", "50000", "--L", "10", "--steps", "1"], "V, L: expected a joint whose"),
    (["bound", "--probs", "missing.npy", "--steps", "1"], "path: expected a readable .npy file"),
    (["bound", "--task", "align", "--V", "x", "--steps", "1"], "error: argument --V: invalid int value"),
    (["bound", "--steps", "1"], "error: one of the arguments --task --probs is required"),
    (["success-curve", "--L", "0"], "L: expected an integer >= 1, got 0"),
    (["fly"], "error: argument command: invalid choice"),
])
def test_errors_exit_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and message in captured.err


def test_module_entry_point_exit_code_and_no_traceback():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = subprocess.run([sys.executable, "-m", "toy_tasks", "bound", "--task", "align", "--steps", "0"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "steps: expected an integer >= 1, got 0"
    good = subprocess.run([sys.executable, "-m", "toy_tasks", "bound", "--task", "align", "--V", "3", "--L", "2",
                           "--steps", "1,2", "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert good.returncode == 0
    assert json.loads(good.stdout)["total_correlation"] == pytest.approx(math.log(3), abs=1e-12)


def test_bound_plot_draws_the_curves_and_checks_its_format_first(tmp_path, capsys):
    out = tmp_path / "bound.png"
    assert main(["bound", "--task", "align", "--V", "3", "--L", "2", "--steps", "1,2", "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    bad = tmp_path / "bound.xyz"
    assert main(["bound", "--task", "align", "--V", "3", "--L", "2", "--steps", "1,2", "--plot", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("--plot:") and not bad.exists()
