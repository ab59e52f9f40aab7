"""Counter-based seeded draws and the mask-label laws: layout independence, dtype, uniformity; the label
vocabulary; the hashed perturbation of the coupling (t and mask from the seed alone)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from test_kernels_losses import _time_denoiser

from imdm_lab.counter_rng import generator_draw, hash_uniform, normal_at, uniform_at
from imdm_lab.distill import perturbed_coupling
from imdm_lab.labels import LABEL_KINDS, LABEL_NAMES, MaskLabels, mask_labels
from imdm_lab.process import Process

KINDS = [MaskLabels("rand", dim=5, scale=2.0), MaskLabels("randn", dim=3), MaskLabels("learnable", dim=4),
         MaskLabels("finite", K=7)]


@pytest.mark.parametrize("labels", KINDS, ids=lambda n: n.kind)
def test_seeded_eps_ignores_batch_layout(labels):
    seeds = torch.tensor([5, -3, 2**40 + 7, 0, 123456789])
    full = labels.from_seeds(seeds, 6)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(labels.from_seeds(seeds[perm], 6), full[perm])
    chunks = torch.cat([labels.from_seeds(seeds[:2], 6), labels.from_seeds(seeds[2:], 6)])
    assert torch.equal(chunks, full)
    single = torch.cat([labels.from_seeds(seeds[i:i + 1], 6) for i in range(5)])
    assert torch.equal(single, full)


@pytest.mark.parametrize("labels", KINDS[:3], ids=lambda n: n.kind)
def test_seeded_eps_dtype_is_a_cast_of_float64(labels):
    seeds = torch.arange(4)
    e64 = labels.from_seeds(seeds, 3, dtype=torch.float64)
    assert torch.equal(labels.from_seeds(seeds, 3, dtype=torch.float32), e64.float())
    assert torch.equal(labels.from_seeds(seeds, 3, dtype=torch.bfloat16), e64.bfloat16())


@pytest.mark.parametrize("labels", KINDS, ids=lambda n: n.kind)
def test_at_agrees_with_from_seeds_and_streams_differ(labels):
    seeds = torch.tensor([11, 12, 13])
    full = labels.from_seeds(seeds, 5, stream=4)
    b = torch.tensor([2, 0, 1, 2])
    pos = torch.tensor([4, 0, 3, 1])
    assert torch.equal(labels.at(seeds[b], 4, pos), full[b, pos])
    other = labels.from_seeds(seeds, 5, stream=5)
    assert (other != full).float().mean() > (0.5 if labels.continuous else 0.7)


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


@pytest.mark.parametrize("labels", KINDS, ids=lambda n: n.kind)
def test_generator_draws_are_reproducible_and_in_range(labels):
    a = labels.draw(3, 4, generator=torch.Generator().manual_seed(1))
    b = labels.draw(3, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    labels.check(a, 3, 4)
    if labels.kind == "rand":
        assert a.abs().max() <= labels.scale
    if labels.kind == "finite":
        assert a.dtype == torch.int64 and 0 <= a.min() and a.max() < labels.K


@pytest.mark.parametrize("kwargs, word", [
    (dict(kind="gauss", dim=3), "kind"), (dict(kind="rand", dim=0), "dim"), (dict(kind="finite"), "K"),
    (dict(kind="rand", dim=2, scale=-1.0), "scale"), (dict(kind="rand", dim=2, scale=float("inf")), "scale"),
    (dict(kind="randn", dim=2, scale=True), "scale")])
def test_bad_noise_arguments(kwargs, word):
    with pytest.raises(ValueError, match=f"^{word}:"):
        MaskLabels(**kwargs)


def test_bad_seeds_and_eps_shapes():
    labels = MaskLabels("rand", dim=3)
    with pytest.raises(ValueError, match="^seeds:"):
        labels.from_seeds(torch.tensor([1.5]), 2)
    with pytest.raises(ValueError, match="^seeds:"):
        hash_uniform(torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="^n:"):
        hash_uniform(torch.zeros(2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="^eps:"):
        labels.check(torch.zeros(2, 4, 2), 2, 4)
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
    labels = MaskLabels("rand", dim=3)
    s = torch.tensor(seeds)
    full = labels.from_seeds(s, 4, stream=3)
    perm = torch.tensor(data.draw(st.permutations(range(len(seeds)))))
    cut = data.draw(st.integers(0, len(seeds)))
    parts = [labels.from_seeds(s[perm][:cut], 4, stream=3), labels.from_seeds(s[perm][cut:], 4, stream=3)]
    assert torch.equal(torch.cat(parts), full[perm])


def test_generator_draw_is_the_generator_stream_on_the_target_device():
    a = generator_draw(torch.rand, (3, 4), generator=torch.Generator().manual_seed(5), device="cpu",
                       dtype=torch.float64)
    assert torch.equal(a, torch.rand((3, 4), generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    b = generator_draw(torch.randint, 0, 7, (100,), generator=torch.Generator().manual_seed(5))
    assert b.device.type == "cpu" and b.dtype == torch.int64 and int(b.min()) >= 0 and int(b.max()) < 7


@pytest.mark.parametrize("kind", ["rand", "randn", "learnable"])
def test_to_uniform_is_the_cdf_of_the_label_law(kind):
    labels = MaskLabels(kind, dim=3, scale=2.0)
    eps = labels.draw(4000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    u = labels.to_uniform(eps)
    z = eps.numpy() / 2.0
    want = (z + 1.0) / 2.0 if kind == "rand" else stats.norm.cdf(z)
    np.testing.assert_allclose(u.numpy(), want, atol=1e-12)
    assert stats.kstest(u.numpy().ravel(), "uniform").pvalue > 1e-4
    with pytest.raises(ValueError, match="^labels: expected continuous labels"):
        MaskLabels("finite", K=4).to_uniform(torch.zeros(2, 2, dtype=torch.long))


def test_mask_labels_speaks_the_one_vocabulary_of_the_label_law():
    assert LABEL_NAMES == ("none", "rand", "randn", "learnable", "finite") and set(LABEL_NAMES[1:]) == set(LABEL_KINDS)
    assert mask_labels("none") is None and mask_labels("none", dim=3, K=4) is None  # an MDM: no labels
    assert mask_labels("finite", K=5) == MaskLabels("finite", K=5)
    assert mask_labels("finite", dim=3, scale=2.0, K=2) == MaskLabels("finite", K=2)  # dim, scale: continuous only
    for kind in ("rand", "randn", "learnable"):
        assert mask_labels(kind, dim=3, scale=2.0) == MaskLabels(kind, dim=3, scale=2.0)
    with pytest.raises(ValueError, match="^K:"):
        mask_labels("finite")
    with pytest.raises(ValueError, match="^dim:"):
        mask_labels("randn")
    for bad in ("gauss", "None", "", None):
        with pytest.raises(ValueError, match="^labels: expected one of none, rand, randn, learnable, finite, got"):
            mask_labels(bad, dim=3)


@pytest.mark.parametrize("labels", [None, MaskLabels("rand", dim=2)], ids=["mdm", "imdm"])
def test_hashed_perturbation_depends_on_each_samples_seed_alone(labels):
    V, N, L = 5, 12, 6
    process = Process(V, "cosine", labels)
    x0 = torch.randint(0, V, (N, L), generator=torch.Generator().manual_seed(1))
    seeds = torch.tensor([3, -7, 2**40 + 1, 0, 11, 12, 13, 99, 2**62 - 1, 5, 6, 8])
    kw = dict(steps=3, process=process, hashed=True)
    full = perturbed_coupling(_time_denoiser(V, 0), x0, seeds=seeds, generator=torch.Generator().manual_seed(2), **kw)
    assert (full.x_t == V).any() and (full.x_t != V).any() and torch.equal(full.seeds, seeds)
    perm = torch.tensor([7, 2, 11, 0, 5, 9, 1, 3, 10, 4, 8, 6])
    moved = perturbed_coupling(_time_denoiser(V, 0), x0[perm], seeds=seeds[perm],
                               generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(moved.x_t, full.x_t[perm]) and torch.equal(moved.t, full.t[perm])
    part = perturbed_coupling(_time_denoiser(V, 0), x0[5:], seeds=seeds[5:], generator=torch.Generator().manual_seed(4),
                              **kw)
    assert torch.equal(part.x_t, full.x_t[5:]) and torch.equal(part.t, full.t[5:])
    # the teacher keeps every visible token and fills every mask
    visible = full.x_t != V
    assert torch.equal(full.x_0[visible], x0[visible]) and (full.x_0 < V).all()
    # without hashing the masking level comes from the generator in batch order: the rows do not permute
    plain = [perturbed_coupling(_time_denoiser(V, 0), x0[order], steps=3, process=process, seeds=seeds[order],
                                generator=torch.Generator().manual_seed(3)) for order in (torch.arange(N), perm)]
    assert not torch.equal(plain[1].t, plain[0].t[perm])
    with pytest.raises(ValueError, match="^seeds:"):
        perturbed_coupling(_time_denoiser(V, 0), x0, generator=torch.Generator().manual_seed(2), **kw)


def test_hashed_perturbation_has_the_masking_law_of_the_mask_schedule():
    # t ~ U[t_min, 1] and each position masked with probability 1 - alpha(t) = t of the linear mask
    # schedule (the default, whatever the teacher's own schedule), independently given t
    V, N, L = 4, 20_000, 8
    x0 = torch.randint(0, V, (N, L), generator=torch.Generator().manual_seed(5))
    seeds = torch.arange(N) * 7919 + 3
    teacher = _time_denoiser(V, 0)
    out = perturbed_coupling(teacher, x0, steps=1, process=Process(V, "cosine", t_min=0.2), seeds=seeds,
                             hashed=True, generator=torch.Generator().manual_seed(6))
    t = out.t
    assert t.dtype == torch.float64 and float(t.min()) >= 0.2 and float(t.max()) <= 1.0
    assert stats.kstest(((t - 0.2) / 0.8).numpy(), "uniform").pvalue > 1e-4
    masked = (out.x_t == V).double().sum(1)
    for lo in np.arange(0.2, 1.0, 0.2):  # per band of t: masked count ~ sum of Binomial(L, t_n)
        band = (t >= lo) & (t < lo + 0.2)
        mean, var = (L * t[band]).sum(), (L * t[band] * (1 - t[band])).sum()
        assert abs(float(masked[band].sum() - mean)) <= 5 * float(var.sqrt())
    # the coins are independent across positions: the per-row count has the binomial variance
    resid = masked - L * t
    assert abs(float((resid ** 2).mean() / (L * t * (1 - t)).mean()) - 1.0) < 0.05
    # t_min= overrides the process's own
    low = perturbed_coupling(teacher, x0[:500], steps=1, process=Process(V, t_min=0.2), seeds=seeds[:500],
                             hashed=True, t_min=0.6, generator=torch.Generator().manual_seed(7))
    # the same hashed uniform per seed, mapped onto [0.6, 1] instead of [0.2, 1]
    assert float(low.t.min()) >= 0.6 and torch.allclose((low.t - 0.6) / 0.4, (t[:500] - 0.2) / 0.8, atol=1e-12)


def test_hashed_perturbation_refuses_a_t_min_outside_the_unit_interval():
    teacher = lambda x, eps, t: torch.zeros(*x.shape, 3)  # noqa: E731
    with pytest.raises(ValueError, match=r"^t_min: expected a number in \[0, 1\)"):
        perturbed_coupling(teacher, torch.zeros(2, 3, dtype=torch.long), steps=1, process=Process(3),
                           t_min=1.5, seeds=torch.arange(2), hashed=True)
