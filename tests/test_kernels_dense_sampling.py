"""The sampler's dense mode (sample(..., dense=True)) against the exact engine and the default mode.

Goodness of fit as in test_kernels_oracle: chi-square on N = 100 000 samples with fixed seeds at
significance 1e-4 (sparse cells pooled); 16 fits here, family-wise false-alarm rate below 0.2 %."""
import pytest
import torch
from scipy import stats
from test_kernels_oracle import ALPHA, TASKS

from imdm_lab import exact
from imdm_lab.labels import MaskLabels
from imdm_lab.process import Process
from imdm_lab.sampling import SamplerOptions, sample
from imdm_lab.testing import chi_square_pvalue, homogeneity_pvalue
from toy_tasks.distributions import make_task
from toy_tasks.oracle import make_oracle

N = 100_000


def _draw(task, model, steps, schedule, seed, labels=None, seeds=None, dense=True, **options):
    p = make_task(task, **TASKS[task]).probs
    out = sample(make_oracle(model, p, labels, schedule=schedule), batch_size=N, length=p.ndim, steps=steps,
                 seeds=seeds, generator=torch.Generator().manual_seed(seed),
                 options=SamplerOptions(dense=dense, **options))
    return p, out


@pytest.mark.parametrize("steps, schedule", [(1, "linear"), (2, "loglinear"), (4, "linear")])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_dense_oracle_mdm_sampler_has_the_exact_k_step_law(task, steps, schedule):
    p, out = _draw(task, "oracle-mdm", steps, schedule, seed=300 + 10 * steps + len(task))
    assert out.nfe == steps  # the network is called at every step in this mode
    assert chi_square_pvalue(out.tokens, exact.mdm_law(p, steps, schedule)) > ALPHA


def test_dense_goodness_of_fit_has_power():
    p, out = _draw("align", "oracle-mdm", 1, "linear", seed=2)
    assert chi_square_pvalue(out.tokens, exact.mdm_law(p, 4, "linear")) < 1e-12


def test_dense_oracle_imdm_samples_p_in_one_step_and_with_fixed_labels_in_several():
    # one step: every position reveals g(u(eps)) of the same labels; fixed labels: the same at any k
    p, out = _draw("markov", "oracle-imdm", 1, "loglinear", seed=8, labels=MaskLabels("rand", dim=2, scale=3.0),
                   seeds=torch.arange(N) + 999)
    assert chi_square_pvalue(out.tokens, p) > ALPHA
    p, out = _draw("markov", "oracle-imdm", 4, "loglinear", seed=9, labels=MaskLabels("rand", dim=1), fix_eps=True)
    assert torch.equal(out.eps_init, out.eps_final)
    assert chi_square_pvalue(out.tokens, p) > ALPHA
    assert chi_square_pvalue(out.tokens, exact.mdm_law(p, 4, "loglinear")) < 1e-12


def test_dense_keep_and_reset_have_the_law_of_the_default_mode():
    # with resets the k-step IMDM law is not p; the dense and default modes must still agree in law
    labels = MaskLabels("rand", dim=2, scale=3.0)
    p, dense = _draw("markov", "oracle-imdm", 4, "loglinear", seed=10, labels=labels)
    _, default = _draw("markov", "oracle-imdm", 4, "loglinear", seed=11, labels=labels, dense=False, cache=False)
    assert (dense.eps_final != dense.eps_init).any()  # labels were reset on the way
    assert chi_square_pvalue(dense.tokens, p) < 1e-12  # resets change the law ...
    assert homogeneity_pvalue(dense.tokens, default.tokens, p.shape[0]) > ALPHA  # ... the same way in both
    # and the test tells the reset law from the fixed-label one
    _, fixed = _draw("markov", "oracle-imdm", 4, "loglinear", seed=12, labels=labels, fix_eps=True)
    assert homogeneity_pvalue(dense.tokens, fixed.tokens, p.shape[0]) < 1e-12


