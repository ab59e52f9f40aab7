"""The text8-cpu chain in seconds (`python -m scale pipeline --preset text8-cpu-tiny`, the stages of text8-cpu
with two seeds): byte tokenizer -> MDLM -> SDTT, IM-SDTT, the eps-driven coupling student, couplings, ReDi,
IM-ReDi, IM-SDTT -> IM-ReDi, each once per seed -> 5-gram judge -> evaluate -> report with seed lists,
positions and bits per character."""
import json
import math
from pathlib import Path

import pytest

from scale import pipeline
from scale.checkpoints.checkpoint import read_state
from scale.cli import main
from scale.data.blocks import open_blocks
from scale.data.tokenizers import load_tokenizer

SEEDS = (0, 1)
STUDENTS = ["sdtt", "imsdtt", "epscoup", "redi", "imredi-mdlm", "imredi"]


@pytest.fixture(scope="module")
def text8(token_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("text8") / "run"
    assert main(["pipeline", "--preset", "text8-cpu-tiny", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_every_instance_runs_with_its_seed_and_records_its_wall_time(text8):
    record = json.loads((text8 / "pipeline.json").read_text())
    assert record["done"] == [n for n, _ in pipeline.plan("text8-cpu-tiny", text8)]
    assert set(record["seconds"]) == set(record["done"]) and all(s > 0 for s in record["seconds"].values())
    assert len(load_tokenizer(str(text8 / "tokenizer"))) == 257  # 256 bytes and eos
    assert read_state(text8 / "mdlm").config.train.seed == 0
    for name in STUDENTS:
        for seed in SEEDS:
            state = read_state(text8 / f"{name}-s{seed}")
            assert state.config.train.seed == seed and state.config.data.length == 32
            assert state.config.model.labels == ("rand" if name.startswith(("im", "eps")) else "none"), name
    for seed in SEEDS:
        meta = json.loads((text8 / f"coupling-s{seed}" / "meta.json").read_text())
        assert meta["seed"] == seed and meta["teacher"] == str((text8 / f"imsdtt-s{seed}").resolve())


@pytest.mark.slow
def test_the_report_lists_the_seeds_of_each_distilled_method_and_their_positions(text8):
    result = json.loads((text8 / "eval.json").read_text())
    assert {(e["method"], e["seed"]) for e in result["entries"]} == {("mdlm", 0)} | {
        (m, s) for m in STUDENTS for s in SEEDS}
    rep = json.loads((text8 / "report.json").read_text())
    assert [(r["label"], r["steps"]) for r in rep["rows"]] == [(m, k) for m in ["mdlm", *STUDENTS] for k in (1, 2)]
    real, shuffled = (r["gen_ppl"][0] for r in rep["references"])
    assert [r["position"] for r in rep["references"]] == pytest.approx([0.0, 1.0])
    for row in rep["rows"]:
        seeds = row["seeds"]
        assert [s["seed"] for s in seeds] == ([0] if row["label"] == "mdlm" else list(SEEDS))
        values = [s["gen_ppl"] for s in seeds]
        assert row["gen_ppl"][0] == pytest.approx(sum(values) / len(values), rel=1e-12)
        assert row["seed_range"]["gen_ppl"] == [min(values), max(values)]
        assert row["position"] == pytest.approx(math.log(row["gen_ppl"][0] / real) / math.log(shuffled / real))
        for s in seeds:
            assert s["gen_ppl_ci"][0] <= s["gen_ppl"] <= s["gen_ppl_ci"][1]
    table = (text8 / "report.md").read_text()
    assert "seeds " in table and "(2)" in table and "position" in table


@pytest.mark.slow
def test_bits_per_char_of_the_mdlm_from_its_elbo_and_the_decoded_characters(text8):
    result = json.loads((text8 / "eval.json").read_text())
    ckpt = next(c for c in result["checkpoints"] if c["label"] == "mdlm")
    state = read_state(text8 / "mdlm")
    tok = load_tokenizer(state.tokenizer)
    blocks = open_blocks(state.config.data, "validation")[:8]  # --val-batches 1 of --batch-size 8
    chars = sum(len(tok.decode(row, skip_special_tokens=True)) for row in blocks.tolist())
    assert 0 < chars <= blocks.numel()  # a byte tokenizer: at most one character a token
    expected = math.log2(ckpt["val_ppl"]) * blocks.numel() / chars
    assert ckpt["bits_per_char"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_memorisation_checks_every_cell_and_each_redi_student_against_its_own_coupling(text8):
    memo = json.loads((text8 / "memorisation.json").read_text())
    result = json.loads((text8 / "eval.json").read_text())
    assert {(c["label"], c["steps"]) for c in memo["cells"]} == {(e["label"], e["steps"]) for e in result["entries"]}
    couplings = {"redi": "coupling-mdlm", "imredi-mdlm": "coupling-mdlm", "imredi": "coupling"}
    for cell in memo["cells"]:
        method, _, seed = cell["label"].rpartition("-s")
        if method in couplings:
            assert Path(cell["coupling"]["folder"]).name == f"{couplings[method]}-s{seed}"
            assert 0 <= cell["coupling"]["min_distance"] <= cell["coupling"]["mean_distance"] <= 1
        else:
            assert cell["coupling"] is None
        assert 0 <= cell["train"]["mean_longest"] <= cell["train"]["max_longest"] <= cell["length"]
