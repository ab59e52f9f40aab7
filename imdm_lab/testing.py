"""Property-based testing of the theory: hypothesis strategies for joints, schedules, step counts and
label laws, and goodness-of-fit tests of samples against an exact law.

    from hypothesis import given
    from imdm_lab import exact
    from imdm_lab.testing import joints, schedules, step_counts

    @given(joints(), schedules(), step_counts())
    def test_kl_below_bound(p, schedule, k):
        assert exact.kl(p, exact.mdm_law(p, k, schedule)) <= exact.stepwise_bound(p, k, schedule) + 1e-12

The strategies of the toy tasks and of the oracle denoisers are in `toy_tasks.testing` (imdm_lab does not
import toy_tasks). docs/testing.md has the worked examples. hypothesis is the optional extra
`imdm-lab[testing]`; without it importing this module is an ImportError that says so.
"""
from __future__ import annotations

try:
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays
except ImportError as err:  # an optional extra: say which one instead of a bare "No module named"
    raise ImportError("imdm_lab.testing needs hypothesis, the optional extra `testing`: "
                      "pip install 'imdm-lab[testing]' (or pip install 'hypothesis>=6.100')") from err

import numpy as np
from scipy import stats

from imdm_lab.checks import check_int
from imdm_lab.exact import check_joint
from imdm_lab.labels import LABEL_KINDS, LABEL_NAMES, MaskLabels
from imdm_lab.schedules import SCHEDULES

# the smallest positive entry of a drawn joint before normalisation: zeros are drawn as exact zeros
MIN_WEIGHT = 1e-3


def _size_range(name: str, low, high, minimum: int) -> tuple[int, int]:
    low, high = check_int(f"min_{name}", low, minimum), check_int(f"max_{name}", high, minimum)
    if low > high:
        raise ValueError(f"max_{name}: expected an integer >= min_{name} = {low}, got {high}")
    return low, high


def _one_vocabulary(vocab_sizes) -> tuple[int, int]:
    """(V, L) of per-position vocabulary sizes, which the exact engine takes only when they are all equal."""
    try:
        sizes = [check_int("vocab_sizes", v, 2) for v in vocab_sizes]
    except TypeError:
        raise ValueError(f"vocab_sizes: expected a sequence of integers >= 2, got {vocab_sizes!r}") from None
    if not sizes:
        raise ValueError("vocab_sizes: expected at least one position, got an empty sequence")
    if len(set(sizes)) != 1:
        raise ValueError(f"vocab_sizes: expected one vocabulary size for every position (imdm_lab.exact takes "
                         f"joints of shape (V,)*L only), got {list(sizes)}")
    return sizes[0], len(sizes)


def joints(max_V: int = 3, max_L: int = 3, *, min_V: int = 2, min_L: int = 1, vocab_sizes=None,
           zeros: bool = True) -> st.SearchStrategy[np.ndarray]:
    """Random joints p: Float64[(V,)*L], V in [min_V, max_V], L in [min_L, max_L], summing to 1.

    Each of the V^L entries is drawn as 0 (when zeros=True, so that supports with holes and contexts
    of probability 0 occur) or a weight in [1e-3, 1], then the weights are normalised; an all-zero draw
    puts the whole mass on one drawn sequence. vocab_sizes: one size per position fixes the shape (V,)*L;
    sizes that differ between positions are refused (ValueError naming vocab_sizes), since the exact
    engine takes joints of shape (V,)*L only. Keep V^L small: every exact quantity enumerates it."""
    if vocab_sizes is not None:
        V, L = _one_vocabulary(vocab_sizes)
        min_V = max_V = V
        min_L = max_L = L
    min_V, max_V = _size_range("V", min_V, max_V, 2)
    min_L, max_L = _size_range("L", min_L, max_L, 1)
    weight = st.floats(MIN_WEIGHT, 1.0)
    elements = st.one_of(st.just(0.0), weight) if zeros else weight

    @st.composite
    def draw_joint(draw):
        V = draw(st.integers(min_V, max_V))
        L = draw(st.integers(min_L, max_L))
        w = draw(arrays(np.float64, V**L, elements=elements))
        if w.sum() == 0:
            w[draw(st.integers(0, V**L - 1))] = 1.0
        return (w / w.sum()).reshape((V,) * L)

    return draw_joint()


def schedules(names=None) -> st.SearchStrategy[str]:
    """A schedule name of imdm_lab.schedules.SCHEDULES (default: every one)."""
    names = sorted(SCHEDULES) if names is None else list(names)
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown or not names:
        raise ValueError(f"names: expected schedule names among {sorted(SCHEDULES)}, got {names!r}")
    return st.sampled_from(names)