class _Recorder:
    def __init__(self, V, seed=0):
        self.w = torch.randn(V + 1, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.eps, self.x = [], []

    def __call__(self, x, eps, t):
        self.x.append(x.clone())
        self.eps.append(None if eps is None else eps.clone())
        e = 0.0 if eps is None else eps.double().sum(-1, keepdim=True)
        return self.w[x].cumsum(1) + e


def test_dense_seeded_resets_are_hashed_from_seed_step_and_position():
    V, labels, seeds = 5, MaskLabels("rand", dim=3), torch.tensor([10, 20, 30, 40])
    rec = _Recorder(V)
    out = sample(rec, batch_size=4, length=7, steps=8, process=Process(V, "loglinear", labels), seeds=seeds,
                 generator=torch.Generator().manual_seed(8), options=SamplerOptions(dense=True))
    assert torch.equal(out.eps_init, labels.from_seeds(seeds, 7))
    n_reset = 0
    for j in range(1, len(rec.eps)):
        changed = (rec.eps[j] != rec.eps[j - 1]).any(-1)
        # a label changes only at a position masked before and after the step, to its hash at stream j
        assert not (changed & ((rec.x[j - 1] != V) | (rec.x[j] != V))).any()
        assert torch.equal(rec.eps[j][changed], labels.from_seeds(seeds, 7, stream=j)[changed])
        n_reset += int(changed.sum())
    assert n_reset > 0


def test_dense_given_tokens_and_per_sample_start_times():
    V = 5
    given = torch.full((6, 8), V)
    given[:, :3] = torch.arange(3)
    given_mask = given != V
    given_mask[0, 3] = False
    rec = _Recorder(V)
    t0 = torch.tensor([1.0, 0.5, 0.2, 1.0, 0.7, 0.05], dtype=torch.float64)
    out = sample(rec, batch_size=6, length=8, steps=5, process=Process(V), given=given, given_mask=given_mask,
                 t_start=t0, generator=torch.Generator().manual_seed(3), options=SamplerOptions(dense=True))
    assert torch.equal(out.tokens[:, :3], given[:, :3]) and (out.tokens < V).all()
    assert len(rec.x) == 5 and torch.equal(rec.x[0], given)


def test_dense_greedy_last_step_temperature_and_top_p():
    logits = torch.log(torch.tensor([0.1, 0.5, 0.4]))

    def den(x, eps, t):
        return logits.expand(*x.shape, 3)
    out = sample(den, batch_size=5, length=4, steps=1, process=Process(3),
                 options=SamplerOptions(last_step="greedy", dense=True))
    assert (out.tokens == 1).all()
    # temperature 0.5 squares x0_hat: q = (0.01, 0.25, 0.16) / 0.42; top_p = 0.7 keeps classes 1 and 2
    q = torch.tensor([0.01, 0.25, 0.16], dtype=torch.float64) / 0.42
    out = sample(den, batch_size=200, length=100, steps=1, process=Process(3),
                 generator=torch.Generator().manual_seed(4),
                 options=SamplerOptions(temperature=0.5, top_p=0.7, dense=True))
    kept = torch.stack([q[0] * 0, q[1], q[2]]) / (q[1] + q[2])  # mass before class 2 is q[1] = 0.595 < 0.7
    counts = torch.bincount(out.tokens.flatten(), minlength=3).double()
    assert counts[0] == 0
    assert stats.chisquare(counts[1:].numpy(), (kept[1:] * counts.sum()).numpy()).pvalue > ALPHA


def test_dense_refuses_a_cache_and_checks_its_switch():
    args = dict(batch_size=2, length=3, steps=2, process=Process(3))
    den = lambda x, eps, t: torch.zeros(*x.shape, 3)  # noqa: E731
    with pytest.raises(ValueError, match="^cache:"):
        sample(den, options=SamplerOptions(dense=True, cache=True), **args)
    with pytest.raises(ValueError, match="^dense:"):
        sample(den, options=SamplerOptions(dense="yes"), **args)
    with pytest.raises(ValueError, match="^given:"):
        sample(den, given=torch.tensor([[7, 3, 3], [0, 1, 3]]), options=SamplerOptions(dense=True), **args)
    assert sample(den, options=SamplerOptions(dense=True, cache=False), **args).nfe == 2
    # revalidate=False trusts the ids only after the first call, which still checks `given`
    with pytest.raises(ValueError, match="^given:"):
        sample(lambda x, eps, t, validate=True: den(x, eps, t), given=torch.tensor([[7, 3, 3], [0, 1, 3]]),
               options=SamplerOptions(dense=True, revalidate=False), **args)
