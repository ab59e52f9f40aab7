"""Exact float64 theory on enumerable joints: entropy, total correlation, the k-step exact MDM law,
the stepwise factorization bound and the partition-and-map construction.

A joint p is a float64 array of shape (V,)*L, non-negative, summing to 1 (within 1e-9); axis i is
position i. Logs are natural (nats). A subset of positions is a bitmask (bit i = position i) and its
marginal table keeps the positions in increasing order.

The k-step exact MDM reveals every position at a step r_i in {1..k}, i.i.d. with the schedule's reveal
law pi (linear: uniform); the positions revealed together at step j are drawn independently from the
true conditionals p(x_i | x_U), U = the positions revealed before. Everything depends on the ordered
partition of positions into steps only, so the engine runs on subsets, never on the k^L assignments.
Where the revealed context has probability 0 under p (two tokens revealed together that never co-occur),
p(x_i | x_U) is undefined; the engine uses the uniform law there. Such mass never returns to the support
of p, so KL(p || p_k) and every probability of an x in the support do not depend on this choice.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
from scipy.special import entr, rel_entr
from scipy.stats import binom

from imdm_lab.checks import check_int, largest_fitting
from imdm_lab.schedules import check_steps, get_schedule

DEFAULT_BUDGET_BYTES = 4 * 2**30
# operations of one k-step law: about a minute at the 1.5-15 ns per element product measured on one
# core (benchmarks/exact_engine.py and the align task at V = 2..64); one array operation of the reveal
# recursion costs 25-70 us whatever its size (V = 2, L = 1..6), counted as PYTHON_TERM products
WORK_BUDGET = 10**10
PYTHON_TERM = 10**4
SUM_TOLERANCE = 1e-9


def engine_bytes(V: int, L: int) -> int:
    """Peak work memory (bytes) of the engine on a (V,)*L joint.

    The marginal tables of all 2^L subsets hold sum_T V^|T| = (V+1)^L numbers and the k-step law keeps
    two layers of tables of the same total size; the conditionals of one revealed set and the running
    products of one reveal chain add at most (L + 2) V^L more."""
    return 8 * (3 * (V + 1) ** L + (L + 2) * V**L)


def check_size(V: int, L: int, budget_bytes: int | None = None, name: str = "V, L") -> None:
    """Refuse a joint whose exact-engine work memory exceeds the budget (default 4 GiB), before anything
    of size V^L is allocated, naming the largest L that fits at this V. Sizes far beyond any budget
    (V^L above 2^100) are refused from their logarithm, without forming V^L."""
    budget = DEFAULT_BUDGET_BYTES if budget_bytes is None else budget_bytes
    need = engine_bytes(V, L) if L * math.log2(V + 1) < 100 else None
    if need is None or need > budget:
        log10_states = L * math.log10(V)
        states = f"{10 ** log10_states:.3g}" if log10_states < 300 else f"10^{log10_states:.4g}"
        needs = f"about {need / 2**30:.3g} GiB" if need is not None else "far more"
        most = largest_fitting(lambda n: engine_bytes(V, n), budget)
        fits = f"the largest L that fits at V={V} is {most}" if most else f"no L fits at V={V}"
        raise ValueError(
            f"{name}: expected a joint whose exact-engine work memory fits the budget of "
            f"{budget / 2**30:.3g} GiB, got V={V}, L={L} (V**L = {states} states) needing {needs}; {fits}")


def steps_cost(V: int, L: int, steps: int, law: bool) -> tuple[int, int]:
    """(bytes, operations) of the step-count-dependent work on a (V,)*L joint with k steps.

    The reveal law, its hazards and the pair weights w[u, s, j] hold about 3 (L+1)^2 + 8 L + 8 float64
    numbers per step (peak, temporaries included). The k-step law (law=True) runs k reveal steps, each
    over the 3^L pairs (U, S) of disjoint revealed sets: sum_{U,S} V^|U| V^|S| = (2V+1)^L element
    products, and 3^L array operations of PYTHON_TERM element products each (their overhead)."""
    ops = steps * ((2 * V + 1) ** L + PYTHON_TERM * 3**L) if law else 0
    return 8 * steps * (3 * (L + 1) ** 2 + 8 * L + 8), ops


def check_steps_cost(V: int, L: int, steps: int, law: bool, budget_bytes: int | None = None) -> int:
    """steps, refused (naming the largest step count that fits) when its work exceeds the memory budget
    or, for the k-step law, the work budget of WORK_BUDGET operations, before anything is allocated."""
    steps = check_steps(steps)
    budget = DEFAULT_BUDGET_BYTES if budget_bytes is None else budget_bytes
    need, work = steps_cost(V, L, steps, law)
    if need > budget or work > WORK_BUDGET:
        per_byte, per_op = steps_cost(V, L, 1, law)
        most = min(budget // per_byte, WORK_BUDGET // per_op) if law else budget // per_byte
        if most < 1:  # not the step count: the task itself is too large for one step
            ops = f" and {per_op:.3g} operations" if law else ""
            raise ValueError(f"V, L: expected a task one step of which fits the budgets, got V={V}, L={L} (one step "
                             f"needs about {per_byte} bytes{ops}; budgets {budget / 2**30:.3g} GiB"
                             + (f", {WORK_BUDGET:.0e} operations" if law else "") + ")")
        raise ValueError(
            f"steps: expected at most {most} for V={V}, L={L} (k steps need about k x {per_byte} bytes"
            + (f" and k x {per_op:.3g} operations" if law else "")
            + f"; budgets {budget / 2**30:.3g} GiB" + (f", {WORK_BUDGET:.0e} operations" if law else "")
            + f"), got {steps}")
    return steps


def check_joint(p, name: str = "p", budget_bytes: int | None = None) -> tuple[int, int]:
    """Validate a joint and return (V, L): shape (V,)*L with V >= 2, L >= 1, finite, non-negative,
    summing to 1 within 1e-9, small enough for the memory budget."""
    a = np.asarray(p)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name}: expected a real-valued array, got dtype {a.dtype}")
    if a.ndim < 1:
        raise ValueError(f"{name}: expected shape (V,)*L with L >= 1, got shape {a.shape}")
    V, L = a.shape[0], a.ndim
    if any(n != V for n in a.shape):
        raise ValueError(f"{name}: expected shape (V,)*L (every axis of the same length), got shape {a.shape}")
    if V < 2:
        raise ValueError(f"{name}: expected shape (V,)*L with V >= 2, got shape {a.shape}")
    check_size(V, L, budget_bytes, name)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite probabilities, got NaN or inf entries")
    if a.min() < 0:
        raise ValueError(f"{name}: expected non-negative probabilities, got minimum {a.min()!r}")
    total = float(a.sum(dtype=np.float64))
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"{name}: expected probabilities summing to 1 (within {SUM_TOLERANCE:g}), got sum {total!r}")
    return V, L


def _popcount_below(mask: int, i: int) -> int:
    """Axis of position i in the table of a subset that contains it: the members of mask below i."""
    return (mask & ((1 << i) - 1)).bit_count()


class Marginals:
    """The marginal tables of one joint, computed on demand and cached (float64).

    table(T) has the positions of T in increasing order, shape (V,)*|T|; it is summed from the table of
    T plus its lowest missing position, so each table costs one pass over a table V times larger.
    Pass a Marginals instead of p to any function of this module to share the cache between calls."""

    def __init__(self, p, budget_bytes: int | None = None):
        self.V, self.L = check_joint(p, budget_bytes=budget_bytes)
        self.full = (1 << self.L) - 1
        self.p = np.asarray(p, dtype=np.float64)
        self._tables: dict[int, np.ndarray] = {self.full: self.p}
        self._entropies: dict[int, float] = {}

    def table(self, mask: int) -> np.ndarray:
        t = self._tables.get(mask)
        if t is None:
            missing = self.full & ~mask
            j = (missing & -missing).bit_length() - 1
            parent = mask | (1 << j)
            t = self.table(parent).sum(axis=_popcount_below(parent, j))
            self._tables[mask] = t
        return t

    def broadcast(self, mask: int) -> np.ndarray:
        """table(T) as a view with L axes: size V on the positions of T, 1 elsewhere."""
        shape = tuple(self.V if mask >> i & 1 else 1 for i in range(self.L))
        return self.table(mask).reshape(shape)

    def entropy(self, mask: int) -> float:
        """H(X_T) = -sum p_T log p_T (nats); H of the empty set is 0."""
        h = self._entropies.get(mask)
        if h is None:
            h = float(entr(self.table(mask)).sum())
            self._entropies[mask] = h
        return h

    def entropies(self) -> np.ndarray:
        """H(X_T) for every subset T, indexed by the bitmask (Float64[2^L])."""
        return np.array([self.entropy(mask) for mask in range(self.full + 1)])

    def conditional(self, given: int, i: int) -> np.ndarray:
        """p(x_i | x_given) = p_{given+i} / p_given with L broadcast axes (size V on given and i);
        uniform 1/V where p(x_given) = 0."""
        num = self.broadcast(given | 1 << i)
        den = self.broadcast(given)
        out = np.full(num.shape, 1.0 / self.V)
        np.divide(num, den, out=out, where=np.broadcast_to(den > 0, num.shape))
        return out

    def conditional_rows(self, given: int, x: np.ndarray) -> np.ndarray:
        """Rows of p(x_i = v | x[b, given]) for every position i (Float64[n, L, V]); the one-hot of x[b, i]
        at the given positions, uniform where the context has probability 0."""
        n, V = x.shape[0], self.V
        out = np.zeros((n, self.L, V))
        positions = [j for j in range(self.L) if given >> j & 1]
        context = tuple(x[:, j] for j in positions)
        for i in range(self.L):
            if given >> i & 1:
                out[np.arange(n), i, x[:, i]] = 1.0
                continue
            t = np.moveaxis(self.table(given | 1 << i), _popcount_below(given, i), -1)
            num = t[context] if positions else np.broadcast_to(t, (n, V))
            den = num.sum(axis=-1, keepdims=True)
            out[:, i] = np.divide(num, den, out=np.full((n, V), 1.0 / V), where=den > 0)
        return out


def _tables(p) -> Marginals:
    return p if isinstance(p, Marginals) else Marginals(p)


def entropy(p) -> float:
    """H(p) = -sum_x p(x) log p(x) (nats) of a joint p: Float64[(V,)*L]."""
    m = _tables(p)
    return m.entropy(m.full)


def _check_positions(name: str, positions, L: int) -> list[int]:
    try:
        out = [check_int(name, i, 0) for i in positions]
    except TypeError:
        raise ValueError(f"{name}: expected a sequence of positions in [0, {L}), got {positions!r}") from None
    if any(i >= L for i in out) or len(set(out)) != len(out):
        raise ValueError(f"{name}: expected distinct positions in [0, {L}), got {list(positions)!r}")
    return out


def _mask(positions) -> int:
    return sum(1 << i for i in positions)


def marginal(p, axes) -> np.ndarray:
    """Marginal of p on the positions `axes`, in the order given: Float64[(V,)*len(axes)]."""
    m = _tables(p)
    keep = _check_positions("axes", axes, m.L)
    t = m.table(_mask(keep))
    return np.transpose(t, np.argsort(np.argsort(keep)))


def total_correlation(p) -> float:
    """TC(p) = sum_i H(p_i) - H(p) >= 0, = 0 iff p is a product of its marginals (nats)."""
    m = _tables(p)
    return sum(m.entropy(1 << i) for i in range(m.L)) - m.entropy(m.full)


def _ctc(m: Marginals, S: list[int], given: int) -> float:
    """E TC(X_S | X_G) = sum_{i in S} H(X_i | X_G) - H(X_S | X_G),  H(A | G) = H(A u G) - H(G)."""
    hg = m.entropy(given)
    return sum(m.entropy(given | 1 << i) - hg for i in S) - (m.entropy(given | _mask(S)) - hg)


def conditional_tc(p, S, given=()) -> float:
    """Conditional total correlation of the positions S given the positions `given`, averaged over the
    given tokens under p:  E_{x_G ~ p} TC(X_S | X_G = x_G)  (nats)."""
    m = _tables(p)
    S = _check_positions("S", S, m.L)
    G = _check_positions("given", given, m.L)
    if set(S) & set(G):
        raise ValueError(f"S: expected positions disjoint from given={G}, got {S}")
    return _ctc(m, S, _mask(G))


def kl(p, q) -> float:
    """KL(p || q) = sum_x p(x) log(p(x)/q(x)) (nats); inf where q = 0 < p. p, q: Float64[(V,)*L]."""
    a = _tables(p).p
    check_joint(q, "q")
    if np.shape(q) != a.shape:
        raise ValueError(f"q: expected the shape of p {a.shape}, got {np.shape(q)}")
    return float(rel_entr(a, np.asarray(q, dtype=np.float64)).sum())


def _reveal_law(steps: int, schedule) -> tuple[np.ndarray, np.ndarray]:
    """(pi, c_prev): pi_j = P(a position is revealed at step j) and c_{j-1} = pi_1 + ... + pi_{j-1}, the
    probability that it was revealed before step j (Float64[k] each, c_0 = 0)."""
    pi = get_schedule(schedule).reveal_probs(check_steps(steps))
    return pi, np.concatenate([[0.0], np.cumsum(pi)[:-1]])


def reveal_hazards(steps: int, schedule="linear") -> np.ndarray:
    """h_j = P(revealed at step j | masked after step j-1) = pi_j / (1 - sum_{l<j} pi_l) (Float64[k]);
    the last step reveals everything left, h_k = 1."""
    pi, c_prev = _reveal_law(steps, schedule)
    left = 1.0 - c_prev
    h = np.clip(np.divide(pi, left, out=np.ones_like(pi), where=left > 0), 0.0, 1.0)
    h[-1] = 1.0
    return h


def _add(out: dict, mask: int, t: np.ndarray) -> None:
    """out[mask] += t; t is always a fresh array, so the first one is stored without a copy."""
    if mask in out:
        out[mask] += t
    else:
        out[mask] = t


def _reveal_step(m: Marginals, U: int, a: np.ndarray, h: float, out: dict) -> None:
    """One step from the revealed set U with mass a(x_U): for every S within the rest R,
        out[U+S] += a(x_U) * h^|S| (1-h)^(|R|-|S|) * prod_{i in S} p(x_i | x_U).
    S is grown one position at a time, so each term costs one product of its own size."""
    rest = [i for i in range(m.L) if not U >> i & 1]
    if h >= 1.0:
        t = a
        for i in rest:
            t = t * m.conditional(U, i)
        _add(out, m.full, t if rest else a.copy())  # a belongs to the previous layer: never alias it
        return
    base = a * (1.0 - h) ** len(rest)
    if h <= 0.0:
        _add(out, U, base)
        return
    # h^|S| (1-h)^(|R|-|S|) = (1-h)^|R| * (h/(1-h))^|S|: the ratio goes into each revealed position.
    conds = [m.conditional(U, i) * (h / (1.0 - h)) for i in rest]

    def extend(t: np.ndarray, W: int, start: int) -> None:
        _add(out, W, t)
        for n in range(start, len(rest)):
            extend(t * conds[n], W | 1 << rest[n], n + 1)

    extend(base, U, 0)


def mdm_law(p, steps: int, schedule="linear") -> np.ndarray:
    """Law p_k of the k-step exact MDM (Float64[(V,)*L]).

        p_k(x) = sum_r P(r) prod_j prod_{i in S_j(r)} p(x_i | x_{S_<j(r)}),   r_i ~ pi i.i.d.

    Computed forward over revealed sets: A_j(U, x_U) = P(U revealed after step j, tokens x_U), from
    A_0(empty) = 1 by _reveal_step with the hazards h_j; p_k = A_k(all positions)."""
    m = _tables(p)
    check_steps_cost(m.V, m.L, steps, law=True)
    layer = {0: np.ones((1,) * m.L)}
    for h in reveal_hazards(steps, schedule):
        nxt: dict[int, np.ndarray] = {}
        for U, a in layer.items():
            _reveal_step(m, U, a, float(h), nxt)
        layer = nxt
    return layer[m.full]


def _reveal_pair_weights(L: int, steps: int, schedule) -> np.ndarray:
    """w[u, s] = sum_j c_{j-1}^u pi_j^s (1 - c_j)^(L-u-s): the probability that a given set U (|U| = u) is
    revealed before step j and a given disjoint S (|S| = s) exactly at step j, summed over j
    (c_j = pi_1 + ... + pi_j). Float64[L+1, L+1], zero where u + s > L."""
    pi, c_prev = _reveal_law(steps, schedule)
    c = c_prev + pi
    c[-1] = 1.0
    u = np.arange(L + 1)[:, None, None]
    s = np.arange(L + 1)[None, :, None]
    left = np.clip(L - u - s, 0, None)
    w = (c_prev**u * pi**s * np.clip(1.0 - c, 0.0, 1.0) ** left).sum(axis=-1)
    return np.where(u[..., 0] + s[..., 0] <= L, w, 0.0)


def stepwise_bound(p, steps: int, schedule="linear") -> float:
    """Stepwise factorization bound (path KL of the k-step exact MDM, nats):

        B_k = E_r sum_j E_{x ~ p} TC(X_{S_j} | X_{S_<j}) = sum_{U, S disjoint} w[|U|, |S|] TC(X_S | X_U),

    the least path KL of any MDM with per-token factorised steps on this schedule; KL(p || p_k) <= B_k,
    with equality (= TC(p)) at k = 1."""
    m = _tables(p)
    L = m.L
    w = _reveal_pair_weights(L, check_steps_cost(m.V, L, steps, law=False), schedule)
    H = m.entropies()
    total = 0.0
    for U in range(m.full):
        rest = np.array([i for i in range(L) if not U >> i & 1])
        bits = (np.arange(1, 1 << len(rest))[:, None] >> np.arange(len(rest))) & 1   # the S within rest
        S = bits @ (1 << rest)
        sizes = bits.sum(axis=1)
        ctc = bits @ H[U | (1 << rest)] - sizes * H[U] - H[U | S] + H[U]
        total += float(w[U.bit_count(), sizes] @ ctc)
    return total


def align_success(V: int, L: int, steps: int, schedule="linear") -> float:
    """P(all L tokens equal) for the k-step exact MDM on `align` (uniform over the V constant sequences).

    The first step that reveals anything reveals n >= 1 tokens from the uniform marginal, all equal with
    probability V^(1-n); every later token copies them. With no reveal before step j ((1-c_{j-1})^L) the
    count revealed at step j is Binomial(L, h_j):
        P = sum_j (1 - c_{j-1})^L sum_{n>=1} Binom(n; L, h_j) V^(1-n)."""
    V = check_int("V", V, 2)
    L = check_int("L", L, 1)
    if V > sys.float_info.max:  # the closed form takes V^(1-n) in float64; below that any V is exact
        raise ValueError(f"V: expected an integer in [2, {sys.float_info.max:.4g}] (V^(1-n) is computed in "
                         f"float64), got a number of {len(str(V))} digits")
    h = reveal_hazards(check_steps_cost(V, L, steps, law=False), schedule)
    _, c_prev = _reveal_law(steps, schedule)
    none_before = np.clip(1.0 - c_prev, 0.0, 1.0) ** L
    n = np.arange(1, L + 1)[:, None]
    first = binom.pmf(n, L, h[None, :]) * np.power(float(V), 1.0 - n)
    return float(none_before @ first.sum(axis=0))


@dataclass(frozen=True)
class PartitionMap:
    """u in [0, 1) -> the sequence whose interval [edges[n], edges[n+1]) holds u.

    support: Long[N, L], the sequences with p > 0 in lexicographic order; edges: Float64[N+1], the
    cumulative probabilities (edges[0] = 0, edges[N] = 1), so interval n has length p(support[n]) and the
    push-forward of U[0, 1) is p (up to the float64 rounding of the cumulative sums)."""

    support: np.ndarray
    edges: np.ndarray

    def __call__(self, u) -> np.ndarray:
        """u: float or Float[...] in [0, 1) -> Long[..., L]."""
        u = np.asarray(u, dtype=np.float64)
        if not np.all((u >= 0.0) & (u < 1.0)):
            raise ValueError(f"u: expected values in [0, 1), got min {u.min()!r}, max {u.max()!r}")
        return self.support[np.searchsorted(self.edges, u, side="right") - 1]


def support(p) -> tuple[np.ndarray, np.ndarray]:
    """The sequences with p > 0 in lexicographic order and their masses: (Long[N, L], Float64[N])."""
    m = _tables(p)
    flat = m.p.ravel()
    idx = np.flatnonzero(flat > 0)
    return np.stack(np.unravel_index(idx, m.p.shape), axis=-1).astype(np.int64), flat[idx]


def partition_and_map(p) -> PartitionMap:
    """Partition [0, 1) into one interval of length p(x) per sequence x of the support, and map each
    interval to its sequence: a deterministic g with g_#(U[0, 1)) = p."""
    seqs, mass = support(p)
    edges = np.concatenate([[0.0], np.cumsum(mass) / mass.sum()])
    edges[-1] = 1.0
    return PartitionMap(seqs, edges)


