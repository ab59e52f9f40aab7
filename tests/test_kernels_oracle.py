"""The torch kernels against the exact engine, through the oracle denoisers of toy_tasks.oracle.

Goodness of fit: the real sampler with oracle-mdm must have the law exact.mdm_law(p, k). Each test is a
chi-square test on N = 100 000 samples with a fixed seed at significance 1e-4 (cells with expected count
below 5 are pooled); over the 26 fits of this file the family-wise false-alarm rate is below 0.3 %.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imdm_lab import exact
from imdm_lab.labels import MaskLabels
from imdm_lab.losses import elbo, elbo_terms, subs_log_probs
from imdm_lab.sampling import sample
from imdm_lab.schedules import sample_times
from imdm_lab.testing import chi_square_pvalue
from toy_tasks.distributions import make_task
from toy_tasks.oracle import OracleIMDM, make_oracle
from toy_tasks.testing import tasks

N = 100_000
ALPHA = 1e-4
TASKS = {
    "align": dict(V=3, L=3),
    "parity": dict(V=3, L=3),
    "markov": dict(V=3, L=3, seed=1),
    "dirichlet": dict(V=2, L=4, seed=2, alpha=0.5),
}


def _draw(task, model, steps, schedule, seed, labels=None, **kw):
    p = make_task(task, **TASKS[task]).probs
    den = make_oracle(model, p, labels, schedule=schedule)  # the oracle's process: mask id V, this schedule
    out = sample(den, batch_size=N, length=p.ndim, steps=steps, generator=torch.Generator().manual_seed(seed), **kw)
    return p, out


@pytest.mark.parametrize("schedule", ["linear", "loglinear"])
@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_oracle_mdm_sampler_has_the_exact_k_step_law(task, steps, schedule):
    p, out = _draw(task, "oracle-mdm", steps, schedule, seed=100 * steps + len(task))
    assert chi_square_pvalue(out.tokens, exact.mdm_law(p, steps, schedule)) > ALPHA


def test_goodness_of_fit_has_power():
    # negative control: 1-step samples of `align` are far from the 4-step law
    p, out = _draw("align", "oracle-mdm", 1, "linear", seed=1)
    assert chi_square_pvalue(out.tokens, exact.mdm_law(p, 4, "linear")) < 1e-12


@pytest.mark.parametrize("labels", [MaskLabels("rand", dim=2, scale=3.0), MaskLabels("randn", dim=1)],
                         ids=["rand", "randn"])
def test_oracle_imdm_one_step_samples_p(labels):
    p, out = _draw("markov", "oracle-imdm", 1, "loglinear", seed=7, labels=labels,
                   seeds=torch.arange(N) + 12345)
    assert out.nfe == 1
    assert chi_square_pvalue(out.tokens, p) > ALPHA
    # and MDM's one-step law is the product of marginals, which the same test tells apart
    assert chi_square_pvalue(out.tokens, exact.mdm_law(p, 1)) < 1e-12


def test_oracle_imdm_with_k_states_is_p_quantised_to_the_k_power_l_grid():
    p = make_task("align", V=3, L=3).probs
    labels = MaskLabels("finite", K=2)
    grid = np.arange(2 ** 3) / 2 ** 3
    g = exact.partition_and_map(p)
    law = np.zeros_like(p)
    for seq in g(grid):
        law[tuple(seq)] += 1 / 8
    oracle = OracleIMDM(p, labels)
    assert oracle.process.mask_id == 3 and oracle.process.labels == labels
    out = sample(oracle, batch_size=N, length=3, steps=1, generator=torch.Generator().manual_seed(3))
    assert chi_square_pvalue(out.tokens, law) > ALPHA


def _exact_elbo(p, denoiser, n_nodes=8):
    """E_{x0 ~ p} of the continuous-time ELBO (linear schedule, summed over positions), integrated over
    t in (0, 1] by Gauss-Legendre quadrature with the expectation over mask patterns done exactly.

    Under the linear schedule a pattern with m masks has weight t^m (1 - t)^(L - m) and the ELBO weight is
    1/t, so the integrand is a polynomial of degree L - 1 and n_nodes >= L/2 nodes integrate it exactly."""
    V, L = p.shape[0], p.ndim
    support = np.argwhere(p > 0)
    patterns = ((np.arange(2 ** L)[:, None] >> np.arange(L)) & 1).astype(bool)  # [P, L] True = masked
    x0 = torch.from_numpy(np.repeat(support, len(patterns), axis=0))
    masked = torch.from_numpy(np.tile(patterns, (len(support), 1)))
    weight_x = np.repeat(p[tuple(support.T)], len(patterns))
    m = masked.sum(1).numpy()
    x_t = torch.where(masked, torch.full_like(x0, V), x0)
    nodes, wq = np.polynomial.legendre.leggauss(n_nodes)
    total = 0.0
    for node, w in zip((nodes + 1) / 2, wq / 2, strict=False):
        t = torch.full((len(x0),), node, dtype=torch.float64)
        logp = subs_log_probs(denoiser(x_t, None, t), x_t, V)
        per_seq = elbo_terms(logp, x0, masked, t, "linear").sum(1).numpy()
        total += w * np.sum(weight_x * node ** m * (1 - node) ** (L - m) * per_seq)
    return total


def _perturbed(den, scale, seed):
    def noisy(x, eps, t):
        logits = den(x, eps, t)
        # a fixed function of x_t, so it is a denoiser, not noise re-drawn per call
        g = torch.Generator().manual_seed(seed)
        table = torch.randn(64, *logits.shape[1:], generator=g, dtype=torch.float64)
        key = (x * torch.arange(1, x.shape[1] + 1)).sum(1) % 64
        return logits + scale * table[key]
    return noisy


@pytest.mark.parametrize("task", sorted(TASKS))
def test_elbo_of_the_oracle_equals_the_entropy(task):
    p = make_task(task, **TASKS[task]).probs
    den = make_oracle("oracle-mdm", p)
    h = exact.entropy(p)
    assert abs(_exact_elbo(p, den) - h) < 1e-10
    assert _exact_elbo(p, _perturbed(den, 0.5, 0)) > h + 1e-6


def test_monte_carlo_elbo_estimates_the_entropy():
    p = make_task("markov", **TASKS["markov"]).probs
    g = torch.Generator().manual_seed(5)
    cells = torch.multinomial(torch.from_numpy(p.ravel()), 50_000, replacement=True, generator=g)
    x0 = torch.stack(torch.unravel_index(cells, p.shape), dim=1)
    t = sample_times(len(x0), t_min=1e-4, generator=g, dtype=torch.float64)
    out = elbo(make_oracle("oracle-mdm", p, schedule="linear"), x0, t, generator=g)  # mask id 3 = V
    per_seq = out.per_token.sum(1).numpy()
    se = per_seq.std() / np.sqrt(len(per_seq))
    assert abs(per_seq.mean() - exact.entropy(p)) < 5 * se
    assert abs(float(out.mean) * 3 - per_seq.mean()) < 1e-9


@settings(max_examples=15, deadline=None)
@given(task=tasks(["dirichlet"], max_V=3, max_L=3), scale=st.floats(0.05, 2.0), seed=st.integers(0, 10**6))
def test_elbo_bound_on_random_joints(task, scale, seed):
    p = task.probs
    den = make_oracle("oracle-mdm", p)
    h = exact.entropy(p)
    assert abs(_exact_elbo(p, den) - h) < 1e-9
    assert _exact_elbo(p, _perturbed(den, scale, seed)) >= h - 1e-9


def test_bad_oracle_arguments():
    p = make_task("align", V=3, L=2).probs
    with pytest.raises(ValueError, match="^model:"):
        make_oracle("oracle-arm", p)
    with pytest.raises(ValueError, match="^labels:"):
        make_oracle("oracle-imdm", p)
    with pytest.raises(ValueError, match="^eps:"):
        make_oracle("oracle-imdm", p, MaskLabels("rand", dim=2))(torch.full((1, 2), 3), torch.zeros(1, 2, 3), None)
