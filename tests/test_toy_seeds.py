"""An experiment over several training seeds: means and ranges, the per-seed rows, and where a run falls."""
import json

import pytest

from toy_tasks import experiment
from toy_tasks.cli import main
from toy_tasks.experiment import Preset, TaskPlan
from toy_tasks.methods import Budget
from toy_tasks.seeds import aggregate, compare, parse_seeds


def _result(seed, kls, success):
    rows = [{"method": m, "steps": 1, "kl": kl, "kl_ci": None, "success": s, "coverage": 1.0, "entropy": 1.0,
             "distinct": 4, "nfe": 1.0, "kl_estimator": "exact"} for (m, kl), s in zip(kls.items(), success,
                                                                                         strict=True)]
    task = {"task": "align", "V": 4, "L": 2, "params": {"V": 4, "L": 2}, "total_correlation": 1.386,
            "mdm_exact_kl": {"1": 1.386}, "stepwise_bound": {"1": 1.386}, "eps_output_norm": {"a": seed},
            "train_seconds": {}, "parts": [], "results": rows}
    return {"preset": "demo", "seed": seed, "tasks": [task]}


def test_aggregate_keeps_every_seed_and_reports_mean_and_range():
    results = [_result(0, {"a": 1.0, "b": None}, [0.5, 0.0]), _result(1, {"a": 2.0, "b": 3.0}, [0.25, 0.1]),
               _result(2, {"a": 6.0, "b": 5.0}, [0.0, 0.2])]
    out = aggregate(results)
    assert out["seeds"] == [0, 1, 2]
    a, b = out["tasks"][0]["results"]
    assert a["kl"] == pytest.approx(3.0) and a["kl_range"] == [1.0, 6.0]
    assert a["success"] == pytest.approx(0.25) and a["success_range"] == [0.0, 0.5]
    assert [s["kl"] for s in a["seeds"]] == [1.0, 2.0, 6.0] and [s["seed"] for s in a["seeds"]] == [0, 1, 2]
    # a seed without a KL (a support sequence never drawn) is left out of the mean, kept in the list
    assert b["kl"] == pytest.approx(4.0) and b["kl_range"] == [3.0, 5.0] and b["seeds"][0]["kl"] is None
    assert out["tasks"][0]["by_seed"]["eps_output_norm"] == {"0": {"a": 0}, "1": {"a": 1}, "2": {"a": 2}}


def test_aggregate_refuses_repeated_seeds_and_different_rows():
    with pytest.raises(ValueError, match="distinct seeds"):
        aggregate([_result(0, {"a": 1.0}, [0.0]), _result(0, {"a": 1.0}, [0.0])])
    with pytest.raises(ValueError, match="different rows"):
        aggregate([_result(0, {"a": 1.0}, [0.0]), _result(1, {"b": 1.0}, [0.0])])


def test_compare_says_inside_below_or_above_the_committed_range():
    committed = aggregate([_result(s, {"a": kl, "b": 1.0}, [0.0, 0.0]) for s, kl in ((0, 1.0), (1, 2.0), (2, 3.0))])
    lines = compare(_result(5, {"a": 2.5, "b": 0.5}, [0.0, 0.0]), committed)
    assert lines == ["align a one-step KL 2.500: inside the committed range 1.000-3.000 over seeds 0-2",
                     "align b one-step KL 0.500: below the committed range 1.000-1.000 over seeds 0-2",
                     "1 of 2 one-step KLs inside the committed ranges"]
    assert "above" in compare(_result(5, {"a": 3.5, "b": 1.0}, [0.0, 0.0]), committed)[0]
    # a committed seed run again: compared with its own value too
    again = compare(_result(1, {"a": 2.0, "b": 1.5}, [0.0, 0.0]), committed)
    assert again[0].endswith("; bit-identical to the committed seed 1")
    assert again[1].endswith("; the committed seed 1 gave 1.000")
    assert again[2] == ("1 of 2 one-step KLs inside the committed ranges, 1 of 2 bit-identical to the committed "
                        "seed 1 (all of them on the machine that wrote the file)")
    with pytest.raises(ValueError, match="--seeds"):
        compare(committed, _result(0, {"a": 1.0}, [0.0]))


@pytest.mark.parametrize("text, want", [("0,1,2", [0, 1, 2]), ("0-3", [0, 1, 2, 3]), ("7", [7])])
def test_parse_seeds(text, want):
    assert parse_seeds(text) == want


@pytest.fixture
def tiny_preset(monkeypatch):
    budget = Budget(elbo_steps=12, round_steps=1, sdtt_start=2, redi_pairs=8, redi_teacher_steps=2, redi_steps=1,
                    coupling_steps=1, batch=16)
    preset = Preset(tasks=(TaskPlan("align", {"V": 3, "L": 2}, ("mdm", "imdm-elbo")),), size="tiny",
                    budget=budget, steps=(1, 2), mdm_extra_steps=(), min_samples=256)
    monkeypatch.setitem(experiment.PRESETS, "tiny-seeds", preset)


def test_seeds_run_keeps_each_seed_bit_identical_to_its_single_run(tiny_preset, tmp_path, capsys):
    """A seed's numbers do not depend on the other seeds run before it in the same process."""
    many, one = tmp_path / "many.json", tmp_path / "one.json"
    argv = ["experiment", "--preset", "tiny-seeds", "--workers", "1"]
    assert main([*argv, "--seeds", "0,1,2", "--json", str(many), "--plot", str(tmp_path / "many.png")]) == 0
    assert main([*argv, "--seed", "1", "--json", str(one), "--compare", str(many)]) == 0
    out = capsys.readouterr().out
    assert "KL@1 [min, max]" in out and "inside the committed range" in out
    agg, single = json.loads(many.read_text()), json.loads(one.read_text())
    assert agg["seeds"] == [0, 1, 2] and (tmp_path / "many.png").stat().st_size > 0
    for row, ref in zip(agg["tasks"][0]["results"], single["tasks"][0]["results"], strict=True):
        assert row["seeds"][1]["kl"] == ref["kl"] and row["seeds"][1]["success"] == ref["success"]
        values = [s["kl"] for s in row["seeds"] if s["kl"] is not None]
        if values:
            assert row["kl_range"] == [min(values), max(values)]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0,0"], "seeds: expected distinct integers"),
    (["--seeds", "a"], "seeds: expected distinct integers"),
    (["--compare", "/nonexistent/x.json"], "compare: expected a readable JSON file"),
])
def test_bad_seeds_or_compare_exit_2_before_training(argv, message, capsys):
    assert main(["experiment", "--preset", "demo", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
