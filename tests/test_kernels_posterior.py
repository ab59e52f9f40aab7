"""Reverse posteriors: three-way IMDM split, MDM two-way, endpoints, fix_eps; and q_sample (drawn or given coins)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imdm_lab.masking import q_sample
from imdm_lab.posterior import imdm_coefficients, imdm_posterior, mdm_coefficients, mdm_posterior
from imdm_lab.schedules import SCHEDULES, get_schedule

times = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(SCHEDULES)), a=times, b=times)
def test_three_parts_sum_to_one_and_split_mdm_stay(name, a, b):
    t, s = torch.tensor([max(a, b)], dtype=torch.float64), torch.tensor([min(a, b)], dtype=torch.float64)
    sched = get_schedule(name)
    at, as_ = sched.alpha(t), sched.alpha(s)
    unmask, keep, reset = imdm_coefficients(at, as_)
    u2, stay = mdm_coefficients(at, as_)
    for c in (unmask, keep, reset):
        assert torch.isfinite(c).all() and (c >= 0).all() and (c <= 1).all()
    assert torch.allclose(unmask + keep + reset, torch.ones(1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(keep + reset, stay, atol=1e-12)
    assert torch.equal(unmask, u2)
    if (1 - at) > 1e-9 and as_ > 1e-9:
        # the closed forms of Ugness/IMDM algo.py, IMDM._compute_posterior
        assert torch.allclose(keep, (at / as_ - at) / (1 - at), atol=1e-9)
        assert torch.allclose(reset, (1 - at / as_) * (1 - as_) / (1 - at), atol=1e-9)
    _, k0, r0 = imdm_coefficients(at, as_, fix_eps=True)
    assert torch.equal(r0, torch.zeros_like(r0)) and torch.allclose(k0, stay)


def test_hand_values_of_the_split():
    # loglinear, k = 2, first step t = 1 -> s = 0.5 (by hand, alpha = 1 - 0.999 t: .001 / .499 / .5)
    sched = get_schedule("loglinear")
    at, as_ = sched.alpha(torch.tensor([1.0], dtype=torch.float64)), sched.alpha(torch.tensor([0.5],
                                                                                            dtype=torch.float64))
    unmask, keep, reset = imdm_coefficients(at, as_)
    assert abs(float(unmask) - 0.4995 / 0.999) < 1e-12
    assert abs(float(keep) - 0.001 / 0.5005 * 0.4995 / 0.999) < 1e-12
    assert round(float(keep), 4) == 0.0010 and round(float(reset), 3) == 0.499


def test_endpoints_are_nan_free():
    at = torch.tensor([0.0, 1.0, 1.0, 0.3])
    as_ = torch.tensor([1.0, 1.0, 1.0, 0.3])
    for c in imdm_coefficients(at, as_):
        assert torch.isfinite(c).all()
    unmask, _, _ = imdm_coefficients(at, as_)
    assert torch.equal(unmask, torch.tensor([1.0, 1.0, 1.0, 0.0]))


def test_full_posterior_tensors():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 3, 5, generator=g, dtype=torch.float64), -1)
    at, as_ = torch.tensor([0.2, 0.5], dtype=torch.float64), torch.tensor([0.6, 0.9], dtype=torch.float64)
    post3 = imdm_posterior(p, at, as_)
    post2 = mdm_posterior(p, at, as_)
    assert post3.shape == (2, 3, 7) and post2.shape == (2, 3, 6)
    assert torch.allclose(post3.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert torch.allclose(post3[..., 5] + post3[..., 6], post2[..., 5])
    assert torch.allclose(post3[..., :5], post2[..., :5])
    assert torch.equal(imdm_posterior(p, at, as_, fix_eps=True)[..., 6], torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="^alpha_t:"):
        imdm_posterior(p, torch.zeros(3), torch.zeros(3))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_q_sample_masks_at_rate_one_minus_alpha(name):
    n = 20000
    x0 = torch.randint(0, 7, (4, n), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 0.25, 0.7, 1.0], dtype=torch.float64)
    xt, masked = q_sample(x0, t, name, 7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(xt == 7, masked) and torch.equal(xt[~masked], x0[~masked])
    rate = 1 - get_schedule(name).alpha(t)
    sd = torch.sqrt(rate * (1 - rate) / n)
    assert ((masked.double().mean(1) - rate).abs() <= 5 * sd + 1e-12).all()


def test_q_sample_masks_exactly_where_the_given_coins_are_below_one_minus_alpha():
    # hand case: linear, 1 - alpha_t = t; a coin equal to it is not below it; t = 0 masks nothing
    x0 = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 1], [2, 2, 2, 2]])
    t = torch.tensor([0.5, 0.25, 0.0], dtype=torch.float64)
    coins = torch.tensor([[0.1, 0.5, 0.49, 0.9], [0.25, 0.2, 0.0, 0.99], [0.0, 0.3, 0.6, 0.9]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    xt, masked = q_sample(x0, t, "linear", 7, generator=g, coins=coins)
    want = torch.tensor([[True, False, True, False], [False, True, True, False], [False] * 4])
    assert torch.equal(masked, want)
    assert torch.equal(xt, torch.tensor([[7, 2, 7, 4], [5, 7, 7, 1], [2, 2, 2, 2]]))
    # the coins replace the generator's draw: it is left untouched ...
    assert torch.equal(torch.rand(5, generator=g), torch.rand(5, generator=torch.Generator().manual_seed(3)))
    # ... and a generator's coins are the float64 uniforms it would give in that shape
    drawn = torch.rand(3, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(q_sample(x0, t, "linear", 7, coins=drawn)[1],
                       q_sample(x0, t, "linear", 7, generator=torch.Generator().manual_seed(4))[1])
    # cosine at t = 1: 1 - alpha = 1 - ALPHA_FLOOR = 0.999 (cos(pi / 2) ~ 6e-17)
    xt, masked = q_sample(x0[:1], torch.ones(1, dtype=torch.float64), "cosine", 7,
                          coins=torch.tensor([[0.998, 0.9995, 0.0, 0.99899]], dtype=torch.float64))
    assert masked.tolist() == [[True, False, True, True]]
    with pytest.raises(ValueError, match="^coins:"):
        q_sample(x0, t, "linear", 7, coins=torch.zeros(3, 5, dtype=torch.float64))


def test_q_sample_bad_input():
    with pytest.raises(ValueError, match="^t:"):
        q_sample(torch.zeros(2, 3, dtype=torch.long), torch.tensor([0.5, 1.5]), "linear", 4)
    with pytest.raises(ValueError, match="^x0:"):
        q_sample(torch.zeros(2, 3), torch.tensor([0.5, 0.5]), "linear", 4)
    with pytest.raises(ValueError, match="^schedule:"):
        q_sample(torch.zeros(2, 3, dtype=torch.long), 0.5, "quadratic", 4)


@pytest.mark.parametrize("coins, word", [(torch.zeros(2, 3, dtype=torch.long), "float tensor"),
                                         (torch.full((2, 3), float("nan")), r"\[0, 1\)"),
                                         (torch.full((2, 3), 1.0), r"\[0, 1\)")])
def test_q_sample_refuses_coins_that_are_not_uniforms(coins, word):
    with pytest.raises(ValueError, match=f"^coins: expected.*{word}"):
        q_sample(torch.zeros(2, 3, dtype=torch.long), 0.5, "linear", 9, coins=coins)
