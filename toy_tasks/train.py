"""The optimisation loop shared by every toy method: AdamW, one-cycle learning rate, gradient clipping.

A method supplies `loss_fn(step, generator) -> scalar`; the loop owns the optimizer and the generator, so
a run is a pure function of (initial weights, seed).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch

from imdm_lab.lr_schedule import learning_rate


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    lr: float = 3e-3
    batch: int = 128
    clip: float = 1.0


def train(model: torch.nn.Module, loss_fn: Callable[[int, torch.Generator], torch.Tensor], config: TrainConfig,
          seed: int) -> list[float]:
    """Run config.steps optimizer steps on model in place; returns the loss of every step.

    The learning rate warms up linearly over the first 10% of the steps, then follows a cosine to 0
    (imdm_lab.lr_schedule, kind "cosine"): a deterministic coupling is only learned sharply if the step
    size goes down at the end."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    warm = max(1, config.steps // 10)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, config.lr, warm, config.steps, kind="cosine")
        loss = loss_fn(step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.clip)
        opt.step()
        losses.append(loss.detach().item())
    model.eval()
    return losses


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy with gradients off (a teacher)."""
    return copy.deepcopy(model).eval().requires_grad_(False)
