"""Properties of the exact engine, checked against hand values, brute-force enumeration of the k^L
reveal assignments, and inequalities derived independently of the code."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imdm_lab import exact as E
from imdm_lab.schedules import get_schedule
from imdm_lab.testing import joints, schedules

SETTINGS = settings(max_examples=25, deadline=None)


def copy_task():
    p = np.zeros((3, 3))
    p[[0, 1, 2], [0, 1, 2]] = 1 / 3
    return p


# ---------- brute force: every assignment r in {1..k}^L, every state x ----------

def brute_conditional(p, x, given, i):
    """p(x_i | x_given) by summing the states that agree with x; uniform if the context is impossible."""
    states = np.array(list(np.ndindex(p.shape)))
    agree = np.all(states[:, given] == np.asarray(x)[given], axis=1) if given else np.ones(len(states), bool)
    den = p.ravel()[agree].sum()
    if den == 0:
        return 1.0 / p.shape[0]
    return p.ravel()[agree & (states[:, i] == x[i])].sum() / den


def brute_law(p, k, schedule):
    L = p.ndim
    pi = get_schedule(schedule).reveal_probs(k)
    law = np.zeros_like(p)
    for r in itertools.product(range(k), repeat=L):
        weight = np.prod([pi[j] for j in r])
        for x in np.ndindex(p.shape):
            q = 1.0
            for i in range(L):
                q *= brute_conditional(p, x, [j for j in range(L) if r[j] < r[i]], i)
            law[x] += weight * q
    return law


def brute_tc_given(p, S, U):
    """E_{x_U} TC(X_S | X_U = x_U), by slicing p at every value of x_U."""
    L = p.ndim
    total = 0.0
    for xu in itertools.product(range(p.shape[0]), repeat=len(U)):
        index = [slice(None)] * L
        for j, v in zip(U, xu, strict=False):
            index[j] = v
        sub = p[tuple(index)]  # axes: the positions not in U, in order
        mass = sub.sum()
        if mass == 0:
            continue
        free = [j for j in range(L) if j not in U]
        joint_S = sub.sum(axis=tuple(n for n, j in enumerate(free) if j not in S)) / mass
        def h(a):
            return -sum(v * math.log(v) for v in a.ravel() if v > 0)
        singles = sum(h(joint_S.sum(axis=tuple(m for m in range(len(S)) if m != n))) for n in range(len(S)))
        total += mass * (singles - h(joint_S))
    return total


def brute_bound(p, k, schedule):
    L = p.ndim
    pi = get_schedule(schedule).reveal_probs(k)
    total = 0.0
    for r in itertools.product(range(k), repeat=L):
        weight = np.prod([pi[j] for j in r])
        for j in range(k):
            S = [i for i in range(L) if r[i] == j]
            if len(S) > 1:
                total += weight * brute_tc_given(p, S, [i for i in range(L) if r[i] < j])
    return total


def product_of_marginals(p):
    out = np.ones(())
    for i in range(p.ndim):
        out = np.multiply.outer(out, p.sum(axis=tuple(j for j in range(p.ndim) if j != i)))
    return out


# ---------- hand-derived values ----------

def test_copy_task_hand_values():
    """V=3, L=2, x_1 = x_2 uniform. k=2 (linear): both revealed at one step with probability 1/2, so
    p_2 = p/2 + uniform(9)/2 and KL(p || p_2) = ln((1/3)/(1/6 + 1/18)) = ln 1.5; the bound is (1/2) I = (ln 3)/2."""
    p = copy_task()
    assert E.entropy(p) == pytest.approx(math.log(3), abs=1e-14)
    assert E.total_correlation(p) == pytest.approx(math.log(3), abs=1e-14)
    np.testing.assert_allclose(E.mdm_law(p, 2), p / 2 + 1 / 18, atol=1e-15)
    assert E.kl(p, E.mdm_law(p, 1)) == pytest.approx(math.log(3), abs=1e-14)
    assert E.kl(p, E.mdm_law(p, 2)) == pytest.approx(math.log(1.5), abs=1e-14)
    assert E.stepwise_bound(p, 1) == pytest.approx(math.log(3), abs=1e-14)
    assert E.stepwise_bound(p, 2) == pytest.approx(math.log(3) / 2, abs=1e-14)


def test_parity_bits_conditional_tc_exceeds_tc_of_pair():
    """x_3 = x_1 xor x_2: the pair (1, 2) is independent (TC 0) but TC given x_3 is ln 2."""
    p = np.zeros((2, 2, 2))
    for a, b in itertools.product(range(2), repeat=2):
        p[a, b, a ^ b] = 0.25
    assert E.conditional_tc(p, [0, 1]) == pytest.approx(0.0, abs=1e-15)
    assert E.conditional_tc(p, [0, 1], [2]) == pytest.approx(math.log(2), abs=1e-15)
    assert E.total_correlation(p) == pytest.approx(math.log(2), abs=1e-15)


# ---------- the engine against brute force ----------

@SETTINGS
@given(joints(max_V=2, max_L=3), st.integers(1, 3), schedules(["linear", "cosine"]))
def test_law_and_bound_match_brute_force(p, k, schedule):
    np.testing.assert_allclose(E.mdm_law(p, k, schedule), brute_law(p, k, schedule), atol=1e-13)
    assert E.stepwise_bound(p, k, schedule) == pytest.approx(brute_bound(p, k, schedule), abs=1e-12)


@SETTINGS
@given(joints(), st.data())
def test_conditional_tc_and_marginal_match_slicing(p, data):
    L = p.ndim
    order = data.draw(st.permutations(range(L)))
    cut = data.draw(st.integers(0, L))
    S, U = list(order[:cut]), list(order[cut:])
    assert E.conditional_tc(p, S, U) == pytest.approx(brute_tc_given(p, sorted(S), sorted(U)), abs=1e-12)
    kept = order[:max(cut, 1)]
    direct = np.transpose(p.sum(axis=tuple(j for j in range(L) if j not in kept)), np.argsort(np.argsort(kept)))
    np.testing.assert_allclose(E.marginal(p, kept), direct, atol=1e-15)


@SETTINGS
@given(joints(), st.data())
def test_conditional_marginals_match_brute_force(p, data):
    V, L = p.shape[0], p.ndim
    B = 6
    x = np.array(data.draw(st.lists(st.lists(st.integers(0, V - 1), min_size=L, max_size=L), min_size=B, max_size=B)))
    visible = np.array(data.draw(st.lists(st.lists(st.booleans(), min_size=L, max_size=L), min_size=B, max_size=B)))
    x_in = np.where(visible, x, V)  # hidden positions hold the mask id, which must be ignored
    out = E.conditional_marginals(E.Marginals(p), x_in, visible)
    for b in range(B):
        given_pos = [j for j in range(L) if visible[b, j]]
        for i in range(L):
            if visible[b, i]:
                expected = np.eye(V)[x[b, i]]
            else:
                expected = [brute_conditional(p, np.where(np.arange(L) == i, v, x[b]), given_pos, i) for v in range(V)]
            np.testing.assert_allclose(out[b, i], expected, atol=1e-14)


# ---------- theory properties ----------

@SETTINGS
@given(joints())
def test_tc_nonnegative_zero_for_products_and_equal_to_one_step_kl(p):
    tc = E.total_correlation(p)
    assert tc >= -1e-13
    product = product_of_marginals(p)
    assert abs(E.total_correlation(product)) < 1e-13
    np.testing.assert_allclose(E.mdm_law(p, 1), product, atol=1e-15)
    assert E.kl(p, E.mdm_law(p, 1)) == pytest.approx(tc, abs=1e-12)
    assert E.stepwise_bound(p, 1) == pytest.approx(tc, abs=1e-12)


@SETTINGS
@given(joints(), schedules())
def test_kl_below_bound_and_both_nonincreasing_in_steps(p, schedule):
    kls = [E.kl(p, E.mdm_law(p, k, schedule)) for k in range(1, 7)]
    bounds = [E.stepwise_bound(p, k, schedule) for k in range(1, 7)]
    assert all(d <= b + 1e-12 for d, b in zip(kls, bounds, strict=False))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(kls, kls[1:], strict=False))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(bounds, bounds[1:], strict=False))


@SETTINGS
@given(joints(max_V=3, max_L=3))
def test_law_tends_to_p_and_bound_to_zero(p):
    """With no two positions revealed at one step (probability 1 - P_c = k!/((k-L)! k^L) for linear), the
    MDM samples sequentially from the true conditionals, so p_k >= (1 - P_c) p: TV(p, p_k) <= P_c and
    KL(p || p_k) <= -ln(1 - P_c). Each step's conditional TC is at most (|S_j| - 1) ln V, so
    B_k <= ln V * (L - E[#non-empty steps]) = ln V * (L - k (1 - (1 - 1/k)^L))."""
    V, L, k = p.shape[0], p.ndim, 32
    p_k = E.mdm_law(p, k)
    collision = 1.0 - math.perm(k, L) / k**L
    assert np.all(p_k >= (1 - collision) * p - 1e-15)
    assert 0.5 * np.abs(p_k - p).sum() <= collision + 1e-12
    assert E.kl(p, p_k) <= -math.log(1 - collision) + 1e-12
    assert E.stepwise_bound(p, k) <= math.log(V) * (L - k * (1 - (1 - 1 / k) ** L)) + 1e-12
    assert p_k.sum() == pytest.approx(1.0, abs=1e-12)


@SETTINGS
@given(joints(), st.data())
def test_invariant_under_permuting_positions(p, data):
    perm = data.draw(st.permutations(range(p.ndim)))
    q = np.transpose(p, perm)
    assert E.total_correlation(q) == pytest.approx(E.total_correlation(p), abs=1e-12)
    for k in (2, 3):
        np.testing.assert_allclose(E.mdm_law(q, k), np.transpose(E.mdm_law(p, k), perm), atol=1e-14)
        assert E.stepwise_bound(q, k) == pytest.approx(E.stepwise_bound(p, k), abs=1e-12)


@SETTINGS
@given(joints())
def test_partition_and_map_push_forward_is_p(p):
    """The preimage of each support sequence is exactly [edges[n], edges[n+1]) and its length is p."""
    g = E.partition_and_map(p)
    lengths = np.diff(g.edges)
    np.testing.assert_allclose(lengths, p[tuple(g.support.T)], atol=1e-15)
    assert len(g.support) == np.count_nonzero(p)
    assert g.edges[0] == 0.0 and g.edges[-1] == 1.0
    np.testing.assert_array_equal(g(g.edges[:-1]), g.support)
    np.testing.assert_array_equal(g(np.nextafter(g.edges[1:], 0.0)), g.support)
    assert g(np.full((2, 3), 0.5)).shape == (2, 3, p.ndim)


# ---------- the closed form on align ----------

def align(V, L):
    p = np.zeros((V,) * L)
    p[(np.arange(V),) * L] = 1.0 / V
    return p


@pytest.mark.parametrize("schedule", ["linear", "loglinear", "cosine"])
@pytest.mark.parametrize("V,L", [(2, 1), (2, 3), (3, 2), (3, 4), (4, 3)])
def test_align_closed_form_equals_engine(V, L, schedule):
    p = align(V, L)
    for k in range(1, 6):
        diagonal = E.mdm_law(p, k, schedule)[(np.arange(V),) * L].sum()
        assert E.align_success(V, L, k, schedule) == pytest.approx(diagonal, abs=1e-13)


def test_success_curve_of_the_paper_task():
    """V=50000, L=10, linear: up to O(1/V), success = P(the first non-empty step reveals one token)
    = sum_j L (1/k) ((k-j)/k)^(L-1) = (L/k) sum_{m<k} (m/k)^(L-1)."""
    for k, expected in zip([1, 2, 4, 8, 16], [0.0, 0.00977, 0.1926, 0.4905, 0.7167], strict=False):
        value = E.align_success(50000, 10, k)
        hand = 10 / k * sum((m / k) ** 9 for m in range(k))
        assert value == pytest.approx(hand, abs=1e-4)
        assert value == pytest.approx(expected, abs=6e-5)


# ---------- bad input ----------

@pytest.mark.parametrize("p,pattern", [
    (np.array([0.5, -0.1, 0.6]), "p: expected non-negative"),
    (np.array([0.5, np.nan]), "p: expected finite"),
    (np.array([0.5, 0.4]), "p: expected probabilities summing to 1"),
    (np.full((2, 3), 1 / 6), r"p: expected shape \(V,\)\*L \(every axis"),
    (np.ones((1, 1)), "p: expected shape .* V >= 2"),
    (np.array(1.0), "p: expected shape .* L >= 1"),
    (np.array(["a", "b"]), "p: expected a real-valued array"),
])
def test_bad_joints_are_refused(p, pattern):
    with pytest.raises(ValueError, match=pattern):
        E.total_correlation(p)


def test_memory_budget_refuses_and_names_the_size():
    p = np.full((4,) * 4, 4.0**-4)
    with pytest.raises(ValueError, match=r"p: expected .* budget of .* GiB, got V=4, L=4 .* needing about"):
        E.Marginals(p, budget_bytes=1000)
    assert E.Marginals(p, budget_bytes=E.engine_bytes(4, 4)).V == 4
    with pytest.raises(ValueError, match=r"V, L: .* V=50000, L=10"):
        E.check_size(50000, 10)


@pytest.mark.parametrize("call,pattern", [
    (lambda p: E.mdm_law(p, 0), "steps: expected an integer >= 1, got 0"),
    (lambda p: E.stepwise_bound(p, 2.0), "steps: expected an integer >= 1"),
    (lambda p: E.mdm_law(p, 2, "quadratic"), "schedule: expected one of"),
    (lambda p: E.align_success(1, 3, 2), "V: expected an integer >= 2"),
    (lambda p: E.align_success(3, 0, 2), "L: expected an integer >= 1"),
    (lambda p: E.kl(p, np.full((9,), 1 / 9)), r"q: expected the shape of p"),
    (lambda p: E.kl(p, -p), "q: expected non-negative"),
    (lambda p: E.marginal(p, [0, 0]), "axes: expected distinct positions"),
    (lambda p: E.marginal(p, [2]), r"axes: expected distinct positions in \[0, 2\)"),
    (lambda p: E.conditional_tc(p, [0, 1], [1]), "S: expected positions disjoint"),
    (lambda p: E.partition_and_map(p)(1.0), r"u: expected values in \[0, 1\)"),
    (lambda p: E.conditional_marginals(p, np.zeros((2, 3), int), np.ones((2, 3), bool)), "x: expected an integer"),
    (lambda p: E.conditional_marginals(p, np.zeros((2, 2), int), np.ones((2, 2), int)), "visible: expected a bool"),
    (lambda p: E.conditional_marginals(p, np.full((1, 2), 3), np.ones((1, 2), bool)),
     r"x: expected visible tokens in \[0, 3\)"),
])
def test_bad_arguments_are_refused(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(copy_task())


def test_support_lists_the_positive_sequences_in_lexicographic_order():
    p = np.zeros((3, 3, 3))
    for x, w in (((2, 0, 1), 0.5), ((0, 1, 2), 0.25), ((0, 1, 0), 0.125), ((1, 1, 1), 0.125)):
        p[x] = w
    seqs, mass = E.support(p)
    expected = [x for x in itertools.product(range(3), repeat=3) if p[x] > 0]
    assert [tuple(s) for s in seqs.tolist()] == expected
    np.testing.assert_array_equal(mass, [p[x] for x in expected])
