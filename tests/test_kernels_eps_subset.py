"""The eps-driven coupling's cheap paths against the full one: the closed-form align oracle against the
exact engine's conditionals, the completion with it, the scored subset of positions (same expectation) and
the read-out on the target rows only (same values and gradients)."""
import itertools

import pytest
import torch

from imdm_lab.distill import eps_coupled_completion, eps_coupling_loss, read_labels
from imdm_lab.distill.eps_coupling import scored_weights
from imdm_lab.labels import MaskLabels
from imdm_lab.losses import subs_log_probs
from toy_tasks.distributions import make_task
from toy_tasks.models import make_model
from toy_tasks.oracle import AlignOracle, OracleMDM


def _all_states(V, L):
    """Every x_t of {0..V-1, mask V}^L: Long[(V + 1)^L, L] (on- and off-support contexts)."""
    return torch.tensor(list(itertools.product(range(V + 1), repeat=L)))


def test_align_oracle_has_the_exact_engines_conditionals_at_every_state():
    V, L = 4, 3
    x = _all_states(V, L)
    exact = subs_log_probs(OracleMDM(make_task("align", V=V, L=L).probs)(x, None, None), x, V).exp()
    logits = AlignOracle(V, L)(x, None, None)
    assert logits.shape == (x.shape[0], L, V)
    torch.testing.assert_close(subs_log_probs(logits, x, V).double().exp(), exact, rtol=0, atol=1e-6)
    assert exact[x == V].min() < 1 and exact[x == V].max() == 1  # both one-hot and spread conditionals


@pytest.mark.parametrize("reader,labels", [("joint", MaskLabels("finite", K=4)), ("kr", MaskLabels("rand", dim=1))])
def test_completion_by_the_align_oracle_is_the_exact_engines(reader, labels):
    V, L, B = 4, 3, 500
    gen = torch.Generator().manual_seed(0)
    x = _all_states(V, L)[torch.randint(0, (V + 1) ** L, (B,), generator=gen)]
    eps = labels.draw(B, L, generator=gen)
    runs = []
    for teacher in (OracleMDM(make_task("align", V=V, L=L).probs), AlignOracle(V, L)):
        reading = read_labels(eps, labels, reader, torch.Generator().manual_seed(1))
        runs.append(eps_coupled_completion(teacher, x, eps, reading, mask_id=V))
    assert torch.equal(runs[0], runs[1])
    on_support = ((x == V) | (x == x.min(1, keepdim=True).values)).all(1)
    assert (runs[1][on_support] == runs[1][on_support][:, :1]).all()  # completions of align stay aligned


@pytest.mark.parametrize("reader,labels", [("joint", MaskLabels("finite", K=5)), ("kr", MaskLabels("rand", dim=1)),
                                           ("reveal-times", MaskLabels("rand", dim=2))])
def test_align_oracles_closed_form_completion_is_the_generic_loop(reader, labels):
    V, L, B = 5, 4, 400
    gen = torch.Generator().manual_seed(6)
    x = _all_states(V, L)[torch.randint(0, (V + 1) ** L, (B,), generator=gen)]
    x[:40] = V  # fully masked rows: the draw by the inverse CDF
    eps = labels.draw(B, L, generator=gen)
    oracle = AlignOracle(V, L)
    runs = [f(x, eps, read_labels(eps, labels, reader, torch.Generator().manual_seed(7)), mask_id=V)
            for f in (oracle.eps_coupled_completion,
                      lambda *a, **k: eps_coupled_completion(oracle, *a, **k))]
    assert torch.equal(runs[0], runs[1])
    assert len(set(runs[0][:40, 0].tolist())) > 1  # the labels choose the token


def test_scored_weights_keep_k_masked_positions_per_row_with_the_full_expectation():
    gen = torch.Generator().manual_seed(2)
    masked = torch.rand(6, 5, generator=gen) < 0.6
    masked[0] = False
    masked[1] = True
    assert torch.equal(scored_weights(masked, None), masked.float())
    assert torch.equal(scored_weights(masked, 5, gen), masked.float())  # k >= L: all of them, weight 1
    m = masked.sum(1)
    total = torch.zeros(masked.shape, dtype=torch.float64)
    n = 20_000
    for _ in range(n):
        w = scored_weights(masked, 2, gen)
        kept = w > 0
        assert not (kept & ~masked).any()
        assert torch.equal(kept.sum(1), m.clamp_max(2))
        torch.testing.assert_close(w.sum(1), m.float())  # each row keeps its total weight m_b
        total += w
    # E[w] = masked: inclusion probability min(k, m) / m times the weight m / min(k, m)
    torch.testing.assert_close(total / n, masked.double(), rtol=0, atol=0.05)
    with pytest.raises(ValueError, match="positions"):
        scored_weights(masked, 0)


@pytest.mark.parametrize("positions", [None, 2, 10])
def test_eps_coupling_loss_on_the_target_rows_only_equals_the_full_read_out(positions):
    V, L, B = 7, 10, 6
    teacher = AlignOracle(V, L)
    x0 = torch.randint(0, V, (B, 1), generator=torch.Generator().manual_seed(3)).expand(B, L).contiguous()
    values, grads = [], []
    for efficient in (False, True):
        student = make_model("tiny", V, L, "finite", K=V, seed=4)
        loss = eps_coupling_loss(student, teacher, x0, reader="joint", full_mask_fraction=0.5,
                                 generator=torch.Generator().manual_seed(5), positions=positions,
                                 efficient=efficient)
        loss.backward()
        values.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in student.parameters()]))
    torch.testing.assert_close(values[1], values[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    if positions == 10:  # every masked position scored: the loss of positions=None with the same draws
        full = eps_coupling_loss(make_model("tiny", V, L, "finite", K=V, seed=4), teacher, x0, reader="joint",
                                 full_mask_fraction=0.5, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(values[0], full.detach(), rtol=1e-6, atol=0)
