"""benchmarks/train_throughput.py --quick end to end: every variant trains through `python -m scale train`,
its throughput, FLOP accounting and resource use come back as JSON lines (no timing is asserted)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_reports_every_variant(subprocess_env, tmp_path):
    out = tmp_path / "throughput.jsonl"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_throughput.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, env=subprocess_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in rows] == ["before", "default", "fused-adamw"]
    assert rows[0]["speedup"] == 1.0 and rows[0]["env"] == {"GLIBC_TUNABLES": "glibc.malloc.perturb=0"}
    for r in rows:
        assert r["tokens_per_s"] > 0 and 0 < r["peak_fraction"] and r["minor_faults"] > 0
        assert r["user_s"] > 0 and r["classes"] == 30522 and r["size"] == "tiny-cpu" and r["length"] == 32
        # model GFLOP/s is tokens/s times the model's FLOPs per token
        assert abs(r["model_gflops"] / r["tokens_per_s"] - rows[0]["model_gflops"] / rows[0]["tokens_per_s"]) < 1e-12
    assert "variant" in done.stdout and "fp32 GEMM peak" in done.stdout