def conditional_marginals(p, x, visible) -> np.ndarray:
    """Exact per-position conditionals given each row's visible tokens (Float64[B, L, V]).

    out[b, i, v] = p(x_i = v | x[b, U_b]),  U_b = {j : visible[b, j]}; the one-hot of x[b, i] at visible
    positions, uniform where the visible context has probability 0. x: Long[B, L] (any value at hidden
    positions, e.g. the mask id), visible: Bool[B, L]. Rows are grouped by visibility pattern, and the
    marginal tables come from the cache of p when p is a Marginals."""
    m = _tables(p)
    x = np.asarray(x)
    visible = np.asarray(visible)
    if x.dtype.kind not in "iu" or x.ndim != 2 or x.shape[1] != m.L:
        raise ValueError(f"x: expected an integer array of shape (B, {m.L}), got {x.dtype} {x.shape}")
    if visible.dtype != np.bool_ or visible.shape != x.shape:
        raise ValueError(f"visible: expected a bool array of shape {x.shape}, got {visible.dtype} {visible.shape}")
    shown = x[visible]
    if shown.size and (shown.min() < 0 or shown.max() >= m.V):
        raise ValueError(f"x: expected visible tokens in [0, {m.V}), got values in [{shown.min()}, {shown.max()}]")
    x = np.where(visible, x, 0).astype(np.int64)
    patterns = visible.astype(np.int64) @ (1 << np.arange(m.L, dtype=np.int64))
    order = np.argsort(patterns, kind="stable")
    masks, starts = np.unique(patterns[order], return_index=True)
    out = np.empty((x.shape[0], m.L, m.V))
    for mask, rows in zip(masks, np.split(order, starts[1:]), strict=True):
        out[rows] = m.conditional_rows(int(mask), x[rows])
    return out
