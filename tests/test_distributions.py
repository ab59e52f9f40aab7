"""The named toy tasks: each joint has the structure its name promises, checked by enumeration."""
import itertools
import math

import numpy as np
import pytest

from imdm_lab import exact as E
from toy_tasks.distributions import TASK_OPTIONS, TASKS, VALIDATORS, make_task


def entropy_of(p, positions):
    return E.entropy(E.marginal(p, positions)) if positions else 0.0


@pytest.mark.parametrize("name", [n for n in TASKS if n != "file"])
def test_every_task_builds_a_valid_joint_with_its_defaults(name):
    task = make_task(name)
    assert set(task.params) == set(TASKS[name].defaults)
    assert task.probs.dtype == np.float64 and task.probs.shape == (task.V,) * task.L
    assert E.check_joint(task.probs) == (task.V, task.L)


def test_align_is_uniform_on_the_constant_sequences():
    V, L = 5, 3
    p = make_task("align", V=V, L=L).probs
    for x in itertools.product(range(V), repeat=L):
        assert p[x] == (1 / V if len(set(x)) == 1 else 0.0)
    assert E.total_correlation(p) == pytest.approx((L - 1) * math.log(V), abs=1e-12)


def test_parity_last_token_is_the_sum_and_any_L_minus_1_positions_are_uniform():
    V, L = 3, 4
    p = make_task("parity", V=V, L=L).probs
    for x in itertools.product(range(V), repeat=L):
        assert p[x] == pytest.approx(V ** (1 - L) if x[-1] == sum(x[:-1]) % V else 0.0, abs=1e-15)
    for drop in range(L):
        np.testing.assert_allclose(p.sum(axis=drop), V ** (1 - L), atol=1e-15)
    assert E.total_correlation(p) == pytest.approx(math.log(V), abs=1e-12)


def test_permutation_is_uniform_on_distinct_tokens():
    V, L = 4, 3
    p = make_task("permutation", V=V, L=L).probs
    for x in itertools.product(range(V), repeat=L):
        assert p[x] == pytest.approx(1 / math.perm(V, L) if len(set(x)) == L else 0.0, abs=1e-15)


def test_markov_is_seeded_and_has_the_markov_property():
    p = make_task("markov", V=3, L=4, seed=7, alpha=0.7).probs
    np.testing.assert_array_equal(p, make_task("markov", V=3, L=4, seed=7, alpha=0.7).probs)
    assert not np.allclose(p, make_task("markov", V=3, L=4, seed=8, alpha=0.7).probs)
    for i in range(1, p.ndim - 1):
        # H(X_{i+1} | X_0..X_i) = H(X_{i+1} | X_i): the past adds nothing given the present.
        past = list(range(i + 1))
        full = entropy_of(p, past + [i + 1]) - entropy_of(p, past)
        local = entropy_of(p, [i, i + 1]) - entropy_of(p, [i])
        assert full == pytest.approx(local, abs=1e-12)


def test_dirichlet_is_seeded_and_concentration_controls_spread():
    a = make_task("dirichlet", V=3, L=3, seed=1, alpha=1.0).probs
    np.testing.assert_array_equal(a, make_task("dirichlet", V=3, L=3, seed=1, alpha=1.0).probs)
    assert not np.allclose(a, make_task("dirichlet", V=3, L=3, seed=2, alpha=1.0).probs)
    peaked = np.mean([E.entropy(make_task("dirichlet", V=3, L=3, seed=s, alpha=0.05).probs) for s in range(5)])
    flat = np.mean([E.entropy(make_task("dirichlet", V=3, L=3, seed=s, alpha=50.0).probs) for s in range(5)])
    assert peaked < flat


def test_mixture_has_its_modes_on_a_uniform_floor():
    V, L, modes, uniform = 4, 3, 5, 0.2
    p = make_task("mixture", V=V, L=L, seed=3, modes=modes, uniform=uniform).probs
    floor = uniform / V**L
    assert p.min() == pytest.approx(floor, abs=1e-15)
    heavy = np.isclose(p, floor + (1 - uniform) / modes, atol=1e-15)
    assert heavy.sum() == modes and np.allclose(p[~heavy], floor, atol=1e-15)


def test_file_round_trip_and_bad_files(tmp_path):
    p = make_task("dirichlet", V=3, L=2).probs
    np.save(tmp_path / "joint.npy", p)
    task = make_task("file", path=str(tmp_path / "joint.npy"))
    np.testing.assert_array_equal(task.probs, p)
    assert (task.V, task.L) == (3, 2)
    np.save(tmp_path / "bad.npy", p * 2)
    with pytest.raises(ValueError, match=r"^path: expected a readable .npy file holding a joint, .*bad\.npy' "
                                         r"\(expected probabilities summing to 1"):
        make_task("file", path=str(tmp_path / "bad.npy"))
    with pytest.raises(ValueError, match="path: expected a readable .npy file"):
        make_task("file", path=str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="path: required by task 'file'"):
        make_task("file")


@pytest.mark.parametrize("name,params,pattern", [
    ("zigzag", {}, "task: expected one of"),
    ("align", {"V": 1}, "V: expected an integer >= 2, got 1"),
    ("align", {"L": 0}, "L: expected an integer >= 1, got 0"),
    ("align", {"V": 2.5}, "V: expected an integer >= 2"),
    ("align", {"V": True}, "V: expected an integer >= 2"),
    ("align", {"alpha": 1.0}, "alpha: not a parameter of task 'align'"),
    ("parity", {"L": 1}, "L: expected an integer >= 2 for parity"),
    ("permutation", {"V": 3, "L": 4}, "V: expected V >= L = 4"),
    ("markov", {"seed": -1}, r"seed: expected an integer in \[0, 2\^31\)"),
    ("markov", {"alpha": 0.0}, "alpha: expected a finite number > 0"),
    ("dirichlet", {"alpha": float("nan")}, "alpha: expected a finite number > 0"),
    ("mixture", {"uniform": 1.5}, r"uniform: expected a number in \[0, 1\]"),
    ("mixture", {"modes": 0}, "modes: expected an integer >= 1"),
    ("mixture", {"V": 2, "L": 2, "modes": 5}, "modes: expected at most V\\*\\*L = 4"),
    ("align", {"V": 50000, "L": 10}, r"V, L: expected .* budget of 4 GiB, got V=50000, L=10"),
])
def test_bad_parameters_are_refused(name, params, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_task(name, **params)


def test_memory_budget_is_configurable():
    with pytest.raises(ValueError, match="V, L: .* budget"):
        make_task("align", V=4, L=4, budget_bytes=1000)
    assert make_task("align", V=4, L=4, budget_bytes=E.engine_bytes(4, 4)).V == 4


def test_command_line_options_cover_every_task_parameter_but_the_file_path():
    """--probs gives `path`; every other parameter a task takes has its own option."""
    taken = set().union(*(spec.defaults for spec in TASKS.values()))
    assert set(TASK_OPTIONS) == taken - {"path"}
    assert set(TASK_OPTIONS) <= set(VALIDATORS)
