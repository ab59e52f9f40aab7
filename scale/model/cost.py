"""What a DiT costs before it is built: its parameter count in closed form, and the check that refuses a
model whose training state cannot fit in this machine's memory (before any data is read or tensor
allocated)."""
from __future__ import annotations

import dataclasses

import torch

from imdm_lab.checks import host_memory, largest_fitting
from scale.model.dit import DiTConfig


def config_parameter_count(config: DiTConfig) -> int:
    """The parameters DiT(config) will hold, in closed form (no tensor is allocated), with d = hidden,
    c = cond, C = vocab_size, D = label_dim, h = heads, C' = embedding rows:

        embedding   C' d  +  eps path: rand / randn 4dD + 4d + 4d^2 (learnable: + 2D), finite K d, none 0
        timestep    256 c + c + c^2 + c
        per block   2d (norms) + 3d^2 + d^2 (attention) + 8d^2 + 5d (MLP) + 6cd + 6d (adaLN)
                    [+ 4 d / h for qk_norm]
        output      d + dC + C + 2cd + 2d

    A config whose vocabulary is not known yet counts two classes (a lower bound).
    """
    if config.vocab_size is None:  # the data is not open yet: count the fewest classes, a lower bound
        config = dataclasses.replace(config, vocab_size=2, mask_id=2)
    d, c, C = config.dims.hidden, config.dims.cond, config.vocab_size
    labels = config.mask_labels()
    eps = 0
    if labels is not None and labels.kind == "finite":
        eps = labels.K * d
    elif labels is not None:
        eps = 4 * d * labels.dim + 4 * d + 4 * d * d + (2 * labels.dim if labels.kind == "learnable" else 0)
    block = 2 * d + 12 * d * d + 5 * d + 6 * c * d + 6 * d + (4 * (d // config.dims.heads) if config.qk_norm else 0)
    return (config.embed_rows * d + eps + 256 * c + 2 * c + c * c + config.dims.blocks * block
            + d + d * C + C + 2 * c * d + 2 * d)


# Bytes each parameter costs in training: float32 weights, gradients, AdamW's two moments and the EMA.
TRAINING_BYTES_PER_PARAMETER = 20


def check_fits(config: DiTConfig, memory: int, what: str = "training") -> None:
    """Refuse, before any tensor is allocated, a model whose parameters alone (TRAINING_BYTES_PER_PARAMETER
    bytes each) exceed `memory` bytes, naming the first dimension the config sets explicitly (blocks,
    hidden, label_dim, cond; else the size) and the largest value of it that fits."""
    def cost(cfg: DiTConfig) -> int:
        return config_parameter_count(cfg) * TRAINING_BYTES_PER_PARAMETER

    if cost(config) <= memory:
        return
    given = [k for k in ("blocks", "hidden", "label_dim", "cond") if getattr(config, k) is not None]
    need = f"{cost(config) / 2**30:.3g} GiB"
    if not given:
        raise ValueError(f"model.size: {config.size!r} needs {need} for {what} ({TRAINING_BYTES_PER_PARAMETER} "
                         f"bytes a parameter), more than the {memory / 2**30:.3g} GiB of memory here")
    key = given[0]
    step = 2 * config.dims.heads if key == "hidden" else 1  # hidden stays a multiple of 2 heads (rotary)

    most = largest_fitting(lambda v: cost(dataclasses.replace(config, **{key: v * step})), memory)
    largest = f"the largest that fits is {most * step}" if most else "no value of it fits"
    raise ValueError(f"model.{key}: {getattr(config, key)} needs {need} for {what} "
                     f"({TRAINING_BYTES_PER_PARAMETER} bytes a parameter), more than the "
                     f"{memory / 2**30:.3g} GiB of memory here; {largest}")


def device_memory(device: torch.device | str) -> int:
    """Bytes of memory on `device`: the GPU's total, or the host's physical memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return host_memory()
