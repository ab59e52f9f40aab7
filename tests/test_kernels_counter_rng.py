"""Counter-based seeded noise and the mask-label laws: layout independence, dtype, uniformity."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from imdm_lab.labels import MaskLabels
from imdm_lab.counter_rng import generator_draw, hash_uniform, normal_at, uniform_at

KINDS = [MaskLabels("rand", dim=5, scale=2.0), MaskLabels("randn", dim=3), MaskLabels("learnable", dim=4),
         MaskLabels("finite", K=7)]


@pytest.mark.parametrize("noise", KINDS, ids=lambda n: n.kind)
def test_seeded_eps_ignores_batch_layout(noise):
    seeds = torch.tensor([5, -3, 2**40 + 7, 0, 123456789])
    full = noise.from_seeds(seeds, 6)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(noise.from_seeds(seeds[perm], 6), full[perm])
    chunks = torch.cat([noise.from_seeds(seeds[:2], 6), noise.from_seeds(seeds[2:], 6)])
    assert torch.equal(chunks, full)
    single = torch.cat([noise.from_seeds(seeds[i:i + 1], 6) for i in range(5)])
    assert torch.equal(single, full)


@pytest.mark.parametrize("noise", KINDS[:3], ids=lambda n: n.kind)
def test_seeded_eps_dtype_is_a_cast_of_float64(noise):
    seeds = torch.arange(4)
    e64 = noise.from_seeds(seeds, 3, dtype=torch.float64)
    assert torch.equal(noise.from_seeds(seeds, 3, dtype=torch.float32), e64.float())
    assert torch.equal(noise.from_seeds(seeds, 3, dtype=torch.bfloat16), e64.bfloat16())


@pytest.mark.parametrize("noise", KINDS, ids=lambda n: n.kind)
def test_at_agrees_with_from_seeds_and_streams_differ(noise):
    seeds = torch.tensor([11, 12, 13])
    full = noise.from_seeds(seeds, 5, stream=4)
    b = torch.tensor([2, 0, 1, 2])
    pos = torch.tensor([4, 0, 3, 1])
    assert torch.equal(noise.at(seeds[b], 4, pos), full[b, pos])
    other = noise.from_seeds(seeds, 5, stream=5)
    assert (other != full).float().mean() > (0.5 if noise.continuous else 0.7)


def test_different_seeds_give_different_values():
    u = hash_uniform(torch.arange(1000), 64)
    rows = {tuple(r) for r in u.numpy().tolist()}
    assert len(rows) == 1000
    # neighbouring seeds are uncorrelated: |corr| below 5 standard errors of 1/sqrt(n)
    corr = np.corrcoef(u[:-1].flatten().numpy(), u[1:].flatten().numpy())[0, 1]
    assert abs(corr) < 5 / math.sqrt(u[1:].numel())


def test_hashed_uniform_and_normal_laws():
    seeds = torch.arange(200)
    u = hash_uniform(seeds, 500).flatten().numpy()
    assert u.min() >= 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    n = normal_at(seeds[:, None], 0, torch.arange(500)[None, :]).flatten().numpy()
    assert stats.kstest(n, "norm").pvalue > 1e-3
    k = MaskLabels("finite", K=7).from_seeds(seeds, 500).flatten().numpy()
    counts = np.bincount(k, minlength=7)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_hash_is_deterministic_and_seed_sign_matters():
    a = uniform_at(torch.tensor([-1]), 0, torch.arange(8))
    b = uniform_at(torch.tensor([-1]), 0, torch.arange(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, uniform_at(torch.tensor([1]), 0, torch.arange(8)))


@pytest.mark.parametrize("noise", KINDS, ids=lambda n: n.kind)
def test_generator_draws_are_reproducible_and_in_range(noise):
    a = noise.draw(3, 4, generator=torch.Generator().manual_seed(1))
    b = noise.draw(3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    noise.check(a, 3, 4)
    if noise.kind == "rand":
        assert a.abs().max() <= noise.scale
    if noise.kind == "finite":
        assert a.dtype == torch.int64 and 0 <= a.min() and a.max() < noise.K


@pytest.mark.parametrize("kwargs, word", [
    (dict(kind="gauss", dim=3), "kind"), (dict(kind="rand", dim=0), "dim"), (dict(kind="finite"), "K"),
    (dict(kind="rand", dim=2, scale=-1.0), "scale"), (dict(kind="rand", dim=2, scale=float("inf")), "scale"),
    (dict(kind="randn", dim=2, scale=True), "scale")])
def test_bad_noise_arguments(kwargs, word):
    with pytest.raises(ValueError, match=f"^{word}:"):
        MaskLabels(**kwargs)


def test_bad_seeds_and_eps_shapes():
    noise = MaskLabels("rand", dim=3)
    with pytest.raises(ValueError, match="^seeds:"):
        noise.from_seeds(torch.tensor([1.5]), 2)
    with pytest.raises(ValueError, match="^seeds:"):
        hash_uniform(torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="^n:"):
        hash_uniform(torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="^eps:"):
        noise.check(torch.zeros(2, 4, 2), 2, 4)
    with pytest.raises(ValueError, match="^eps:"):
        MaskLabels("finite", K=3).check(torch.zeros(2, 4), 2, 4)


def _mix32_reference(x: int) -> int:
    m = 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & m
    x ^= x >> 15
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def _uniform_reference(seed: int, stream: int, index: int) -> float:
    """The documented hash in exact Python integers (no int64 wrap-around involved)."""
    m = 0xFFFFFFFF
    seed &= 0xFFFFFFFFFFFFFFFF  # two's complement of a negative int64
    k = _mix32_reference((stream & m) ^ 0x9E3779B9)
    k = _mix32_reference((seed >> 32) ^ k)
    k = _mix32_reference((seed & m) ^ k)
    return _mix32_reference(k ^ _mix32_reference(index)) / 2**32


def test_hash_is_bit_exact_against_python_integers():
    cases = [(0, 0, 0), (1, 0, 5), (-1, 3, 2**31 - 1), (2**63 - 1, 7, 12345), (-(2**63), 1, 99),
             (987654321987, 2**31, 2**30 + 17)]
    for seed, stream, index in cases:
        got = uniform_at(torch.tensor([seed]), stream, torch.tensor([index]))
        assert float(got) == _uniform_reference(seed, stream, index)


@settings(max_examples=30, deadline=None)
@given(seeds=st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=6), data=st.data())
def test_seeded_labels_depend_on_the_seed_alone(seeds, data):
    noise = MaskLabels("rand", dim=3)
    s = torch.tensor(seeds)
    full = noise.from_seeds(s, 4, stream=3)
    perm = torch.tensor(data.draw(st.permutations(range(len(seeds)))))
    cut = data.draw(st.integers(0, len(seeds)))
    parts = [noise.from_seeds(s[perm][:cut], 4, stream=3), noise.from_seeds(s[perm][cut:], 4, stream=3)]
    assert torch.equal(torch.cat(parts), full[perm])


def test_generator_draw_is_the_generator_stream_on_the_target_device():
    a = generator_draw(torch.rand, (3, 4), generator=torch.Generator().manual_seed(5), device="cpu",
                       dtype=torch.float64)
    assert torch.equal(a, torch.rand((3, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    b = generator_draw(torch.randint, 0, 7, (100,), generator=torch.Generator().manual_seed(5))
    assert b.device.type == "cpu" and b.dtype == torch.int64 and int(b.min()) >= 0 and int(b.max()) < 7


@pytest.mark.parametrize("kind", ["rand", "randn", "learnable"])
def test_to_uniform_is_the_cdf_of_the_label_law(kind):
    noise = MaskLabels(kind, dim=3, scale=2.0)
    eps = noise.draw(4000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = noise.to_uniform(eps)
    z = eps.numpy() / 2.0
    want = (z + 1.0) / 2.0 if kind == "rand" else stats.norm.cdf(z)
    np.testing.assert_allclose(u.numpy(), want, atol=1e-12)
    assert stats.kstest(u.numpy().ravel(), "uniform").pvalue > 1e-4
    with pytest.raises(ValueError, match="^noise: expected continuous labels"):
        MaskLabels("finite", K=4).to_uniform(torch.zeros(2, 2, dtype=torch.long))
