"""The ancestral sampler with synthetic denoisers: reveal law, conditioning, cache, seeded eps, the process and
length it reads from the denoiser, bad input."""
import numpy as np
import pytest
import torch

from imdm_lab.labels import MaskLabels
from imdm_lab.process import Process, process_of
from imdm_lab.sampling import SamplerOptions, categorical, nucleus, sample
from imdm_lab.schedules import get_schedule
from toy_tasks.distributions import make_task
from toy_tasks.oracle import make_oracle

V = 6


def _process(labels=None, schedule="linear", mask_id=V, **kw):
    """The process of the test's plain denoisers (mask id V unless told)."""
    return Process(mask_id, schedule=schedule, labels=labels, **kw)


def _random_denoiser(C=V, seed=0):
    """Logits that depend on (x_t, eps) through a fixed hash: deterministic, eps-sensitive."""
    w = torch.randn(C + 1, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def den(x, eps, t):
        h = w[x].cumsum(1)
        if eps is not None:
            e = eps.double() if eps.is_floating_point() else eps.double()[..., None]
            h = h + e.sum(-1, keepdim=True)
        return h
    return den


class Recorder:
    def __init__(self, inner):
        self.inner, self.masked, self.eps = inner, [], []

    def __call__(self, x, eps, t):
        self.masked.append((x == V).sum().item())
        self.eps.append(None if eps is None else eps.clone())
        return self.inner(x, eps, t)


@pytest.mark.parametrize("name", ["linear", "loglinear", "cosine"])
def test_masks_left_before_each_step_follow_the_schedule(name):
    B, L, k = 400, 16, 4
    rec = Recorder(_random_denoiser())
    sample(rec, batch_size=B, length=L, steps=k, process=_process(schedule=name),
           generator=torch.Generator().manual_seed(3), options=SamplerOptions(cache=False))
    sched = get_schedule(name)
    a = sched.alpha(sched.grid(k)).numpy()
    survive = (1 - a[:-1]) / (1 - a[0])
    n = B * L
    got = np.array(rec.masked) / n
    assert len(got) == k
    assert np.all(np.abs(got - survive) <= 5 * np.sqrt(survive * (1 - survive) / n) + 1e-12)


def test_given_tokens_are_kept_and_only_masks_are_filled():
    g = torch.Generator().manual_seed(4)
    given = torch.randint(0, V, (8, 10), generator=g)
    given_mask = torch.zeros(8, 10, dtype=torch.bool)
    given_mask[:, :3] = True   # prefix
    given_mask[:, -2:] = True  # suffix
    given_mask[:, 5] = True    # infilling
    out = sample(_random_denoiser(), batch_size=8, length=10, steps=3, process=_process(), given=given,
                 given_mask=given_mask, generator=g)
    assert torch.equal(out.tokens[given_mask], given[given_mask])
    assert (out.tokens != V).all() and out.tokens.max() < V
    # without given_mask, positions holding the mask id are the ones generated
    partial = torch.where(given_mask, given, torch.full_like(given, V))
    out2 = sample(_random_denoiser(), batch_size=8, length=10, steps=3, process=_process(), given=partial,
                  generator=torch.Generator().manual_seed(5))
    assert torch.equal(out2.tokens[given_mask], given[given_mask]) and (out2.tokens != V).all()


def test_per_sample_t_start_completes_from_its_own_time():
    B, L, k = 2, 20000, 4
    seen = []

    def den(x, eps, t):
        seen.append(((x == V).sum(1).double(), t.clone()))
        return torch.zeros(*x.shape, V)
    t0 = torch.tensor([1.0, 0.3], dtype=torch.float64)
    out = sample(den, batch_size=B, length=L, steps=k, process=_process(schedule="cosine"),
                 given=torch.full((B, L), V), t_start=t0, generator=torch.Generator().manual_seed(6),
                 options=SamplerOptions(cache=False))
    assert (out.tokens != V).all() and len(seen) == k
    assert torch.allclose(seen[0][1].double(), t0) and torch.allclose(seen[1][1].double(), 0.75 * t0)
    # after the first step a position is still masked with probability (1 - alpha_s) / (1 - alpha_t),
    # s = t0 (1 - 1/k): under the cosine schedule a different rate for each sample's own start time
    sched = get_schedule("cosine")
    stay = (1 - sched.alpha(0.75 * t0)) / (1 - sched.alpha(t0))
    frac = seen[1][0] / L
    assert abs(stay[1] - stay[0]) > 10 * torch.sqrt(0.25 / torch.tensor(L))
    assert ((frac - stay).abs() <= 5 * torch.sqrt(stay * (1 - stay) / L)).all()


@pytest.mark.parametrize("labels", [None, MaskLabels("rand", dim=2), MaskLabels("finite", K=3)],
                         ids=["mdm", "imdm", "finite"])
def test_cache_gives_identical_samples_with_fewer_calls(labels):
    kw = dict(batch_size=3, length=5, steps=64, process=_process(labels, "loglinear"),
              seeds=torch.tensor([1, 2, 3]))
    a = sample(_random_denoiser(), generator=torch.Generator().manual_seed(7), options=SamplerOptions(cache=True),
               **kw)
    b = sample(_random_denoiser(), generator=torch.Generator().manual_seed(7), options=SamplerOptions(cache=False),
               **kw)
    assert torch.equal(a.tokens, b.tokens)
    assert a.nfe < b.nfe <= 64
    if labels is not None:
        assert torch.equal(a.eps_final, b.eps_final)


def test_seeded_eps_and_resets_are_reproducible_from_the_seed():
    labels = MaskLabels("rand", dim=3)
    seeds = torch.tensor([10, 20, 30, 40])
    rec = Recorder(_random_denoiser())
    out = sample(rec, batch_size=4, length=7, steps=8, process=_process(labels, "loglinear"), seeds=seeds,
                 generator=torch.Generator().manual_seed(8), options=SamplerOptions(cache=False))
    assert torch.equal(out.eps_init, labels.from_seeds(seeds, 7))
    # every label the denoiser saw is the initial one or a hashed fresh one of (seed, step + 1, position)
    candidates = torch.stack([labels.from_seeds(seeds, 7, stream=s) for s in range(9)])  # [9, B, L, D]
    n_reset = 0
    for j, eps in enumerate(rec.eps):
        match = (candidates[: j + 1] == eps[None]).all(-1)  # [j+1, B, L]
        assert match.any(0).all()
        n_reset += int(match[1:].any(0).sum())
    assert n_reset > 0
    # the same seeds in another batch order give the same initial labels
    perm = torch.tensor([2, 0, 3, 1])
    out_p = sample(_random_denoiser(), batch_size=4, length=7, steps=1, process=_process(labels),
                   seeds=seeds[perm])
    assert torch.equal(out_p.eps_init, out.eps_init[perm])


def test_fix_eps_keeps_the_initial_labels():
    process = _process(MaskLabels("randn", dim=2), "loglinear")
    out = sample(_random_denoiser(), batch_size=4, length=9, steps=16, process=process,
                 generator=torch.Generator().manual_seed(9), options=SamplerOptions(fix_eps=True))
    assert torch.equal(out.eps_init, out.eps_final)
    out = sample(_random_denoiser(), batch_size=4, length=9, steps=16, process=process,
                 generator=torch.Generator().manual_seed(9))
    assert not torch.equal(out.eps_init, out.eps_final)


def test_greedy_last_step_takes_the_argmax():
    logits = torch.log(torch.tensor([0.1, 0.5, 0.4]))

    def den(x, eps, t):
        return logits.expand(*x.shape, 3)
    out = sample(den, batch_size=5, length=4, steps=1, process=_process(mask_id=3),
                 options=SamplerOptions(last_step="greedy"))
    assert (out.tokens == 1).all()


def test_float32_and_float64_draws_agree_in_law():
    p = torch.tensor([0.05, 0.15, 0.3, 0.5])

    def den(x, eps, t):
        return p.log().expand(*x.shape, 4)
    for dtype in (torch.float64, torch.float32):
        out = sample(den, batch_size=100, length=200, steps=1, process=_process(mask_id=4),
                     generator=torch.Generator().manual_seed(10), options=SamplerOptions(dtype=dtype))
        freq = torch.bincount(out.tokens.flatten(), minlength=4).double() / 20000
        assert ((freq - p.double()).abs() <= 5 * torch.sqrt(p.double() * (1 - p.double()) / 20000)).all()


def test_categorical_never_picks_zero_mass_and_nucleus_truncates():
    probs = torch.tensor([[0.0, 0.3, 0.0, 0.7, 0.0]], dtype=torch.float64).expand(5000, 5)
    draws = categorical(probs, torch.Generator().manual_seed(11))
    assert set(draws.tolist()) == {1, 3}
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.allclose(nucleus(p, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(nucleus(p, 0.1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(nucleus(p, 1.0), p)


def test_temperature_sharpens_x0_hat():
    p = torch.tensor([0.2, 0.8])

    def den(x, eps, t):
        return p.log().expand(*x.shape, 2)
    out = sample(den, batch_size=100, length=100, steps=1, process=_process(mask_id=2),
                 generator=torch.Generator().manual_seed(12), options=SamplerOptions(temperature=0.5))
    q1 = 0.8 ** 2 / (0.8 ** 2 + 0.2 ** 2)
    assert abs(out.tokens.double().mean() - q1) < 5 * (q1 * (1 - q1) / 1e4) ** 0.5


@pytest.mark.parametrize("kwargs, word", [
    (dict(steps=0), "steps"), (dict(temperature=0.0), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(last_step="beam"), "last_step"), (dict(schedule="sqrt"), "schedule"),
    (dict(batch_size=0), "batch_size"), (dict(t_start=1.5), "t_start"),
    (dict(given=torch.tensor([[9, V, V], [0, 1, V]])), "given"),
    (dict(given=torch.zeros(2, 4, dtype=torch.long)), "given"),
    (dict(given_mask=torch.ones(2, 3, dtype=torch.bool)), "given_mask"),
    (dict(labels=MaskLabels("rand", dim=2), seeds=torch.tensor([1])), "seeds"),
    (dict(dtype=torch.float16), "dtype"), (dict(mask_id=-1), "mask_id"), (dict(cache=1), "cache"),
    (dict(fix_eps=None), "fix_eps"), (dict(process="linear"), "process"), (dict(options={}), "options")])
def test_bad_sampler_arguments(kwargs, word):
    # mask id, schedule and labels are the process's: a bad one is refused where the process is built; how to
    # sample is SamplerOptions', refused where the options are built
    proc_keys, option_keys = ("mask_id", "schedule", "labels"), ("temperature", "top_p", "last_step", "dtype",
                                                                  "cache", "fix_eps")
    proc_kw = {k: v for k, v in kwargs.items() if k in proc_keys}
    option_kw = {k: v for k, v in kwargs.items() if k in option_keys}
    args = dict(batch_size=2, length=3, steps=2) | {k: v for k, v in kwargs.items()
                                                    if k not in proc_keys + option_keys}
    with pytest.raises(ValueError, match=f"^{word}:"):
        args.setdefault("process", _process(**proc_kw))
        args.setdefault("options", SamplerOptions(**option_kw))
        sample(lambda x, eps, t: torch.zeros(*x.shape, V), **args)


def test_wrong_denoiser_output_is_reported():
    with pytest.raises(ValueError, match="^denoiser:"):
        sample(lambda x, e, t: torch.zeros(2, 3), batch_size=2, length=3, steps=1, process=_process())


class _Carrier:
    """A denoiser that carries its process, as every model of the project does."""

    def __init__(self, process, length=None):
        self.process, self.inner = process, _random_denoiser()
        if length is not None:
            self.length = length

    def __call__(self, x, eps, t):
        return self.inner(x, eps, t)


def test_process_of_reads_the_model_and_refuses_a_missing_or_different_process():
    own = _process(MaskLabels("rand", dim=2), "cosine")
    model = _Carrier(own)
    assert process_of(model) is own and process_of(model, Process(V, "cosine", MaskLabels("rand", dim=2))) == own
    wrapped = torch.nn.Module()  # a DDP / compile wrapper holds the model as .module
    wrapped.module = model
    assert process_of(wrapped) is own
    plain = _random_denoiser()
    assert process_of(plain, own) is own
    with pytest.raises(ValueError, match="^process:"):
        process_of(plain)
    for other in (Process(V + 1, "cosine", own.labels), Process(V, "linear", own.labels), Process(V, "cosine"),
                  Process(V, "cosine", own.labels, time_conditioning=True)):
        with pytest.raises(ValueError, match="^process: expected the denoiser's own process"):
            process_of(model, other)
    # the sampler reads the process the same way
    with pytest.raises(ValueError, match="^process:"):
        sample(plain, batch_size=2, length=3, steps=2)
    with pytest.raises(ValueError, match="^process:"):
        sample(model, batch_size=2, length=3, steps=2, process=Process(V + 1, "cosine", own.labels))
    with pytest.raises(ValueError, match="^length:"):
        sample(model, batch_size=2, steps=2)  # the model records no .length and no `given` is passed


def test_a_time_conditioned_process_refuses_the_cache_and_calls_the_network_every_step():
    kw = dict(batch_size=3, length=5, steps=64, seeds=torch.tensor([1, 2, 3]))
    timed = _process(MaskLabels("rand", dim=2), "loglinear", time_conditioning=True)
    with pytest.raises(ValueError, match="^cache:"):
        sample(_random_denoiser(), process=timed, options=SamplerOptions(cache=True), **kw)
    with pytest.raises(ValueError, match="^cache:"):
        sample(_Carrier(timed), options=SamplerOptions(cache=True), **kw)
    # the default follows the process: no reuse when the network reads t, reuse otherwise
    rec = Recorder(_random_denoiser())
    a = sample(rec, process=timed, generator=torch.Generator().manual_seed(7), **kw)
    b = sample(_random_denoiser(), process=timed, generator=torch.Generator().manual_seed(7),
               options=SamplerOptions(cache=False), **kw)
    assert torch.equal(a.tokens, b.tokens) and a.nfe == b.nfe == len(rec.masked)
    untimed = _process(MaskLabels("rand", dim=2), "loglinear")
    c = sample(_random_denoiser(), process=untimed, generator=torch.Generator().manual_seed(7), **kw)
    d = sample(_random_denoiser(), process=untimed, generator=torch.Generator().manual_seed(7),
               options=SamplerOptions(cache=True), **kw)
    assert torch.equal(c.tokens, a.tokens) and torch.equal(c.tokens, d.tokens) and c.nfe == d.nfe < a.nfe


@pytest.mark.parametrize("model, labels", [("oracle-mdm", None), ("oracle-imdm", MaskLabels("rand", dim=2))],
                         ids=["mdm", "imdm"])
def test_an_oracle_is_sampled_with_its_own_length_and_process(model, labels):
    p = make_task("markov", V=3, L=3, seed=1).probs
    oracle = make_oracle(model, p, labels, schedule="cosine")
    assert oracle.process == Process(3, "cosine", labels) and oracle.length == 3
    kw = dict(batch_size=64, steps=4, seeds=torch.arange(64) + 5)
    own = sample(oracle, generator=torch.Generator().manual_seed(13), **kw)
    told = sample(oracle, length=3, process=oracle.process, generator=torch.Generator().manual_seed(13), **kw)
    assert own.tokens.shape == (64, 3) and (own.tokens < 3).all()
    assert torch.equal(own.tokens, told.tokens) and own.nfe == told.nfe
    assert (own.eps_final is None) == (labels is None)
    if labels is not None:
        assert torch.equal(own.eps_init, told.eps_init) and torch.equal(own.eps_final, told.eps_final)


def test_the_length_is_the_callers_else_that_of_given_else_the_models():
    model = _Carrier(_process(), length=7)
    kw = dict(batch_size=2, steps=2, generator=torch.Generator().manual_seed(14))
    assert sample(model, **kw).tokens.shape == (2, 7)
    assert sample(model, given=torch.full((2, 5), V), **kw).tokens.shape == (2, 5)
    assert sample(model, length=4, **kw).tokens.shape == (2, 4)
