"""train.optimizer_impl: auto keeps the AdamW every earlier run used (foreach on a CPU, bit for bit);
fused is the same update to rounding; an unknown name is refused when the config is built."""
from __future__ import annotations

import copy

import pytest
import torch

from imdm_lab.optimizer import make_optimizer
from scale.checkpoints.config import load_config


def _steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))


def test_auto_on_a_cpu_is_pytorchs_default_adamw_bit_for_bit():
    tc = load_config("tiny-cpu").train
    assert tc.optimizer_impl == "auto"
    model, reference = _model(), _model()
    ours = _steps(model, make_optimizer(model, tc, "cpu"))
    plain = _steps(reference, torch.optim.AdamW(reference.parameters(), lr=tc.lr, betas=tuple(tc.betas),
                                                eps=tc.adam_eps, weight_decay=tc.weight_decay))
    assert all(torch.equal(a, b) for a, b in zip(ours, plain, strict=True))


def test_fused_is_the_same_update_to_rounding():
    tc = load_config("tiny-cpu", ["train.optimizer_impl=fused"]).train
    model = _model()
    foreach_model = copy.deepcopy(model)
    optimizer = make_optimizer(model, tc, "cpu")
    assert optimizer.defaults["fused"] is True
    fused = _steps(model, optimizer)
    foreach = _steps(foreach_model, make_optimizer(foreach_model, load_config("tiny-cpu").train, "cpu"))
    for a, b in zip(fused, foreach, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_unknown_implementation_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"train.optimizer_impl: expected one of \['auto', 'foreach', 'fused'\]"):
        load_config("tiny-cpu", ["train.optimizer_impl=adam8bit"])
