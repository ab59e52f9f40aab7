"""The report over seeds (rows grouped by method and steps, each seed's interval, the mean's interval, the
seeds' range), the position scale between real and shuffled text (its formula, its axis on the frontier),
bits per character by hand, and which method and seed a checkpoint folder is."""
import math

import matplotlib
import numpy as np
import pytest
import torch

from imdm_lab.counter_rng import derive_seed
from scale.evaluation.evaluate import method_and_seed
from scale.evaluation.report import bootstrap, plot, position, ppl_at, seed_rows, table
from scale.evaluation.validation import bits_per_char

matplotlib.use("Agg")


def _entry(label, method, seed, nll, steps=1, n=6):
    """An entry of n samples of 2 judge tokens each, every sample of NLL `nll` nats in all."""
    return {"checkpoint": f"runs/{label}", "label": label, "method": method, "seed": seed, "steps": steps,
            "gen_ppl": math.exp(nll / 2), "entropy": 1.0 + seed, "nfe": 1.0, "val_ppl": 100.0 + seed,
            "bits_per_char": 2.0 + seed, "sample": f"text of {label}", "per_sample_nll": [nll] * n,
            "per_sample_tokens": [2] * n, "per_sample_entropy": [1.0 + seed] * n}


def test_position_is_zero_at_real_text_one_at_shuffled_and_linear_in_log_ppl():
    real, shuffled = 100.0, 1000.0
    assert position(real, real, shuffled) == 0.0 and position(shuffled, real, shuffled) == pytest.approx(1.0)
    assert position(math.sqrt(real * shuffled), real, shuffled) == pytest.approx(0.5)  # the geometric middle
    assert position(10.0, real, shuffled) == pytest.approx(-1.0)  # a decade below real text
    assert position(10_000.0, real, shuffled) == pytest.approx(2.0)
    assert ppl_at(np.array([0.0, 0.5, 2.0]), real, shuffled) == pytest.approx([100.0, math.sqrt(1e5), 1e4])
    with pytest.raises(ValueError, match="two different positive perplexities"):
        position(5.0, 100.0, 100.0)


def test_rows_group_seeds_with_their_mean_range_and_each_seeds_interval():
    entries = [_entry("sdtt-s0", "sdtt", 0, 4.0), _entry("sdtt-s1", "sdtt", 1, 6.0), _entry("mdlm", "mdlm", 0, 5.0),
               _entry("sdtt-s0", "sdtt", 0, 2.0, steps=2), _entry("sdtt-s1", "sdtt", 1, 2.0, steps=2)]
    rows = seed_rows(entries, 50, 0)
    assert [(r["label"], r["steps"], len(r["seeds"])) for r in rows] == [("sdtt", 1, 2), ("mdlm", 1, 1),
                                                                          ("sdtt", 2, 2)]
    sdtt = rows[0]
    # equal samples: every resample gives the seed's own value, so each interval has no width
    mean = (math.exp(2.0) + math.exp(3.0)) / 2
    assert sdtt["gen_ppl"] == pytest.approx([mean] * 3) and sdtt["entropy"] == pytest.approx([1.5] * 3)
    assert sdtt["seed_range"] == {"gen_ppl": pytest.approx([math.exp(2.0), math.exp(3.0)]), "entropy": [1.0, 2.0]}
    assert [s["seed"] for s in sdtt["seeds"]] == [0, 1] and sdtt["method"] == "SDTT"
    assert sdtt["seeds"][1]["gen_ppl_ci"] == pytest.approx([math.exp(3.0)] * 2)
    assert (sdtt["val_ppl"], sdtt["bits_per_char"]) == (100.5, 2.5)
    assert "seeds 7.4-20.1 (2)" in table({"rows": [{**sdtt, "position": 0.5}], "references": []})


def test_a_row_of_one_seed_is_that_entrys_bootstrap_as_before_seeds():
    rng = np.random.default_rng(1)
    e = _entry("imredi", "imredi", 0, 0.0)
    e.update(per_sample_nll=rng.exponential(3.0, 6).tolist(), per_sample_entropy=rng.uniform(1, 2, 6).tolist())
    old = {**e}
    del old["method"], old["seed"]  # a file written before evaluate recorded them
    for entry in (e, old):
        row, = seed_rows([entry], 200, 7)
        expected = bootstrap(e["per_sample_nll"], e["per_sample_tokens"], e["per_sample_entropy"], 200,
                             derive_seed(7, "imredi", 1))
        assert row["gen_ppl"] == expected["gen_ppl"] and row["entropy"] == expected["entropy"]  # bit for bit
        assert row["label"] == "imredi" and row["method"] == "IM-SDTT -> IM-ReDi"
        assert row["seeds"][0]["seed"] == entry.get("seed")


def test_the_position_axis_of_the_frontier_lines_up_with_the_references(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    rows = seed_rows([_entry("sdtt-s0", "sdtt", 0, 9.0), _entry("sdtt-s1", "sdtt", 1, 11.0)], 20, 0)
    refs = [{"label": "real validation text", "gen_ppl": [50.0, 45.0, 55.0], "entropy": [1.2, 1.1, 1.3]},
            {"label": "shuffled validation text", "gen_ppl": [400.0, 380.0, 420.0], "entropy": [1.2, 1.1, 1.3]}]
    for r in [*rows, *refs]:
        r["position"] = float(position(r["gen_ppl"][0], 50.0, 400.0))
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    plot({"judge": "j", "rows": rows, "references": refs}, tmp_path / "f.png")
    ax = figures[0].axes[0]
    scale, = ax.child_axes
    assert scale.get_yscale() == "linear"
    for g in (50.0, 400.0, rows[0]["gen_ppl"][0]):  # the same height on both axes, in pixels
        assert scale.transData.transform((0, position(g, 50.0, 400.0)))[1] == pytest.approx(
            ax.transData.transform((1.0, g))[1], abs=1e-6)
    assert (tmp_path / "f.png").stat().st_size > 1000


class _Chars:
    """A tokenizer whose token v decodes to v characters; 0 is special (skipped), as eos between documents."""

    def batch_decode(self, rows, skip_special_tokens):
        assert skip_special_tokens
        return ["".join("x" * v for v in row if v != 0) for row in rows]


def test_bits_per_char_by_hand():
    blocks = torch.tensor([[1, 2, 0, 0], [3, 3, 0, 1]])  # 8 tokens, 1 + 2 + 3 + 3 + 1 = 10 characters
    nats = 1.25 * math.log(2)  # per token: 8 x 1.25 ln 2 = 10 ln 2 nats in all, 1 bit per character
    assert bits_per_char(nats, blocks, _Chars()) == pytest.approx(1.0)
    assert bits_per_char(2.0, blocks, _Chars()) == pytest.approx(2.0 * 8 / (10 * math.log(2)))
    with pytest.raises(ValueError, match="no character"):
        bits_per_char(1.0, torch.zeros(2, 3, dtype=torch.long), _Chars())


def test_method_and_seed_of_a_checkpoint_folder():
    assert method_and_seed("sdtt-s1", 1) == ("sdtt", 1)
    assert method_and_seed("coupling-mdlm-s12", 12) == ("coupling-mdlm", 12)
    assert method_and_seed("sdtt", 0) == ("sdtt", 0)
    assert method_and_seed("run-s5", 0) == ("run-s5", 0)  # the suffix is no seed its state records
