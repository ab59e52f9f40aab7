"""A live figure for class: sliders (task, V, L, schedule, k) that redraw the exact MDM's KL(p || p_k), the
stepwise bound B_k, the exact IMDM and the one-step partition-and-map picture (toy_tasks.figures).

    bound_explorer("align", V=4, L=3, schedule="linear", k=4)      # one notebook cell

The figure is an ordinary image output of the cell, drawn at the given values when the cell runs, and
the sliders replace it in place (an IPython display id). So a notebook run without a widget front-end
(nbclient, nbconvert, a static viewer) still holds the figure at the default values, and without
ipywidgets installed (the `notebooks` extra) the call draws that figure and says what is missing.
"""
from __future__ import annotations

import html
import io

from matplotlib.figure import Figure

from imdm_lab.checks import check_int
from imdm_lab.schedules import SCHEDULES
from toy_tasks.distributions import PARAMETRIC_TASKS
from toy_tasks.figures import bound_curves, draw_bound, draw_partition

# slider ranges: V^L at most 8^5 = 32 768 sequences, so that a redraw takes seconds, not minutes
V_RANGE, L_RANGE = (2, 8), (1, 5)


def explorer_figure(task: str = "align", V: int = 4, L: int = 3, schedule: str = "linear", k: int = 4,
                    max_steps: int = 32) -> Figure:
    """Left: KL(p || p_k), B_k, TC(p) and the exact IMDM against k = 1, 2, 4, ... up to max_steps (and k),
    with k marked; right: the one-step partition-and-map picture. task: a name of TASKS with its other
    parameters at their defaults."""
    max_steps = check_int("max_steps", max_steps, 1)
    if check_int("k", k, 1) > max_steps:
        raise ValueError(f"k: expected an integer in [1, max_steps = {max_steps}], got {k}")
    steps = sorted({2**j for j in range(max_steps.bit_length())} | {k})
    curves = bound_curves(task, steps, schedule, V=V, L=L)
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(1.15, 1))
    draw_bound(curves, left, k=k)
    draw_partition(task, right, V=V, L=L)
    return fig


def _png(fig: Figure):
    from IPython.display import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return Image(data=buffer.getvalue())


def bound_explorer(task: str = "align", V: int = 4, L: int = 3, schedule: str = "linear", k: int = 4,
                   max_steps: int = 32) -> None:
    """Display the sliders and the figure of explorer_figure at these values (see the module docstring).
    A combination a task refuses (parity with L = 1, permutation with V < L) leaves the last figure and
    shows the refusal under the sliders."""
    from IPython.display import display

    first = _png(explorer_figure(task, V, L, schedule, k, max_steps))  # bad defaults fail here, loudly
    try:
        import ipywidgets as w
    except ImportError:
        display(first)
        print("ipywidgets is not installed (pip install 'imdm-lab[notebooks]'): the figure at the values given")
        return
    style = dict(continuous_update=False)  # redraw on release: an exact law takes up to a few seconds
    controls = dict(
        task=w.Dropdown(options=list(PARAMETRIC_TASKS), value=task, description="task"),
        V=w.IntSlider(V, *V_RANGE, description="V", **style),
        L=w.IntSlider(L, *L_RANGE, description="L", **style),
        schedule=w.Dropdown(options=sorted(SCHEDULES), value=schedule, description="schedule"),
        k=w.IntSlider(k, 1, max_steps, description="k", **style),
    )
    status = w.HTML()
    display(w.VBox([w.HBox(list(controls.values())[:3]), w.HBox(list(controls.values())[3:]), status]))
    handle = display(first, display_id=True)

    def redraw(_change) -> None:
        values = {name: c.value for name, c in controls.items()}
        try:
            handle.update(_png(explorer_figure(max_steps=max_steps, **values)))
            status.value = ""
        except ValueError as err:  # a refused combination: say why, keep the last figure
            status.value = f"<span style='color: #b00'>{html.escape(str(err))}</span>"

    for control in controls.values():
        control.observe(redraw, names="value")
