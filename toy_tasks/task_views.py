"""What an experiment needs to know about a task: its support, how to sample data, and the exact curves.

A joint small enough for the exact engine is enumerated (`JointView`). `align` beyond the engine's memory
budget (`imdm_lab.exact.check_size`; the paper's V = 50 000, L = 10) is described in closed form
(`AlignView`): the support is the V constant sequences, TC = (L - 1) ln V, and the k-step exact MDM puts
mass P_k(all equal) / V on each of them (`exact.align_success`), so KL(p || p_k) = -ln P_k(all equal).
A model's KL needs either an exact formula (the one-step product law of an MDM) or >= 20 V draws
(toy_tasks.evaluate, estimator `none` otherwise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from imdm_lab.exact import Marginals, align_success, check_size, kl, mdm_law, stepwise_bound, support, total_correlation
from toy_tasks.distributions import TASKS, VALIDATORS, make_task


@dataclass
class JointView:
    name: str
    params: dict
    probs: np.ndarray  # the joint, Float64[(V,)*L]

    def __post_init__(self):
        self.m = Marginals(self.probs)
        self.support, mass = support(self.m)
        self.support_probs = mass / mass.sum()
        self.V, self.L = self.probs.shape[0], self.probs.ndim
        self.total_correlation = total_correlation(self.m)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n i.i.d. data sequences: Long[n, L]."""
        rows = torch.multinomial(torch.from_numpy(self.support_probs), n, replacement=True, generator=generator)
        return torch.from_numpy(self.support)[rows]

    def mdm_kl(self, steps: int) -> float:
        return kl(self.m, mdm_law(self.m, steps))

    def bound(self, steps: int) -> float | None:
        return stepwise_bound(self.m, steps)


@dataclass
class AlignView:
    V: int
    L: int
    name: str = "align"

    def __post_init__(self):
        self.params = {"V": self.V, "L": self.L}
        self.support = np.repeat(np.arange(self.V, dtype=np.int64)[:, None], self.L, axis=1)
        self.support_probs = np.full(self.V, 1.0 / self.V)
        self.total_correlation = (self.L - 1) * math.log(self.V)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.V, (n, 1), generator=generator).expand(n, self.L).contiguous()

    def mdm_kl(self, steps: int) -> float:
        return -math.log(align_success(self.V, self.L, steps))

    def bound(self, steps: int) -> float | None:
        return None  # the stepwise bound needs the enumerated joint


def task_view(name: str, **params):
    """JointView of a named task, or AlignView when `align` is beyond the exact engine's memory budget
    (imdm_lab.exact.check_size refuses its joint). The choice shows in what the view returns: an AlignView
    has no stepwise bound (None), and the evaluation estimates its KL by Monte Carlo (`kl_estimator`)."""
    if name == "align" and set(params) <= {"V", "L"}:
        full = {**TASKS["align"].defaults, **params}
        V, L = VALIDATORS["V"](full["V"]), VALIDATORS["L"](full["L"])
        try:
            check_size(V, L)
        except ValueError:
            return AlignView(V, L)
    task = make_task(name, **params)
    return JointView(task.name, task.params, task.probs)
