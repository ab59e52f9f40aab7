"""The testing helpers (imdm_lab.testing, toy_tasks.testing): what the strategies draw, their refusals,
the goodness-of-fit p-values against hand-computed statistics, the ImportError without hypothesis, and
the worked examples of docs/testing.md run as written."""
import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from scipy import stats
from test_readme import python_blocks

from imdm_lab.exact import check_joint
from imdm_lab.labels import LABEL_KINDS
from imdm_lab.schedules import SCHEDULES
from imdm_lab.testing import chi_square_pvalue, homogeneity_pvalue, joints, label_laws, schedules, step_counts
from toy_tasks.distributions import PARAMETRIC_TASKS, TASKS, make_task
from toy_tasks.oracle import OracleIMDM, OracleMDM
from toy_tasks.testing import _parameters, oracle_denoisers, tasks

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing.md"
SETTINGS = settings(max_examples=30, deadline=None)


# ---------- strategies ----------

@SETTINGS
@given(joints(max_V=4, max_L=3, min_V=3, min_L=2))
def test_joints_are_valid_laws_in_the_size_range(p):
    V, L = check_joint(p)
    assert 3 <= V <= 4 and 2 <= L <= 3 and p.dtype == np.float64


@SETTINGS
@given(joints(vocab_sizes=(3, 3, 3), zeros=False))
def test_joints_of_a_fixed_shape_without_zeros(p):
    assert p.shape == (3, 3, 3) and p.min() > 0 and abs(p.sum() - 1) < 1e-12


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(vocab_sizes=(2, 3)), r"vocab_sizes: expected one vocabulary size for every position .*got \[2, 3\]"),
    (dict(vocab_sizes=()), "vocab_sizes: expected at least one position"),
    (dict(vocab_sizes=(1, 1)), "vocab_sizes: expected an integer >= 2"),
    (dict(max_V=2, min_V=3), "max_V: expected an integer >= min_V = 3"),
    (dict(max_L=0), "max_L: expected an integer >= 1"),
])
def test_joints_refuse_what_the_exact_engine_cannot_take(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        joints(**kwargs)


@SETTINGS
@given(schedules(), step_counts(max_steps=5, min_steps=2), label_laws(["none", "finite", "randn"], max_dim=2,
                                                                         max_K=3))
def test_schedules_steps_and_label_laws_come_from_the_registries(schedule, k, labels):
    assert schedule in SCHEDULES and 2 <= k <= 5
    assert labels is None or labels.kind == "finite" and 1 <= labels.K <= 3 \
        or labels.kind == "randn" and 1 <= labels.dim <= 2 and 0.1 <= labels.scale <= 4


@pytest.mark.parametrize("call,pattern", [
    (lambda: schedules(["quadratic"]), "names: expected schedule names among"),
    (lambda: step_counts(max_steps=0), "max_steps: expected an integer >= 1"),
    (lambda: label_laws(["gumbel"]), "kinds: expected label kinds among"),
    (lambda: tasks(["file"]), "names: expected task names among"),
    (lambda: tasks(max_V=1), "max_V: expected an integer >= 2"),
    (lambda: oracle_denoisers(models=["oracle-arm"]), "models: expected oracle names among"),
    (lambda: oracle_denoisers(label_kinds=["none"]), "label_kinds: expected label kinds among"),
])
def test_bad_strategy_arguments_are_refused(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_every_task_parameter_has_a_strategy():
    drawn = {key for name in PARAMETRIC_TASKS for key in TASKS[name].defaults}
    assert drawn <= set(_parameters(2, 3, 1, 3))
    assert set(TASKS) - set(PARAMETRIC_TASKS) == {"file"}


@SETTINGS
@given(tasks(max_V=3, max_L=3))
def test_tasks_are_the_registry_tasks_rebuilt_from_their_parameters(task):
    assert task.name in PARAMETRIC_TASKS and task.V <= 3 and task.L <= 3
    np.testing.assert_array_equal(make_task(task.name, **task.params).probs, task.probs)


@SETTINGS
@given(oracle_denoisers(p=make_task("markov", V=3, L=2, seed=1).probs))
def test_oracle_denoisers_carry_their_joint_and_process(den):
    assert isinstance(den, (OracleMDM, OracleIMDM))
    assert den.process.mask_id == 3 and den.process.schedule in SCHEDULES
    assert (den.process.labels is None) == isinstance(den, OracleMDM)
    assert den.process.labels is None or den.process.labels.kind in LABEL_KINDS
    np.testing.assert_array_equal(den.tables.p, make_task("markov", V=3, L=2, seed=1).probs)


# ---------- goodness of fit ----------

def _tokens(counts, V=2, L=2) -> torch.Tensor:
    """counts[c] copies of the sequence with row-major cell index c (Long[N, L])."""
    cells = np.repeat(np.arange(len(counts)), counts)
    return torch.from_numpy(np.stack(np.unravel_index(cells, (V,) * L), axis=1))


def test_chi_square_pools_the_sparse_cells_into_one():
    """law (0.6, 0.3, 0.06, 0.04), N = 50: expected (30, 15, 3, 2); the last two are pooled (5). Observed
    (28, 16, 4, 2) -> (28, 16, 6): X^2 = 4/30 + 1/15 + 1/5 = 0.4 on 2 degrees of freedom, p = exp(-0.2)."""
    law = np.array([[0.6, 0.3], [0.06, 0.04]])
    assert chi_square_pvalue(_tokens([28, 16, 4, 2]), law) == pytest.approx(math.exp(-0.2), rel=1e-12)
    # a sparse cell alone is kept: expected (20, 12, 6, 2), observed (25, 9, 4, 2)
    law = np.array([[0.5, 0.3], [0.15, 0.05]])
    x2 = 5**2 / 20 + 3**2 / 12 + 2**2 / 6 + 0.0
    assert chi_square_pvalue(_tokens([25, 9, 4, 2]), law) == pytest.approx(stats.chi2.sf(x2, 3), rel=1e-12)


def test_chi_square_on_impossible_samples_and_on_one_cell():
    law = np.array([[0.5, 0.5], [0.0, 0.0]])
    assert chi_square_pvalue(_tokens([10, 10, 1, 0]), law) == 0.0
    assert chi_square_pvalue(_tokens([7, 0, 0, 0]), np.array([[1.0, 0.0], [0.0, 0.0]])) == 1.0


@pytest.mark.parametrize("tokens,pattern", [
    (np.zeros((3, 3), dtype=np.int64), r"tokens: expected an integer array of shape \(N, 2\)"),
    (np.full((3, 2), 2), r"tokens: expected token ids in \[0, 2\)"),
    (np.zeros((3, 2)), "tokens: expected an integer array"),
])
def test_chi_square_refuses_bad_tokens(tokens, pattern):
    with pytest.raises(ValueError, match=pattern):
        chi_square_pvalue(tokens, np.full((2, 2), 0.25))


def test_chi_square_refuses_a_bad_law():
    with pytest.raises(ValueError, match="law: expected probabilities summing to 1"):
        chi_square_pvalue(np.zeros((3, 2), dtype=np.int64), np.full((2, 2), 0.3))


def test_homogeneity_against_the_hand_statistic():
    """2 x 2 table (30, 10 | 10, 30), expected 20 everywhere: Yates' X^2 = 4 (10 - 0.5)^2 / 20 = 18.05."""
    a = torch.tensor([[0]] * 30 + [[1]] * 10)
    b = torch.tensor([[0]] * 10 + [[1]] * 30)
    assert homogeneity_pvalue(a, b, V=2) == pytest.approx(stats.chi2.sf(18.05, 1), rel=1e-12)
    assert homogeneity_pvalue(a, a, V=2) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"a: expected an integer array of shape \(N, L\)"):
        homogeneity_pvalue(np.zeros(3, dtype=np.int64), a, V=2)


# ---------- the optional extra ----------

def test_without_hypothesis_the_import_error_names_the_extra(monkeypatch):
    for name in ("imdm_lab.testing", "toy_tasks.testing"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # what `import hypothesis` sees when it is absent
    for name in ("imdm_lab.testing", "toy_tasks.testing"):
        with pytest.raises(ImportError, match=r"needs hypothesis.*pip install 'imdm-lab\[testing\]'"):
            importlib.import_module(name)


# ---------- docs/testing.md ----------

def test_the_worked_examples_of_docs_testing_run():
    namespace = {"__name__": "docs_testing"}
    for index, block in enumerate(python_blocks(DOC)):
        exec(compile(block, f"docs/testing.md block {index}", "exec"), namespace)
    examples = {name: f for name, f in namespace.items() if name.startswith("test_") and callable(f)}
    assert len(examples) == 3
    for run in examples.values():
        run()  # hypothesis runs each one over its examples
