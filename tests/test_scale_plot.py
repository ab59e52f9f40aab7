"""The training log a cluster user watches: per-step lines with tokens/s and ETA, `tokens_per_s` / `eta_s` in
metrics.jsonl, and `python -m scale plot RUN` drawing it."""
import json

import pytest
import torch

from scale.checkpoints.config import load_config
from scale.cli import main
from scale.evaluation.plot import read_metrics, series
from scale.training.trainer import elbo_trainer

V, MASK = 40, 39


def _tiny_run(out):
    config = load_config("tiny-cpu", ["train.max_steps=4", "train.log_every=2", "train.global_batch=4",
                                      "train.warmup=0", "eval.every=2", "eval.samples=1", "eval.sample_steps=[1]",
                                      "eval.batch_size=4", "eval.val_batches=1", "data.length=16",
                                      "train.checkpoint_every=4"])
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, V - 1, (16, 16), generator=g)
    config.model = config.model.with_vocabulary(V, MASK)
    elbo_trainer(config, out, blocks[:12], blocks[12:]).run(4)
    return out


@pytest.mark.slow
def test_log_lines_metrics_and_plot(tmp_path, capsys):
    run = _tiny_run(tmp_path / "run")
    printed = capsys.readouterr().err  # next to the progress bar, not in the command's output
    lines = [ln for ln in printed.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["2/4", "4/4"]
    assert all("tokens/s" in ln and "ETA" in ln for ln in lines) and lines[-1].endswith("ETA 0m00s")
    _, records = read_metrics(run)
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert all(r["tokens_per_s"] > 0 for r in logged) and logged[-1]["eta_s"] == 0 and logged[0]["eta_s"] > 0
    assert series(records, "val_nll")[0] == [2, 4]

    assert main(["plot", str(run)]) == 0
    png = run / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "(loss, val_nll)" in capsys.readouterr().out
    # gen PPL / entropy panels where a log records them
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in
                                              [{"step": 1, "gen_ppl": 900.0, "entropy": 5.1},
                                               {"step": 2, "gen_ppl": 300.0, "entropy": 5.0}]))
    assert main(["plot", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "g.png")]) == 0
    assert "(gen_ppl, entropy)" in capsys.readouterr().out and (tmp_path / "g.png").stat().st_size > 5000


def test_bad_run_path_exits_2(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("RUN: expected a run folder with metrics.jsonl") and "\n" not in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{not json\n")
    assert main(["plot", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith("RUN: ")
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "no" / "x.png")]) == 2


def test_a_lone_validation_point_gets_an_axis_from_zero_and_the_runs_step_range(tmp_path, capsys):
    """One evaluation so far: its panel spans 0 to 1.3x the value (a decade either side on a log axis)."""
    from scale.evaluation.plot import single_point_limits
    assert single_point_limits(30.0, log=False) == (0.0, 39.0)
    assert single_point_limits(500.0, log=True) == (50.0, 5000.0)
    lo, hi = single_point_limits(-2.0, log=False)
    assert lo < -2.0 < hi
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [{"step": 10, "loss": 9.0}, {"step": 30, "loss": 8.0},
                                                          {"step": 30, "val_nll": 8.1}]))
    assert main(["plot", str(log), "--out", str(tmp_path / "m.png")]) == 0
    assert "(loss, val_nll)" in capsys.readouterr().out


def test_plots_name_a_judge_by_what_it_is_never_by_its_path(tmp_path):
    from scale.evaluation.judge import judge_label
    ngram = tmp_path / "runs" / "wiki" / "judge"
    ngram.mkdir(parents=True)
    (ngram / "ngram.json").write_text(json.dumps({"kind": "kneser-ney", "order": 3, "data": "wiki",
                                                  "split": "heldout"}))
    assert judge_label(str(ngram)) == "Kneser-Ney 3-gram judge on wiki/heldout"
    proxy = tmp_path / "proxy"
    proxy.mkdir()
    (proxy / "judge.json").write_text(json.dumps({"size": "tiny"}))
    assert judge_label(str(proxy)) == "proxy GPT-2 tiny judge 'proxy'"
    assert judge_label("gpt2-large") == "gpt2-large"
    assert judge_label(str(tmp_path / "gone" / "judge")) == "judge"  # a folder no longer there: its name


def test_a_distillation_loss_at_its_floor_prints_its_size_not_minus_zero():
    from scale.training.trainer import loss_text
    assert loss_text(-1.2e-6) == "-1.20e-06" and loss_text(0.0) == "0.0000" and loss_text(2.34567) == "2.3457"
    assert "-0.0000" not in loss_text(-4e-5)


def test_report_replot_redraws_a_committed_report_without_a_judge(tmp_path, capsys):
    from pathlib import Path
    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / "wiki-cpu.json"
    out = tmp_path / "frontier.png"
    assert main(["report", "--replot", str(committed), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", "--replot", str(committed), "--out", str(tmp_path / "f.json")]) == 2
    assert "--out: expected a .png path" in capsys.readouterr().err
    assert main(["report", "--out", str(tmp_path / "r.json")]) == 2
    assert "--eval and --judge" in capsys.readouterr().err