def step_counts(max_steps: int = 8, min_steps: int = 1) -> st.SearchStrategy[int]:
    """A number of sampling steps k in [min_steps, max_steps]."""
    low, high = _size_range("steps", min_steps, max_steps, 1)
    return st.integers(low, high)


def label_laws(kinds=None, *, max_dim: int = 3, max_K: int = 16) -> st.SearchStrategy[MaskLabels | None]:
    """A mask-label law of imdm_lab.labels: MaskLabels(kind, ...), or None for the kind "none" (an MDM).

    kinds: names among LABEL_NAMES (default: every kind of LABEL_KINDS, "none" left out); continuous
    kinds draw dim in [1, max_dim] and scale in [0.1, 4], "finite" draws K in [1, max_K]."""
    kinds = list(LABEL_KINDS) if kinds is None else list(kinds)
    if not kinds or any(k not in LABEL_NAMES for k in kinds):
        raise ValueError(f"kinds: expected label kinds among {list(LABEL_NAMES)}, got {kinds!r}")
    max_dim, max_K = check_int("max_dim", max_dim, 1), check_int("max_K", max_K, 1)

    def law(kind: str) -> st.SearchStrategy:
        if kind == "none":
            return st.none()
        if kind == "finite":
            return st.builds(MaskLabels, st.just("finite"), K=st.integers(1, max_K))
        return st.builds(MaskLabels, st.just(kind), dim=st.integers(1, max_dim), scale=st.floats(0.1, 4.0))

    return st.sampled_from(kinds).flatmap(law)


def _cells(tokens, V: int, L: int, name: str) -> np.ndarray:
    """Row-major index of each sequence of tokens Long[N, L] in the (V,)*L table: Long[N]."""
    x = np.asarray(tokens.cpu() if hasattr(tokens, "cpu") else tokens)
    if x.dtype.kind not in "iu" or x.ndim != 2 or x.shape[1] != L or x.shape[0] < 1:
        raise ValueError(f"{name}: expected an integer array of shape (N, {L}) with N >= 1, got {x.dtype} {x.shape}")
    if x.min() < 0 or x.max() >= V:
        raise ValueError(f"{name}: expected token ids in [0, {V}), got values in [{x.min()}, {x.max()}]")
    return x.astype(np.int64) @ (V ** np.arange(L - 1, -1, -1, dtype=np.int64))


def chi_square_pvalue(tokens, law, min_expected: float = 5.0) -> float:
    """p-value of Pearson's chi-square test that the sequences `tokens` (Long[N, L], torch or numpy) are
    N i.i.d. draws from `law` (a joint Float64[(V,)*L]).

    Pooling rule: the cells whose expected count N * law(x) is below min_expected (the usual 5, under which
    the chi-square approximation of a cell's term fails) are merged into one cell, which is kept whatever
    its own expected count; cells of law 0 are left out. The statistic has (cells kept - 1) degrees of
    freedom. A sample that falls on a cell of law 0 is impossible under the law: the p-value is 0. With a
    single cell left (a law on one sequence, or every cell pooled) nothing can be tested: the p-value is 1."""
    V, L = check_joint(law, "law")
    law = np.asarray(law, dtype=np.float64)
    counts = np.bincount(_cells(tokens, V, L, "tokens"), minlength=law.size).astype(np.float64)
    expected = law.ravel() * counts.sum()
    if counts[expected == 0].sum() > 0:
        return 0.0
    big = expected >= min_expected
    small = ~big & (expected > 0)
    obs = np.append(counts[big], counts[small].sum())
    exp_ = np.append(expected[big], expected[small].sum())
    keep = exp_ > 0
    if keep.sum() < 2:
        return 1.0
    return float(stats.chisquare(obs[keep], exp_[keep] * obs[keep].sum() / exp_[keep].sum()).pvalue)


def homogeneity_pvalue(a, b, V: int, min_count: int = 10) -> float:
    """p-value of the two-sample chi-square test that the sequences a and b (Long[N_a, L], Long[N_b, L])
    have one law over the (V,)*L cells: a contingency table of the two samples' cell counts.

    Pooling rule: the cells whose count in both samples together is below min_count are merged into one
    column; empty columns are left out. Use it where neither law is known exactly (two sampler modes)."""
    V = check_int("V", V, 2)
    shape = np.shape(a)
    if len(shape) != 2 or shape[1] < 1:
        raise ValueError(f"a: expected an integer array of shape (N, L) with L >= 1, got shape {shape}")
    L = shape[1]
    cells = [_cells(a, V, L, "a"), _cells(b, V, L, "b")]
    table = np.stack([np.bincount(c, minlength=V**L) for c in cells]).astype(np.float64)
    big = table.sum(0) >= min_count
    table = np.concatenate([table[:, big], table[:, ~big].sum(1, keepdims=True)], axis=1)
    return float(stats.chi2_contingency(table[:, table.sum(0) > 0]).pvalue)
