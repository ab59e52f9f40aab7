"""Schedules: alpha and its derivative, the reveal-step law, and the training-time sampler."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imdm_lab.schedules import SCHEDULES, get_schedule, sample_times


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_alpha_endpoints_and_derivative_by_finite_differences(name):
    s = get_schedule(name)
    assert float(s.alpha(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(1.0)
    assert float(s.alpha(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(0.0 if name == "linear" else 1e-3)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
    assert torch.allclose(s.dalpha(t), numeric, atol=1e-8)
    assert (s.dalpha(t) < 0).all()


def test_elbo_weight_is_one_over_t_for_linear_and_loglinear():
    t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
    for name in ("linear", "loglinear"):
        assert torch.allclose(get_schedule(name).elbo_weight(t), 1 / t)


def test_cosine_reveal_law_by_hand():
    """P(step j) = (alpha(t_j) - alpha(t_{j-1})) / (1 - alpha(1)), alpha = a + (1 - a) cos(pi t / 2)."""
    a, k = 1e-3, 3
    alpha = lambda t: a + (1 - a) * math.cos(math.pi * t / 2)  # noqa: E731
    grid = [1, 2 / 3, 1 / 3, 0]
    expected = [(alpha(grid[j]) - alpha(grid[j - 1])) / (1 - alpha(1)) for j in (1, 2, 3)]
    assert np.allclose(get_schedule("cosine").reveal_probs(k), expected, atol=1e-15)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(SCHEDULES)), st.integers(1, 64))
def test_reveal_law_is_a_distribution(name, k):
    p = get_schedule(name).reveal_probs(k)
    assert p.shape == (k,) and (p >= -1e-15).all() and abs(p.sum() - 1) < 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.floats(0.0, 0.5), st.integers(0, 2**31 - 1))
def test_antithetic_times_are_stratified(batch, t_min, seed):
    """Antithetic: one sample in each of the B equal strata of [t_min, 1]."""
    t = sample_times(batch, t_min=t_min, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert ((t >= t_min) & (t <= 1)).all()
    strata = torch.floor((t - t_min) / (1 - t_min) * batch).clamp_max(batch - 1).long()
    assert sorted(strata.tolist()) == list(range(batch))


def test_iid_times_are_uniform_on_the_interval():
    t = sample_times(100_000, t_min=0.2, antithetic=False, generator=torch.Generator().manual_seed(0),
                     dtype=torch.float64)
    assert float(t.min()) >= 0.2 and float(t.max()) <= 1
    assert abs(float(t.mean()) - 0.6) < 3 * (0.8 / math.sqrt(12)) / math.sqrt(1e5) * 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch=0), "batch: expected"),
    (dict(batch=4, t_min=1.0), "t_min: expected"),
])
def test_sample_times_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_times(**kwargs)


def test_unknown_schedule_and_bad_steps():
    with pytest.raises(ValueError, match="schedule: expected one of"):
        get_schedule("sqrt")
    with pytest.raises(ValueError, match="steps: expected an integer >= 1"):
        get_schedule("linear").reveal_probs(0)
