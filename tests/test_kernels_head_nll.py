"""The chunked SUBS NLL of a linear head (imdm_lab.head_nll) and the ELBO path that uses it."""
import functools

import pytest
import torch

from imdm_lab.head_nll import head_nll
from imdm_lab.losses import IGNORE, elbo
from scale.model.dit import DiT, DiTConfig


def _head(d, C, seed):
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(d, C, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.randn(C, d, generator=g, dtype=torch.float64))
        head.bias.copy_(torch.randn(C, generator=g, dtype=torch.float64))
    return head


@pytest.mark.parametrize("rows", ["masked", "all"])
@pytest.mark.parametrize("mask_id", [2, 6])  # a class of the head / one past the classes
def test_head_nll_is_the_subs_cross_entropy_at_target_rows(mask_id, rows):
    B, L, d, C = 2, 5, 4, 6
    g = torch.Generator().manual_seed(0)
    h = torch.randn(B, L, d, generator=g, dtype=torch.float64)
    head = _head(d, C, 1)
    classes = [c for c in range(C) if c != mask_id]
    targets = torch.tensor(classes, dtype=torch.long)[torch.randint(0, len(classes), (B, L), generator=g)]
    targets[0, 1] = targets[1, 3] = IGNORE
    out = head_nll(h, head, targets, mask_id, chunk=3, rows=rows)
    for b in range(B):
        for i in range(L):
            if targets[b, i] == IGNORE:
                assert out[b, i] == 0.0
                continue
            # softmax over the classes other than the mask, written out directly
            z = head.weight.detach() @ h[b, i] + head.bias.detach()
            keep = z[classes]
            expected = torch.log(torch.exp(keep - keep.max()).sum()) + keep.max() - z[targets[b, i]]
            assert abs(float(out[b, i].detach() - expected.detach())) < 1e-12


def test_head_nll_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[0, IGNORE, 4], [2, 1, IGNORE]])
    for mask_id, chunk, rows in ((3, 2, "masked"), (5, 1, "masked"), (5, 4, "masked"), (0, 4, "all"),
                                 (5, 4, "all")):
        def op(h, w, b, mask_id=mask_id, chunk=chunk, rows=rows):
            return torch.ops.imdm_lab.head_nll(h, w, b, targets, mask_id, chunk, rows)
        assert torch.autograd.gradcheck(op, (h, w, b))
    # the fake (shape-only) kernels and the autograd registration agree with the real ones
    for rows in ("masked", "all"):
        torch.library.opcheck(torch.ops.imdm_lab.head_nll.default, (h, w, b, targets, 3, 2, rows))


def _dit(labels: str, vocab: int, mask_id: int) -> DiT:
    torch.manual_seed(0)
    model = DiT(DiTConfig(vocab_size=vocab, mask_id=mask_id, labels=labels, label_dim=4, dropout=0.0)).double()
    with torch.no_grad():  # away from the zero initialisation, so every gradient is non-trivial
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("head_rows", ["masked", "all"])
@pytest.mark.parametrize("labels", ["none", "rand"])  # MDM, IMDM
@pytest.mark.parametrize("mask_inside", [True, False])
def test_efficient_elbo_equals_the_full_one_with_its_gradients(labels, mask_inside, head_rows):
    C = 11
    mask_id = 4 if mask_inside else C
    model = _dit(labels, C, mask_id)
    classes = torch.tensor([c for c in range(C) if c != mask_id])
    x0 = classes[torch.randint(0, len(classes), (3, 16), generator=torch.Generator().manual_seed(1))]
    t = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    outs, grads = [], []
    for efficient in (False, True):
        model.zero_grad()
        den = functools.partial(model, head_rows=head_rows) if efficient else model
        out = elbo(den, x0, t, process=model.process, generator=torch.Generator().manual_seed(2),
                   efficient=efficient)
        out.mean.backward()
        outs.append(out)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    full, fast = outs
    assert fast.per_token.dtype == full.per_token.dtype == torch.float64
    assert (full.per_token != 0).any() and (full.per_token == 0).any()
    assert torch.allclose(fast.per_token, full.per_token, rtol=0, atol=1e-10)
    assert abs(float(fast.mean.detach() - full.mean.detach())) < 1e-10
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, rtol=0, atol=1e-10), name


def test_head_nll_bad_input():
    head = _head(4, 5, 0)
    h = torch.zeros(1, 2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="^targets:"):
        head_nll(h, head, torch.tensor([[5, 0]]), 5)
    with pytest.raises(ValueError, match="^targets:"):
        head_nll(h, head, torch.tensor([[-2, 0]]), 5)
    with pytest.raises(ValueError, match="^targets:"):
        head_nll(h, head, torch.tensor([0, 0]), 5)
    with pytest.raises(ValueError, match="^h:"):
        head_nll(h[0], head, torch.tensor([[0, 0]]), 5)
    with pytest.raises(ValueError, match="^head:"):
        head_nll(h, torch.nn.Linear(3, 5), torch.tensor([[0, 0]]), 5)
    with pytest.raises(ValueError, match="^mask_id:"):
        head_nll(h, head, torch.tensor([[0, 0]]), 6)
    with pytest.raises(ValueError, match="^chunk:"):
        head_nll(h, head, torch.tensor([[0, 0]]), 5, chunk=0)
    with pytest.raises(ValueError, match="^rows:"):
        head_nll(h, head, torch.tensor([[0, 0]]), 5, rows="visible")
