"""The toy demonstration: distillation kernels checked against exact laws, and the qualitative facts
(MDM one step = TC; ELBO-IMDM = MDM; eps-coupled IMDM far below TC) on a small align task."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imdm_lab.distill import (
    eps_coupled_completion,
    inverse_cdf,
    perturbed_coupling,
    read_labels,
    round_plan,
    teacher_targets,
)
from imdm_lab.exact import kl
from imdm_lab.labels import MaskLabels
from imdm_lab.losses import subs_log_probs
from imdm_lab.process import Process
from toy_tasks.cli import main
from toy_tasks.distributions import make_task
from toy_tasks.evaluate import evaluate, kl_exact, kl_paths, left_to_right_kl, support_counts
from toy_tasks.methods import Budget, Run
from toy_tasks.models import make_model
from toy_tasks.oracle import OracleMDM
from toy_tasks.task_views import task_view


def _law(samples: torch.Tensor, V: int, L: int) -> np.ndarray:
    codes = (samples * V ** torch.arange(L - 1, -1, -1)).sum(1)
    return (np.bincount(codes.numpy(), minlength=V**L) / len(samples)).reshape((V,) * L)


# ---- distillation kernels against exact laws ------------------------------------------------------

def test_inverse_cdf_maps_a_uniform_grid_to_the_probabilities_and_residuals_stay_uniform():
    probs = torch.tensor([[0.5, 0.25, 0.0, 0.25]], dtype=torch.float64)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    token, residual = inverse_cdf(probs.expand(1000, 4), u)
    assert np.allclose(np.bincount(token.numpy(), minlength=4) / 1000, probs[0].numpy())
    for v in (0, 1, 3):  # the residual of each token is again spread evenly over [0, 1)
        r = residual[token == v].numpy()
        assert r.min() < 0.01 and r.max() > 0.99 and abs(r.mean() - 0.5) < 0.01


@pytest.mark.parametrize("reader, labels", [("kr", MaskLabels("rand", dim=2)),
                                           ("reveal-times", MaskLabels("randn", dim=2)),
                                           ("bits", MaskLabels("rand", dim=2)),
                                           ("joint", MaskLabels("finite", K=2))])
def test_eps_coupling_of_the_exact_teacher_pushes_labels_forward_to_p(reader, labels):
    p = make_task("dirichlet", V=3, L=3, seed=1, alpha=0.5).probs
    teacher = OracleMDM(p)
    n = 40_000
    gen = torch.Generator().manual_seed(0)
    eps = labels.draw(n, 3, generator=gen)
    x = torch.full((n, 3), 3, dtype=torch.int64)
    out = eps_coupled_completion(teacher, x, eps, read_labels(eps, labels, reader, gen), mask_id=3)
    q = _law(out, 3, 3)
    assert 0.5 * np.abs(q - p).sum() < 0.02  # TV; sampling noise alone is ~0.01 at n = 40 000


def test_bits_reader_reads_the_halves_of_the_label_coordinates_as_binary_digits():
    labels = MaskLabels("randn", dim=2)
    eps = torch.tensor([[[0.3, -2.0], [-0.1, 1.5]]] * 1000)  # halves 1, 0, 0, 1 -> u in [9/16, 10/16)
    reading = read_labels(eps, labels, "bits", torch.Generator().manual_seed(0))
    assert reading.chained and reading.order.tolist()[0] == [0, 1]
    u = reading.u[:, 0]
    assert bool(((u >= 9 / 16) & (u < 10 / 16)).all()) and bool((reading.u[:, 1] == u).all())
    assert abs(float((u - 9 / 16).mean()) * 16 - 0.5) < 0.05  # the dither spreads u over the cell
    with pytest.raises(ValueError, match="reader"):
        read_labels(torch.zeros(2, 2, dtype=torch.int64), MaskLabels("finite", K=2), "bits")


def test_eps_coupling_is_a_function_of_the_labels():
    p = make_task("dirichlet", V=3, L=3, seed=2, alpha=0.5).probs
    labels = MaskLabels("rand", dim=2)
    eps = labels.draw(64, 3, generator=torch.Generator().manual_seed(1))
    x = torch.full((64, 3), 3, dtype=torch.int64)
    x[::2, 1] = 2  # partially masked rows keep their visible tokens
    runs = [eps_coupled_completion(OracleMDM(p), x, eps, read_labels(eps, labels, "kr"), mask_id=3)
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][::2, 1], x[::2, 1])


def test_round_plan_doubles_the_step_until_one_step():
    assert round_plan(16, 1, 2) == [1 / 16, 1 / 8, 1 / 4, 1 / 2]
    with pytest.raises(ValueError, match="^target_steps"):
        round_plan(12, 5, 2)


def test_teacher_targets_of_one_full_step_are_the_teacher_prediction():
    p = make_task("dirichlet", V=3, L=3, seed=3, alpha=0.5).probs
    teacher = OracleMDM(p)
    x_t = torch.tensor([[3, 3, 3], [0, 3, 3], [1, 2, 3]])
    t = torch.ones(3)
    target = teacher_targets(teacher, x_t, None, t, dt=1.0, k=2,
                             generator=torch.Generator().manual_seed(0))
    direct = subs_log_probs(teacher(x_t, None, t), x_t, 3)
    assert torch.allclose(target, direct)  # a step of size 1 from t = 1 reveals everything at once


def test_perturbed_coupling_completes_the_visible_tokens():
    p = make_task("align", V=5, L=4).probs
    view = task_view("align", V=5, L=4)
    gen = torch.Generator().manual_seed(0)
    x0 = view.sample(256, gen)
    c = perturbed_coupling(OracleMDM(p), x0, steps=4, generator=gen)
    visible = c.x_t != 5
    assert torch.equal(c.x_0[visible], x0[visible])
    assert (c.x_0 < 5).all() and bool(((c.t > 0) & (c.t <= 1)).all())
    # with something visible, the exact teacher copies it to every position (align)
    some = visible.any(1)
    assert bool((c.x_0[some] == c.x_0[some][:, :1]).all())



def test_perturbed_coupling_masks_under_the_masking_schedule_and_keeps_given_seeds():
    p = make_task("align", V=5, L=8).probs
    gen = torch.Generator().manual_seed(1)
    x0 = torch.zeros(4000, 8, dtype=torch.long)
    seeds = torch.arange(4000, dtype=torch.long) * 7
    c = perturbed_coupling(OracleMDM(p), x0, steps=1, mask_schedule="cosine", seeds=seeds,
                           generator=gen)
    assert torch.equal(c.seeds, seeds)
    # cosine: P(masked | t) = (1 - 1e-3) (1 - cos(pi t / 2)), written out here; the linear law would give t
    expected = np.mean([(1 - 1e-3) * (1 - math.cos(math.pi * t / 2)) for t in c.t.tolist()])
    frac = (c.x_t == 5).double().mean().item()
    assert abs(frac - expected) < 0.02  # 32000 coins: standard error < 0.003
    assert abs(frac - c.t.mean().item()) > 0.1
    with pytest.raises(ValueError, match="^seeds: expected a Long tensor"):
        perturbed_coupling(OracleMDM(p), x0[:3], steps=1, seeds=seeds, generator=gen)

# ---- evaluation against an independent computation ------------------------------------------------

def test_exact_one_step_kl_of_an_mdm_is_the_kl_to_its_product_law():
    view = task_view("dirichlet", V=3, L=3, seed=4, alpha=0.5)
    model = make_model("tiny", 3, 3, "none", seed=5)
    x = torch.full((1, 3), 3, dtype=torch.int64)
    with torch.no_grad():
        q_i = torch.softmax(model(x, None, torch.ones(1))[0].double(), -1).numpy()  # [L, V]
    product = np.einsum("a,b,c->abc", *q_i)
    got, _ = kl_exact(model, view, greedy=False, n=0, gen=None)
    assert got == pytest.approx(kl(view.probs, product), rel=1e-6)


# ---- the qualitative facts on align (short trainings, fixed seeds) ---------------------------------

@pytest.fixture(scope="module")
def align_run():
    # One thread: these tiny networks gain nothing from intra-op threads, and a busy machine makes
    # two threads per process several times slower (the experiment CLI does the same).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    view = task_view("align", V=8, L=3)
    budget = Budget(elbo_steps=300, round_steps=1, sdtt_start=2, redi_pairs=64, redi_teacher_steps=2,
                    redi_steps=1, coupling_steps=500, batch=64)
    yield Run(view, "tiny", budget, seed=0)
    torch.set_num_threads(threads)


def _one_step(run, method):
    return evaluate(run.get(method), run.view, 1, 2048, seed=7)


def test_elbo_trained_mdm_one_step_kl_is_the_total_correlation(align_run):
    tc = align_run.view.total_correlation
    row = _one_step(align_run, "mdm")
    assert row["kl_estimator"] == "exact"
    assert abs(row["kl"] - tc) < 0.1 * tc
    assert row["success"] < 0.1


def test_elbo_trained_imdm_stays_close_to_the_mdm(align_run):
    tc = align_run.view.total_correlation
    mdm, imdm = _one_step(align_run, "mdm"), _one_step(align_run, "imdm-elbo")
    assert imdm["kl_estimator"] == "labels-mc"
    assert abs(imdm["kl"] - mdm["kl"]) < 0.1 * tc


def test_eps_coupled_imdm_beats_the_factorization_bound_in_one_step(align_run):
    tc = align_run.view.total_correlation
    row = _one_step(align_run, "imdm-eps-coupling")
    assert row["kl"] < 0.5 * tc and row["kl_ci"][1] < 0.5 * tc
    assert row["success"] > 0.5
    assert row["coverage"] == 1.0


# ---- command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, names", [
    (["experiment", "--preset", "nope"], "demo, readers, long-coupling, paper-synthetic"),
    (["experiment", "--preset", "demo", "--methods", "mdm,magic"], "imdm-eps-coupling"),
    (["experiment", "--preset", "demo", "--tasks", "nope"], "align"),
    (["experiment", "--preset", "demo", "--workers", "0"], "workers: expected an integer >= 1"),
])
def test_experiment_cli_rejects_unknown_names_with_exit_2(argv, names, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_path_estimate_of_the_multi_step_law_matches_the_exact_mdm_law():
    view = task_view("dirichlet", V=3, L=3, seed=6, alpha=0.5)
    oracle = OracleMDM(view.probs)
    for steps in (2, 4):
        got, ci = kl_paths(oracle, view, steps, 4000, torch.Generator().manual_seed(steps))
        want = view.mdm_kl(steps)
        assert ci[0] - 0.01 <= want <= ci[1] + 0.01 and abs(got - want) < 0.03


def test_greedy_last_step_after_others_is_measured_on_its_own_samples():
    """align V=4, L=2, two linear steps, greedy last step, exact oracle. Step 1 reveals each position
    with prob. 1/2: one revealed (1/2) -> the other copies it; both (1/4) -> equal w.p. 1/4; none (1/4) ->
    the argmax of the uniform conditional is token 0 at both. q(c, c) = (1/2 + 1/16)/4 + [c = 0]/4."""
    view = task_view("align", V=4, L=2)
    oracle = OracleMDM(view.probs)
    q = np.full(4, (0.5 + 1 / 16) / 4)
    q[0] += 0.25
    want = float(np.sum(0.25 * np.log(0.25 / q)))  # 0.320; the ancestral law would give ln(1.6) = 0.470
    row = evaluate(oracle, view, 2, 20000, seed=0, last_step="greedy")
    assert row["kl_estimator"] == "histogram" and abs(row["kl"] - want) < 0.03

def test_support_counts_count_each_support_row_and_ignore_the_rest():
    support = np.array([[0, 0], [1, 1], [2, 2]])
    samples = np.array([[1, 1], [0, 1], [1, 1], [2, 2], [1, 1], [2, 0]])
    assert support_counts(samples, support).tolist() == [0, 3, 1]

def test_left_to_right_law_of_the_exact_teacher_is_p():
    view = task_view("dirichlet", V=3, L=3, seed=1, alpha=0.5)
    oracle = OracleMDM(view.probs)
    assert abs(left_to_right_kl(oracle, view)) < 1e-9


# ---- IM-ReDi on a finite coupling: the mechanism measurements and the redi-epochs preset ------------

class _NearestSeedAlign(torch.nn.Module):
    """A hand-made align denoiser that does what a memorising IM-ReDi student would: a visible token is
    copied everywhere, a fully masked row gets the stored x_0 of the fully masked pair whose seed's labels
    are nearest to its own."""

    def __init__(self, pairs, labels, V, L):
        super().__init__()
        self.V, self.L, self.mask_id = V, L, V
        self.process = Process(mask_id=V, labels=labels)
        full = (pairs.x_t == V).all(1)
        self.bank, self.x_0 = labels.from_seeds(pairs.seeds[full], L).flatten(1), pairs.x_0[full]

    def forward(self, x, eps, t):
        visible = x != self.mask_id
        first = torch.where(visible, x, torch.zeros_like(x)).max(1, keepdim=True).values  # align: all equal
        near = self.x_0[torch.cdist(eps.flatten(1), self.bank).argmin(1)]  # [B, L]
        tokens = torch.where(visible.any(1, keepdim=True), first.expand_as(x), near)
        return 20.0 * torch.nn.functional.one_hot(tokens, self.V).float()


def test_mechanism_of_a_nearest_seed_student_reproduces_its_pairs_and_follows_the_nearest_full_seed():
    from toy_tasks.redi_epochs import mechanism
    V, L = 5, 3
    labels = MaskLabels("rand", dim=2)
    gen = torch.Generator().manual_seed(0)
    pairs = perturbed_coupling(OracleMDM(make_task("align", V=V, L=L).probs),
                               task_view("align", V=V, L=L).sample(300, gen), steps=3, generator=gen)
    assert (pairs.x_t == V).all(1).sum() > 20  # enough fully masked pairs for a partition
    row = mechanism(_NearestSeedAlign(pairs, labels, V, L), pairs, 2000, torch.Generator().manual_seed(1))
    assert row["reproduction"] == 1.0 and row["stored"] == 1.0 and row["nearest_full"] == 1.0
    assert row["nearest"] < 1.0  # the nearest of all seeds is often a partly visible pair's: its x_0 is not the seed's


def test_redi_epochs_preset_runs_and_its_mdm_student_never_beats_the_total_correlation(tmp_path, monkeypatch):
    import json

    from toy_tasks import redi_epochs
    monkeypatch.setattr(redi_epochs, "TASK", ("align", {"V": 6, "L": 3}))
    monkeypatch.setattr(redi_epochs, "SIZE", "tiny")
    monkeypatch.setattr(redi_epochs, "BUDGET", Budget(elbo_steps=20, round_steps=1, sdtt_start=2, redi_pairs=32,
                                                      redi_teacher_steps=2, redi_steps=1, coupling_steps=1,
                                                      batch=32))
    monkeypatch.setattr(redi_epochs, "PAIRS", (32, 64))
    monkeypatch.setattr(redi_epochs, "EPOCHS", (1, 4))
    monkeypatch.setattr(redi_epochs, "SAMPLES", 256)
    out = tmp_path / "r.json"
    assert main(["experiment", "--preset", "redi-epochs", "--workers", "1", "--json", str(out),
                 "--plot", str(tmp_path / "r.png")]) == 0
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["method"], r["pairs"], r["epochs"], r["train_steps"]) for r in rows] == [
        (m, n, e, e * n // 32) for n in (32, 64) for m in ("imdm-redi", "redi") for e in (1, 4)]
    tc = result["total_correlation"]
    assert result["mdm_exact_kl"]["1"] == pytest.approx(tc)
    for r in rows:
        if r["method"] == "redi":  # a product law: the one-step KL is >= TC (factorization bound)
            assert r["kl_estimator"] == "exact" and r["kl"] >= tc - 1e-9 and r["nearest"] is None
        assert 0.0 <= r["reproduction"] <= 1.0
    assert (tmp_path / "r.png").stat().st_size > 0


def test_align_beyond_the_engine_budget_gets_the_closed_form_without_printing(capsys, monkeypatch):
    """The budget is the exact engine's own (exact.check_size): lowered below what align V=5, L=4 needs,
    the same call returns the closed-form view; nothing is printed either way."""
    import imdm_lab.exact as exact
    from toy_tasks.task_views import AlignView, JointView
    assert isinstance(task_view("align", V=5, L=4), JointView)
    assert isinstance(task_view("align", V=50000, L=10), AlignView)
    monkeypatch.setattr(exact, "DEFAULT_BUDGET_BYTES", exact.engine_bytes(5, 4) - 1)
    view = task_view("align", V=5, L=4)
    assert isinstance(view, AlignView) and (view.V, view.L) == (5, 4) and view.bound(2) is None
    assert capsys.readouterr().out == ""
