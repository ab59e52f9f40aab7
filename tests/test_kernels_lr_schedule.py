"""imdm_lab.lr_schedule: each kind equals, float for float, the closed form its loop used before the
loops shared it (the DiT trainer's constant rate after a warm-up, the toy loop's LambdaLR cosine driven
through a real AdamW, the judge's cosine to a tenth), and has the shape its docstring states."""
import math
import re
from fractions import Fraction

import pytest
import torch

from imdm_lab.lr_schedule import learning_rate

# (base, warm-up, total): the shipped configs' settings and awkward ones (no warm-up, warm-up >= total)
SETTINGS = [(3e-4, 2500, 10_000), (3e-3, 5, 30), (6e-5, 500, 1000), (1e-3, 30, 300), (3e-3, 5, 20),
            (1e-2, 2, 8), (7e-4, 0, 50), (2e-3, 12, 12), (1, 3, 10)]


def constant_closed_form(s, base, warmup):
    return base * min(1.0, (s + 1) / warmup) if warmup > 0 else base


def judge_closed_form(s, base, warmup, total):
    if s < warmup:
        return base * (s + 1) / warmup
    frac = (s - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def toy_rates_through_lambda_lr(base, warm, total):
    """The rates a torch LambdaLR with the toy loop's lambda set on an AdamW, one per optimizer step."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(
        math.pi * min(max(s + 1 - warm, 0) / max(total - warm, 1), 1.0)))))
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.parametrize("base,warmup,total", SETTINGS)
def test_each_kind_is_bit_identical_to_its_closed_form(base, warmup, total):
    steps = range(total + 3)
    assert [learning_rate(s, base, warmup) for s in steps] == [constant_closed_form(s, base, warmup) for s in steps]
    assert [learning_rate(s, base, warmup, total, kind="cosine-floor") for s in steps] == \
        [judge_closed_form(s, base, warmup, total) for s in steps]
    if warmup >= 1:  # the toy loop warms up over max(1, steps // 10) >= 1 steps
        assert [learning_rate(s, base, warmup, total, kind="cosine") for s in range(total)] == \
            toy_rates_through_lambda_lr(base, warmup, total)


@pytest.mark.parametrize("base,warmup,total", [s for s in SETTINGS if 0 < s[1] < s[2]])
def test_the_shapes_the_docstring_states(base, warmup, total):
    for kind in ("constant", "cosine", "cosine-floor"):
        rates = [learning_rate(s, base, warmup, total, kind=kind) for s in range(total)]
        # linear warm-up: rate(s) = base (s + 1) / W up to rounding, base reached at s = W - 1
        for s in range(warmup):
            exact = Fraction(base) * (s + 1) / warmup
            assert abs(Fraction(rates[s]) - exact) <= Fraction(base) * Fraction(1, 2 ** 50)
        assert rates[warmup - 1] == base
        after = rates[warmup - 1:]
        assert all(a >= b for a, b in zip(after, after[1:], strict=False))  # never rises after the warm-up
    assert learning_rate(total - 1, base, warmup, total, kind="cosine") == 0.0
    assert learning_rate(10 ** 6, base, warmup, total) == base
    floor = learning_rate(total, base, warmup, total, kind="cosine-floor")
    assert floor == pytest.approx(0.1 * base, rel=1e-12)
    assert learning_rate(warmup, base, warmup, total, kind="cosine-floor") == base  # held one step longer


def test_no_warm_up_starts_at_the_peak():
    assert learning_rate(0, 1e-3, 0) == 1e-3
    assert learning_rate(0, 1e-3, 0, 10, kind="cosine") == 0.5 * (1 + math.cos(math.pi * 0.1)) * 1e-3
    assert learning_rate(0, 1e-3, 0, 10, kind="cosine-floor") == 1e-3


@pytest.mark.parametrize("kwargs,message", [
    (dict(kind="linear"), "kind: expected one of ['constant', 'cosine', 'cosine-floor'], got 'linear'"),
    (dict(warmup=-1), "warmup: expected an integer >= 0, got -1"),
    (dict(warmup=2.5), "warmup: expected an integer >= 0, got 2.5"),
    (dict(kind="cosine"), "total: expected the run's number of steps (an integer >= 1) for kind 'cosine', got None"),
    (dict(kind="cosine-floor", total=0), "total: expected the run's number of steps"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        learning_rate(**{"step": 0, "base": 1e-3, "warmup": 5, **kwargs})
