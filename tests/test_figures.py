"""The figures of the exact theory (toy_tasks.figures, toy_tasks.explorer): the numbers drawn against
independent values (align's closed form, the bound's inequalities, the partition-and-map push-forward),
the path checked before any work, atomic writes in the format named, and the live explorer with and
without ipywidgets."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from test_readme import python_blocks

from imdm_lab.checks import check_figure_path
from imdm_lab.exact import align_success
from toy_tasks.distributions import make_task
from toy_tasks.explorer import bound_explorer, explorer_figure
from toy_tasks.figures import (
    bound_curves,
    draw_bound,
    draw_partition,
    partition_law,
    plot_bound,
    save_bound_plot,
)

STEPS = [1, 2, 4, 8]


def test_curves_of_align_against_the_closed_form():
    """align V=4 L=3: KL(p || p_k) = -ln P_k(all equal) (exact.align_success), TC = 2 ln 4 = B_1, B_k above."""
    c = bound_curves("align", STEPS, "cosine", V=4, L=3)
    assert c.label == "align V=4 L=3" and c.schedule == "cosine" and c.steps == (1, 2, 4, 8)
    for k, d in zip(c.steps, c.mdm_kl, strict=True):
        assert d == pytest.approx(-math.log(align_success(4, 3, k, "cosine")), abs=1e-12)
    assert c.total_correlation == pytest.approx(2 * math.log(4), abs=1e-12)
    assert c.bound[0] == pytest.approx(c.total_correlation, abs=1e-12)
    assert all(d <= b + 1e-12 for d, b in zip(c.mdm_kl, c.bound, strict=True))
    assert abs(c.imdm_kl) < 1e-12


def test_partition_law_is_p():
    p = make_task("markov", V=3, L=3, seed=2).probs
    np.testing.assert_allclose(partition_law(p), p, atol=1e-15)


def test_the_task_can_be_a_name_a_task_or_a_joint():
    task = make_task("parity", V=3, L=3)
    by_name, by_task, by_joint = (bound_curves(t, [1, 3], **kw) for t, kw in
                                  (("parity", dict(V=3, L=3)), (task, {}), (task.probs, {})))
    assert by_name == by_task and by_joint.mdm_kl == by_task.mdm_kl and by_joint.label == "joint V=3 L=3"
    with pytest.raises(ValueError, match="^V: task parameters go with a task name"):
        bound_curves(task, [1], V=3)


def test_the_figure_draws_the_numbers_with_the_imdm_below_them():
    c = bound_curves("markov", STEPS, V=3, L=3, seed=1)
    fig = plot_bound("markov", STEPS, V=3, L=3, seed=1)
    assert isinstance(fig, Figure)
    lines = {line.get_label().split(":")[0]: line for line in fig.axes[0].get_lines()}
    np.testing.assert_allclose(lines["exact MDM (true conditionals)"].get_ydata(), c.mdm_kl)
    np.testing.assert_allclose(lines["$B_k$, the path-KL bound"].get_ydata(), c.bound)
    imdm = lines["exact IMDM, partition-and-map (1 step, or k steps with labels kept)"].get_ydata()
    assert np.all(imdm < min(c.mdm_kl)) and np.all(imdm > 0)  # KL 0 at the floor of the log axis
    assert "upper bound on KL(p || $p_k$)" in lines["$B_k$, the path-KL bound"].get_label()


def test_drawing_on_given_axes_returns_their_figure():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert draw_bound(bound_curves("align", [1, 2], V=3, L=2), left, k=2) is fig
    assert draw_partition("align", right, V=3, L=2) is fig
    assert "k = 2" in left.get_title()


@pytest.mark.parametrize("suffix,magic", [("png", b"\x89PNG"), ("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_save_bound_plot_writes_the_format_named(tmp_path, suffix, magic):
    out = tmp_path / "sub" / f"bound.{suffix}"
    curves = save_bound_plot(out, "align", [1, 2], V=3, L=2)
    assert out.read_bytes().startswith(magic) and curves.steps == (1, 2)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left


def test_the_path_is_checked_before_any_work(tmp_path):
    # a step count the engine refuses would fail later: the bad path is reported first
    with pytest.raises(ValueError, match=r"^--plot: expected a file name ending in a figure format"):
        save_bound_plot(tmp_path / "bound.txt", "align", [10**9])
    with pytest.raises(ValueError, match="^--plot: expected a path"):
        check_figure_path("--plot", "")
    with pytest.raises(ValueError, match="^steps: expected at most"):
        save_bound_plot(tmp_path / "bound.png", "align", [10**9])
    with pytest.raises(ValueError, match="^steps: expected an integer >= 1"):
        bound_curves("align", [0])
    assert list(tmp_path.iterdir()) == []


def test_explorer_figure_and_its_refusals():
    fig = explorer_figure("parity", V=3, L=3, schedule="loglinear", k=5, max_steps=8)
    assert len(fig.axes) == 2 and "k = 5" in fig.axes[0].get_title()
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xdata(), [1, 2, 4, 5, 8])
    with pytest.raises(ValueError, match=r"^k: expected an integer in \[1, max_steps = 8\]"):
        explorer_figure(k=9, max_steps=8)
    with pytest.raises(ValueError, match="^L: expected an integer >= 2 for parity"):
        explorer_figure("parity", L=1)


class _Handle:
    def __init__(self):
        self.updates = []

    def update(self, obj):
        self.updates.append(obj)


def test_explorer_redraws_on_a_change_and_reports_a_refusal(monkeypatch):
    pytest.importorskip("ipywidgets")
    import IPython.display

    shown, handle = [], _Handle()
    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=None: shown.append(obj) or handle)
    bound_explorer("align", V=3, L=2, k=2, max_steps=4)
    box, first = shown
    assert first.data.startswith(b"\x89PNG")  # the figure at the values given, before any change
    sliders = {c.description: c for row in box.children[:2] for c in row.children}
    sliders["V"].value = 4
    assert len(handle.updates) == 1 and handle.updates[0].data != first.data
    sliders["task"].value = "parity"
    sliders["L"].value = 1  # parity needs L >= 2: the figure stays, the refusal is shown
    assert len(handle.updates) == 2 and "L: expected an integer &gt;= 2 for parity" in box.children[2].value


def test_explorer_without_ipywidgets_draws_the_figure_and_says_so(monkeypatch, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=None: shown.append(obj))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    bound_explorer("align", V=3, L=2, k=2, max_steps=4)
    assert len(shown) == 1 and shown[0].data.startswith(b"\x89PNG")
    assert "pip install 'imdm-lab[notebooks]'" in capsys.readouterr().out


def test_the_python_examples_of_docs_notebooks_run(capsys):
    blocks = python_blocks(Path(__file__).resolve().parents[1] / "docs" / "notebooks.md")
    assert blocks
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/notebooks.md block {index}", "exec"), {"__name__": "docs_notebooks"})
