"""Exponential moving average of a model's parameters (evaluated and sampled instead of the raw weights).

Update n (counting from 0):  decay_n = min(decay, (1 + n) / (10 + n)),  ema <- decay_n * ema + (1 - decay_n) * p
(the warm-up of MDLM / IMDM's EMA, so early averages are not dominated by the random initialisation).
Shadows have the parameters' own layout, so they work unchanged on FSDP-sharded parameters.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema: expected a decay in [0, 1), got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in model.parameters()], 1.0 - d)
        self.updates += 1

    @contextmanager
    def applied(self, model: torch.nn.Module):
        """Run a block with the averaged weights in the model, then put the raw weights back."""
        params = list(model.parameters())
        backup = [p.detach().clone() for p in params]
        _copy_all(params, self.shadow)
        try:
            yield model
        finally:
            _copy_all(params, backup)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) CPU tensors under the parameter names."""
        return {n: _full(s).cpu() for n, s in zip(self.names, self.shadow, strict=False)}

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        missing = sorted(set(self.names) - set(tensors))
        if missing:
            raise ValueError(f"ckpt: ema.safetensors lacks {', '.join(missing)}")
        for name, shadow in zip(self.names, self.shadow, strict=False):
            _copy_full(shadow, tensors[name])
        self.updates = updates


@torch.no_grad()
def _copy_all(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    # One copy_ per tensor: sharded DTensors have no fused _foreach_copy_.
    for d, s in zip(dst, src, strict=False):
        d.copy_(s)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _copy_full(dst: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into a plain or FSDP-sharded (DTensor) destination."""
    if hasattr(dst, "full_tensor"):
        from torch.distributed.tensor import distribute_tensor
        dst.copy_(distribute_tensor(full.to(dst.device), dst.device_mesh, dst.placements))
    else:
        dst.copy_(full)
