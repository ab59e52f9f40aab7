"""The AdamW of a training run (its [train] settings: lr, betas, adam_eps, weight_decay) and the
implementations train.optimizer_impl chooses from."""
from __future__ import annotations

from collections.abc import Callable

import torch

# train.optimizer_impl -> (device type -> the `fused` argument of torch.optim.AdamW, None: PyTorch's
# default, foreach). fused: one kernel for all parameters (on CUDA its step counters stay on the device,
# so a step reads nothing back); foreach: the multi-tensor implementation, counters on the host. auto
# keeps the numbers of every earlier run: fused on CUDA, foreach elsewhere (the CPU fused kernel rounds
# differently, ~1 ulp per step, so it stays opt-in there; docs/scale-training.md, "Training throughput
# on a CPU", measures it).
OPTIMIZER_IMPLS: dict[str, Callable[[str], bool | None]] = {
    "auto": lambda device_type: True if device_type == "cuda" else None,
    "fused": lambda device_type: True,
    "foreach": lambda device_type: None,
}


def make_optimizer(model: torch.nn.Module, tc, device_type: str) -> torch.optim.AdamW:
    """AdamW of the [train] settings, implemented as train.optimizer_impl says on this device type."""
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), eps=tc.adam_eps,
                             weight_decay=tc.weight_decay, fused=OPTIMIZER_IMPLS[tc.optimizer_impl](device_type))
