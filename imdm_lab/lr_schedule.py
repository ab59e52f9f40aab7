"""Learning-rate schedules: the one function every training loop of the project sets its rate with.

Each loop sets the optimizer's rate before optimizer step s = 0, 1, ... to learning_rate(s, ...): the
DiT trainer (scale.training.trainer, "constant"), the toy methods' loop (toy_tasks.train, "cosine") and
the GPT-2 judge (scale.evaluation.judge, "cosine-floor"). Every kind warms up linearly from base / W at
step 0 to base at step W - 1; the kinds differ after it.
"""
from __future__ import annotations

import math
from collections.abc import Callable


def _constant(s: int, base: float, warmup: int, total: int | None) -> float:
    return base * min(1.0, (s + 1) / warmup) if warmup > 0 else base


def _cosine(s: int, base: float, warmup: int, total: int) -> float:
    warm = (s + 1) / warmup if warmup > 0 else math.inf
    return base * min(warm, 0.5 * (1 + math.cos(math.pi * min(max(s + 1 - warmup, 0) / max(total - warmup, 1), 1.0))))


def _cosine_floor(s: int, base: float, warmup: int, total: int) -> float:
    if s < warmup:
        return base * (s + 1) / warmup
    frac = (s - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


# kind -> (rate(s, base, warmup, total), whether it needs `total`)
KINDS: dict[str, tuple[Callable[[int, float, int, int | None], float], bool]] = {
    "constant": (_constant, False),
    "cosine": (_cosine, True),
    "cosine-floor": (_cosine_floor, True),
}


def learning_rate(step: int, base: float, warmup: int, total: int | None = None, kind: str = "constant") -> float:
    """The learning rate of optimizer step `step` (0-based) of a run of `total` steps, peak rate `base`,
    `warmup` warm-up steps (W; 0: none).

        constant:      base * min(1, (s + 1) / W)                                    (W = 0: base)
        cosine:        base * min((s + 1) / W, (1 + cos(pi * u)) / 2),  u = min(max(s + 1 - W, 0) / max(T - W, 1), 1)
                       -- after the warm-up a half cosine from base down to 0 at s = T - 1 (W = 0: the cosine alone)
        cosine-floor:  s < W: base * (s + 1) / W;  else base * (0.1 + 0.9 (1 + cos(pi (s - W) / max(1, T - W))) / 2)
                       -- base held at s = W - 1 and s = W, then a half cosine down to base / 10 at s = T

    Each formula is evaluated in exactly this order of floating-point operations (the rates of a run are
    reproducible bit for bit). ValueError on an unknown kind, a negative warm-up or a missing total."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {kind!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup: expected an integer >= 0, got {warmup!r}")
    rate, needs_total = KINDS[kind]
    if needs_total and (isinstance(total, bool) or not isinstance(total, int) or total < 1):
        raise ValueError(f"total: expected the run's number of steps (an integer >= 1) for kind {kind!r}, "
                         f"got {total!r}")
    return rate(step, base, warmup, total)
