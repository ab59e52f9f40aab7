"""SUBS, the ELBO integrand, the distillation divergences and losses at given times (the oracle ELBO is in
test_kernels_oracle)."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from imdm_lab.distill import eps_coupling_loss, sdtt_loss
from imdm_lab.labels import MaskLabels
from imdm_lab.losses import NEG_INF, divergence, elbo, subs_log_probs
from imdm_lab.process import Process
from imdm_lab.schedules import SCHEDULES, sample_times


def test_subs_zeroes_the_mask_class_and_carries_visible_tokens():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 6, generator=g)
    x_t = torch.tensor([[3, 2, 0, 3, 5], [3, 3, 3, 1, 4]])  # mask_id 3 inside [0, C): BERT-like
    logp = subs_log_probs(logits, x_t, 3)
    masked = x_t == 3
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, 5))
    assert (logp[masked][:, 3] <= NEG_INF / 2).all()
    # masked rows: the other classes keep their relative odds
    ref = torch.log_softmax(torch.cat([logits[..., :3], logits[..., 4:]], -1), -1)
    assert torch.allclose(torch.cat([logp[..., :3], logp[..., 4:]], -1)[masked], ref[masked], atol=1e-6)
    vis = logp[~masked]
    assert torch.equal(vis.argmax(-1), x_t[~masked]) and torch.equal(vis.max(-1).values, torch.zeros(5))


def test_subs_with_mask_outside_the_classes():
    logits = torch.zeros(1, 2, 4)
    logp = subs_log_probs(logits, torch.tensor([[4, 1]]), 4)
    assert torch.allclose(logp[0, 0].exp(), torch.full((4,), 0.25))
    assert int(logp[0, 1].argmax()) == 1


def test_subs_bad_input():
    with pytest.raises(ValueError, match="^x_t:"):
        subs_log_probs(torch.zeros(1, 2, 4), torch.tensor([[5, 1]]), 4)
    with pytest.raises(ValueError, match="^logits:"):
        subs_log_probs(torch.zeros(2, 4), torch.tensor([[4, 1]]), 4)
    with pytest.raises(ValueError, match="^mask_id:"):
        subs_log_probs(torch.zeros(1, 2, 4), torch.tensor([[4, 1]]), 9)
    with pytest.raises(ValueError, match="^x_t:"):
        subs_log_probs(torch.zeros(1, 2, 4), torch.tensor([[-1, 1]]), 4)


def test_divergence_bad_input():
    with pytest.raises(ValueError, match="^student_logp:"):
        divergence([0.0], torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="^student_logp:"):
        divergence(torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="^teacher_logp:"):
        divergence(torch.zeros(1, 2, 4), None)
    with pytest.raises(ValueError, match="^teacher_logp:"):
        divergence(torch.zeros(1, 2, 4), torch.zeros(1, 2, 3))


def _uniform_denoiser(C):
    def den(x, eps, t):
        return torch.zeros(*x.shape, C, dtype=torch.float64)
    return den


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_elbo_of_uniform_denoiser_is_weight_times_log_c(name):
    C, mask = 5, 5
    x0 = torch.randint(0, C, (4, 7), generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1.0, 0.5, 1e-3, 0.9], dtype=torch.float64)
    out = elbo(_uniform_denoiser(C), x0, t, process=Process(mask, name), generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(out.per_token).all() and torch.isfinite(out.mean)
    w = SCHEDULES[name].elbo_weight(t)
    nonzero = out.per_token != 0
    expected = (w[:, None] * math.log(C)).expand(4, 7)
    assert torch.allclose(out.per_token[nonzero], expected[nonzero])
    assert torch.allclose(out.mean, out.per_token.sum() / 28)


def test_elbo_passes_fresh_or_given_eps():
    seen = []
    imdm = Process(4, "linear", MaskLabels("rand", dim=3))

    def den(x, eps, t):
        seen.append(eps)
        return torch.zeros(*x.shape, 4)
    x0 = torch.zeros(2, 3, dtype=torch.long)
    elbo(den, x0, 0.5, process=imdm, generator=torch.Generator().manual_seed(0))
    elbo(den, x0, 0.5, process=imdm, generator=torch.Generator().manual_seed(1))
    assert seen[0].shape == (2, 3, 3) and not torch.equal(seen[0], seen[1])
    given_eps = torch.ones(2, 3, 3)
    elbo(den, x0, 0.5, process=imdm, eps=given_eps)
    assert seen[-1] is given_eps
    elbo(den, x0, 0.5, process=Process(4))  # an MDM process: no labels drawn
    assert seen[-1] is None
    with pytest.raises(ValueError, match="^eps:"):
        elbo(den, x0, 0.5, process=imdm, eps=torch.ones(2, 3, 2))
    with pytest.raises(ValueError, match="^t:"):
        elbo(den, x0, 0.0, process=Process(4))
    with pytest.raises(ValueError, match="^process:"):
        elbo(den, x0, 0.5)  # a plain callable carries no process


log_rows = st.lists(st.floats(-5, 5), min_size=3, max_size=3)


@settings(max_examples=40, deadline=None)
@given(a=log_rows, b=log_rows)
def test_divergences_are_nonnegative_and_vanish_on_equality(a, b):
    ls = torch.log_softmax(torch.tensor([[a]], dtype=torch.float64), -1)
    lt = torch.log_softmax(torch.tensor([[b]], dtype=torch.float64), -1)
    for kind in ("kl-bwd", "kl-fwd", "tvd", "mse"):
        per, mean = divergence(ls, lt, kind)
        assert float(mean) >= -1e-12 and torch.equal(per[0, 0], mean)
        assert abs(float(divergence(ls, ls, kind)[1])) < 1e-12
    tvd = float(divergence(ls, lt, "tvd")[1])
    assert tvd <= 1 + 1e-12
    # Pinsker: TV <= sqrt(KL / 2); KL of two nearly equal rows can round to -1e-17 (allowed above), so the
    # square root takes it at 0
    assert tvd <= math.sqrt(max(float(divergence(ls, lt, "kl-fwd")[1]), 0.0) / 2) + 1e-9


def test_divergence_hand_value_and_mask():
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.9, 0.1])
    ls, lt = p.log().expand(1, 2, 2), q.log().expand(1, 2, 2)
    kl = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    per, mean = divergence(ls, lt, "kl-bwd", mask=torch.tensor([[True, False]]))
    assert abs(float(mean) - kl) < 1e-6 and float(per[0, 1]) == 0.0
    with pytest.raises(ValueError, match="^kind:"):
        divergence(ls, lt, "js")
    with pytest.raises(ValueError, match="^mask:"):
        divergence(ls, lt, "tvd", mask=torch.ones(2, 2, dtype=torch.bool))


def test_elbo_weight_stays_finite_under_bf16_logits():
    """bf16 cannot hold 1 - alpha_t for t < ~4e-3; the weight must still be the float32 value 1/t."""
    from imdm_lab.losses import elbo_terms
    t = torch.tensor([1e-3, 2e-3, 0.5])
    logp = torch.log_softmax(torch.zeros(3, 2, 4), -1).to(torch.bfloat16)
    x0 = torch.zeros(3, 2, dtype=torch.long)
    out = elbo_terms(logp, x0, torch.ones(3, 2, dtype=torch.bool), t, "loglinear")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    expected = (math.log(4) / t)[:, None].expand(3, 2)  # loglinear: -alpha'/(1-alpha) = 1/t exactly
    assert torch.allclose(out, expected, rtol=1e-2)


def _time_denoiser(C, seed):
    """Logits a fixed function of (x_t, eps, t), so that the time a loss is taken at matters."""
    w = torch.randn(C + 1, C, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def den(x, eps, t):
        h = w[x].cumsum(1) * (1.0 + t.double()[:, None, None])
        return h if eps is None else h + eps.double().sum(-1, keepdim=True)
    return den


@pytest.mark.parametrize("labels", [None, MaskLabels("rand", dim=2)], ids=["sdtt", "im-sdtt"])
def test_sdtt_loss_at_given_times_is_the_loss_whose_generator_drew_them(labels):
    C, B, L = 5, 16, 6
    process = Process(C, "cosine", labels, t_min=0.05)
    student, teacher = _time_denoiser(C, 1), _time_denoiser(C, 2)
    x0 = torch.randint(0, C, (B, L), generator=torch.Generator().manual_seed(3))
    kw = dict(k=2, process=process)
    drawn = sdtt_loss(student, teacher, x0, 0.125, generator=torch.Generator().manual_seed(4), **kw)
    g = torch.Generator().manual_seed(4)
    t = sample_times(B, process.t_min, antithetic=True, generator=g)  # the draw sdtt_loss makes first
    given = sdtt_loss(student, teacher, x0, 0.125, t=t, generator=g, **kw)
    assert torch.isfinite(drawn) and float(drawn) > 0 and torch.equal(given, drawn)
    # the times are used: other times with the same later draws give another loss
    g = torch.Generator().manual_seed(4)
    sample_times(B, process.t_min, antithetic=True, generator=g)
    other = sdtt_loss(student, teacher, x0, 0.125, t=t.flip(0), generator=g, **kw)
    assert not torch.equal(other, drawn)


def test_eps_coupling_loss_at_given_times_is_the_loss_whose_generator_drew_them():
    C, B, L = 5, 12, 4
    process = Process(C, "loglinear", MaskLabels("rand", dim=2))
    student, teacher = _time_denoiser(C, 5), _time_denoiser(C, 6)
    x0 = torch.randint(0, C, (B, L), generator=torch.Generator().manual_seed(7))
    kw = dict(reader="kr", process=process, full_mask_fraction=0.25)
    drawn = eps_coupling_loss(student, teacher, x0, generator=torch.Generator().manual_seed(8), **kw)
    g = torch.Generator().manual_seed(8)
    t = torch.rand(B, generator=g, dtype=torch.float64)  # the draw eps_coupling_loss makes first
    kept = t.clone()
    given = eps_coupling_loss(student, teacher, x0, t=t, generator=g, **kw)
    assert torch.isfinite(drawn) and torch.equal(given, drawn)
    assert torch.equal(t, kept)  # the fully masked rows (t = 1) are set on a copy, not on the caller's times


@pytest.mark.parametrize("fraction", [-0.5, 1.5, float("nan"), True, "half"])
def test_eps_coupling_loss_refuses_a_full_mask_fraction_outside_the_unit_interval(fraction):
    process = Process(5, "loglinear", MaskLabels("rand", dim=2))
    with pytest.raises(ValueError, match=r"^full_mask_fraction: expected a number in \[0, 1\]"):
        eps_coupling_loss(_time_denoiser(5, 5), _time_denoiser(5, 6), torch.zeros(2, 3, dtype=torch.long),
                          reader="kr", process=process, full_mask_fraction=fraction)


def test_sdtt_loss_takes_one_time_for_the_whole_batch_as_a_number():
    C, B, L = 5, 4, 6
    kw = dict(k=2, process=Process(C, "linear"))
    student, teacher = _time_denoiser(C, 1), _time_denoiser(C, 2)
    x0 = torch.randint(0, C, (B, L), generator=torch.Generator().manual_seed(3))
    number = sdtt_loss(student, teacher, x0, 0.125, t=0.5, generator=torch.Generator().manual_seed(4), **kw)
    tensor = sdtt_loss(student, teacher, x0, 0.125, t=torch.full((B,), 0.5),
                       generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(number, tensor)
    with pytest.raises(ValueError, match=r"^t: expected times in \[0, 1\]"):
        sdtt_loss(student, teacher, x0, 0.125, t=1.5, **kw)
