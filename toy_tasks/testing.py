"""hypothesis strategies for the toy tasks and the oracle denoisers (the strategies of joints, schedules,
step counts and label laws are in imdm_lab.testing, which this module extends).

    from hypothesis import given
    from imdm_lab import exact
    from toy_tasks.testing import tasks

    @given(tasks())
    def test_one_exact_step_loses_the_total_correlation(task):
        p = task.probs
        assert abs(exact.kl(p, exact.mdm_law(p, 1)) - exact.total_correlation(p)) < 1e-9

Needs the optional extra `imdm-lab[testing]` (hypothesis), as imdm_lab.testing does.
"""
from __future__ import annotations

try:
    from hypothesis import reject
    from hypothesis import strategies as st
except ImportError:  # imdm_lab.testing raises the ImportError that names the optional extra
    import imdm_lab.testing  # noqa: F401
    raise

from imdm_lab.checks import SEED_LIMIT, check_int
from imdm_lab.labels import LABEL_KINDS
from imdm_lab.testing import joints, label_laws, schedules
from toy_tasks.distributions import PARAMETRIC_TASKS, TASKS, ToyTask, make_task
from toy_tasks.oracle import ORACLES, make_oracle


def _parameters(min_V: int, max_V: int, min_L: int, max_L: int) -> dict[str, st.SearchStrategy]:
    """Task parameter -> its strategy; every parameter of TASKS but the file path has one."""
    return {
        "V": st.integers(min_V, max_V),
        "L": st.integers(min_L, max_L),
        "seed": st.integers(0, SEED_LIMIT - 1),
        "alpha": st.floats(0.2, 3.0),
        "modes": st.integers(1, 4),
        "uniform": st.floats(0.0, 1.0),
    }


def tasks(names=None, *, max_V: int = 4, max_L: int = 4, min_V: int = 2,
          min_L: int = 1) -> st.SearchStrategy[ToyTask]:
    """A task of toy_tasks.distributions.TASKS built with drawn parameters: V in [min_V, max_V], L in
    [min_L, max_L], seeds in [0, 2^31), alpha in [0.2, 3], up to 4 modes, a uniform floor in [0, 1].

    names: tasks to draw from (default PARAMETRIC_TASKS, every task but `file`, whose joint comes from
    disk: draw such a joint with imdm_lab.testing.joints). A combination the task refuses (parity
    with L = 1, permutation with V < L, more modes than sequences) is rejected and drawn again, so a
    range that no task accepts makes hypothesis report that it found no valid example."""
    names = list(PARAMETRIC_TASKS) if names is None else list(names)
    if not names or any(n not in PARAMETRIC_TASKS for n in names):
        raise ValueError(f"names: expected task names among {list(PARAMETRIC_TASKS)}, got {names!r}")
    min_V, max_V = check_int("min_V", min_V, 2), check_int("max_V", max_V, min_V)
    min_L, max_L = check_int("min_L", min_L, 1), check_int("max_L", max_L, min_L)
    parameters = _parameters(min_V, max_V, min_L, max_L)

    @st.composite
    def draw_task(draw):
        name = draw(st.sampled_from(names))
        params = {key: draw(parameters[key]) for key in TASKS[name].defaults}
        try:
            return make_task(name, **params)
        except ValueError:
            reject()

    return draw_task()


def oracle_denoisers(p=None, models=None, schedule_names=None, label_kinds=None) -> st.SearchStrategy:
    """An oracle denoiser of toy_tasks.oracle.ORACLES on a joint: its joint is `den.tables.p`, its
    process (mask id V, schedule, labels) `den.process`.

    p: a joint Float64[(V,)*L] or a strategy of joints (default imdm_lab.testing.joints()); models:
    names among ORACLES (default all); schedule_names: as imdm_lab.testing.schedules; label_kinds: the
    label laws drawn for oracle-imdm to read its uniform from, among LABEL_KINDS (default all; oracle-mdm
    is given one too and ignores it: its process is an MDM's)."""
    models = list(ORACLES) if models is None else list(models)
    if not models or any(m not in ORACLES for m in models):
        raise ValueError(f"models: expected oracle names among {sorted(ORACLES)}, got {models!r}")
    kinds = list(LABEL_KINDS) if label_kinds is None else list(label_kinds)
    if not kinds or any(k not in LABEL_KINDS for k in kinds):
        raise ValueError(f"label_kinds: expected label kinds among {list(LABEL_KINDS)}, got {label_kinds!r}")
    joint = joints() if p is None else p if isinstance(p, st.SearchStrategy) else st.just(p)
    return st.builds(make_oracle, st.sampled_from(models), joint, label_laws(kinds), schedules(schedule_names))
