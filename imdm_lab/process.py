"""The diffusion process a denoiser is trained under, bound to the denoiser once.

A `Process` holds what every kernel needs beyond the tensors: the mask token id, the schedule alpha(t),
the law of the mask labels (None: an MDM), whether the network reads t, and the smallest training time.
Every model of the project carries one as `model.process`; the sampler, the ELBO and the distillation
kernels read it from the denoiser (`process_of`), so a caller states only what the model does not know:

    out = sample(model, batch_size=64, steps=4)         # mask id, schedule, labels, cache rule: model's

A plain function (an oracle, a test's lambda) passes `process=` instead; a model that carries a process
and is given a different one is an error, so a wrong mask id cannot run silently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imdm_lab.labels import MaskLabels
from imdm_lab.schedules import Schedule, get_schedule


@dataclass(frozen=True)
class Process:
    """mask_id: the mask token; schedule: a name of imdm_lab.schedules or a Schedule; labels: the law of
    eps (None: MDM); time_conditioning: the network reads t (then the sampler may not reuse an output
    across steps); t_min: training times are drawn from [t_min, 1]."""

    mask_id: int
    schedule: str | Schedule = "linear"
    labels: MaskLabels | None = None
    time_conditioning: bool = False
    t_min: float = 1e-3

    def __post_init__(self):
        if isinstance(self.mask_id, bool) or not isinstance(self.mask_id, int) or self.mask_id < 0:
            raise ValueError(f"mask_id: expected an integer >= 0, got {self.mask_id!r}")
        get_schedule(self.schedule)
        if self.labels is not None and not isinstance(self.labels, MaskLabels):
            raise ValueError(f"labels: expected a MaskLabels or None, got {type(self.labels).__name__}")
        if not isinstance(self.time_conditioning, bool):
            raise ValueError(f"time_conditioning: expected a bool, got {self.time_conditioning!r}")
        if isinstance(self.t_min, bool) or not isinstance(self.t_min, (int, float)) \
                or not (math.isfinite(self.t_min) and 0.0 <= self.t_min < 1.0):
            raise ValueError(f"t_min: expected a number in [0, 1), got {self.t_min!r}")

    @property
    def cache(self) -> bool:
        """Whether the sampler may reuse a network output over a step that changes nothing: only when
        the network does not read t (its output is then a function of (x_t, eps) alone)."""
        return not self.time_conditioning

    def draw_labels(self, batch: int, length: int, generator: torch.Generator | None = None,
                    seeds: torch.Tensor | None = None, device=None) -> torch.Tensor | None:
        """Fresh labels Float[B, L, D] | Long[B, L] from the generator, or eps(seed) (stream 0) from
        per-sample seeds Long[B]; None for an MDM."""
        if self.labels is None:
            return None
        if seeds is not None:
            return self.labels.from_seeds(seeds.to(device) if device is not None else seeds, length)
        return self.labels.draw(batch, length, generator=generator, device=device)


def process_of(denoiser, process: Process | None = None) -> Process:
    """The process of `denoiser` (its `.process`, also through a DDP / compile wrapper's `.module`), or
    `process` for a denoiser without one. Both given and different: ValueError."""
    own = getattr(denoiser, "process", None)
    if own is None:
        own = getattr(getattr(denoiser, "module", None), "process", None)
    if process is not None and not isinstance(process, Process):
        raise ValueError(f"process: expected a Process, got {type(process).__name__}")
    if own is None and process is None:
        raise ValueError("process: expected a Process (mask id, schedule, labels) for a denoiser that "
                         "carries none as .process")
    if own is not None and process is not None and own != process:
        raise ValueError(f"process: expected the denoiser's own process {own}, got {process}")
    return process or own
