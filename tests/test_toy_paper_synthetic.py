"""The `paper-synthetic` preset's code at a small V (the full run takes about half an hour of 2 cores),
and the split of a task over worker processes."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from toy_tasks.cli import main
from toy_tasks.experiment import PRESETS, Preset, TaskPlan, run_preset
from toy_tasks.methods import Budget

EXACT_STEPS = 300
TINY = Budget(elbo_steps=30, round_steps=1, sdtt_start=2, redi_pairs=16, redi_teacher_steps=2, redi_steps=4,
              coupling_steps=4, batch=16, exact_steps=4, exact_batch=16)


def _align_mdm_success(V: int, L: int, steps: int) -> float:
    """P(all equal) of the exact MDM, by hand for 1 and 2 linear steps: the first step reveals each token
    with probability 1 / steps; n >= 1 tokens revealed first agree with probability V^(1 - n), later tokens
    copy them; with nothing revealed first, the last step reveals all L at once."""
    if steps == 1:
        return V ** (1 - L)
    return sum(math.comb(L, n) * 0.5**L * V ** (1 - n) for n in range(1, L + 1)) + 0.5**L * V ** (1 - L)


def test_paper_synthetic_preset_at_small_v_keeps_the_json_schema_and_the_exact_curve(tmp_path, monkeypatch):
    full = PRESETS["paper-synthetic"]
    plan = dataclasses.replace(full.tasks[0], params={"V": 50, "L": 10})  # 50^10 rows: the closed-form view
    monkeypatch.setitem(PRESETS, "paper-synthetic", dataclasses.replace(
        full, tasks=(plan,), size="tiny", budget=TINY, samples=64))
    out = tmp_path / "p.json"
    assert main(["experiment", "--preset", "paper-synthetic", "--workers", "1", "--json", str(out),
                 "--plot", str(tmp_path / "p.png")]) == 0
    task = json.loads(out.read_text())["tasks"][0]
    assert (task["V"], task["L"], task["samples"]) == (50, 10, 64)
    assert task["total_correlation"] == pytest.approx(9 * math.log(50))
    for k in (1, 2):
        assert task["mdm_exact_success"][str(k)] == pytest.approx(_align_mdm_success(50, 10, k), rel=1e-9)
    for k, success in task["mdm_exact_success"].items():  # exact MDM: uniform given aligned
        assert task["mdm_exact_kl"][k] == pytest.approx(-math.log(success))
    assert task["stepwise_bound"]["1"] is None  # needs the enumerated joint
    rows = task["results"]
    assert [(r["method"], r["steps"]) for r in rows] == [
        (m + g, k) for m in plan.methods for g, ks in (("", full.steps), ("+greedy", (1,))) for k in ks]
    for r in rows:
        assert {"method", "steps", "success", "kl", "coverage"} <= set(r)
        assert 0.0 <= r["success"] <= 1.0 and r["coverage"] <= 64 / 50
        if r["method"] in ("mdm", "mdm+greedy") and r["steps"] == 1:
            assert r["kl_estimator"] == "exact"
        else:  # 64 draws cannot resolve 50 sequences: no KL estimate is reported
            assert r["kl_estimator"] == "none" and r["kl"] is None
    one = next(r for r in rows if r["method"] == "mdm" and r["steps"] == 1)
    assert one["kl"] >= task["total_correlation"] - 1e-9  # any one-step MDM: KL >= TC
    assert (tmp_path / "p.png").stat().st_size > 0


def test_a_task_split_over_two_processes_gives_the_single_process_result(monkeypatch):
    methods = ("mdm", "imdm-elbo", "imdm-redi", "imdm-k2")
    plan = TaskPlan("align", {"V": 4, "L": 3}, methods, split=(("imdm-elbo", "imdm-redi"),))
    assert plan.groups(list(methods)) == [["mdm", "imdm-k2"], ["imdm-elbo", "imdm-redi"]]
    monkeypatch.setitem(PRESETS, "split-check", Preset(tasks=(plan,), size="tiny", budget=TINY, steps=(1, 2),
                                                       mdm_extra_steps=(), min_samples=128))
    one, two = (run_preset("split-check", progress=False, workers=w)["tasks"][0] for w in (1, 2))
    assert [r["method"] for r in two["results"]] == [r["method"] for r in one["results"]]
    assert two["results"] == one["results"]
    assert list(two["train_seconds"]) == list(methods)


def test_exact_teacher_coupling_learns_a_one_step_sampler_of_align_without_collapse():
    from toy_tasks.evaluate import evaluate
    from toy_tasks.methods import Run
    from toy_tasks.task_views import task_view

    view = task_view("align", V=64, L=10)  # beyond the exact engine: the closed-form view, as at V = 50 000
    budget = dataclasses.replace(TINY, exact_steps=EXACT_STEPS, exact_batch=128, exact_lr=1e-2)
    model = Run(view, "tiny", budget, seed=0).get("imdm-exact-kV")
    one = evaluate(model, view, 1, 512, seed=1)
    greedy = evaluate(model, view, 1, 512, seed=1, last_step="greedy")
    # 512 uniform draws of 64 sequences hit 64 (1 - e^-8) = 64.0 of them on average
    assert one["success"] >= 0.85 and greedy["success"] >= 0.99  # measured 0.918 and 1.000
    assert one["distinct"] >= 60 and greedy["distinct"] >= 60
    with pytest.raises(ValueError, match="align only"):
        Run(task_view("parity", V=2, L=3), "tiny", budget, seed=0).get("imdm-exact-kV")
