"""The toy methods: how each model of the comparison is trained (METHODS registry).

Every method is a function of a `Run` (task, model size, budget, seed) that returns a trained
ToyDenoiser; methods that start from another one (a distilled student from its ELBO-trained teacher)
ask the run for it, so each model is trained once per run.

    mdm                 MDM (no labels), continuous-time ELBO on data
    imdm-elbo           IMDM (labels U(-1, 1)^D), same ELBO: the labels carry no information about x_0
    sdtt / imdm-sdtt    rounds of 2-step teacher -> 1-step student from `mdm` / `imdm-elbo`, reverse KL,
                        labels shared by teacher and student (imdm), N_0 -> 1 step
    redi / imdm-redi    perturbed coupling of the teacher `mdm` / `imdm-elbo` (many steps, initial labels
                        from a seed), fine-tuned with the ELBO-weighted CE at the stored t, labels from the seed,
                        for many epochs over the finite set of pairs (the paper's regime)
    imdm-sdtt-redi      the paper's chain: IM-ReDi on the coupling drawn from the `imdm-sdtt` student
    imdm-eps-coupling   student from `imdm-elbo` learns the eps-driven coupling of the teacher `mdm`, reading
                        `kr` (Knothe-Rosenblatt: fixed order, inverse CDF from each position's own label)
    imdm-eps-reveal     the same with reveal order and tokens read from the labels (`reveal-times`)
    imdm-eps-bits       the same with one uniform whose binary digits are the halves of the label
                        coordinates, decoded by arithmetic coding (`bits`)
    imdm-kN             a finite N-state mask, MDM weights plus a zero K x d table, eps-driven coupling
                        reading all labels jointly (`joint`)
    imdm-exact-kV       `align` only: a fresh model with a V-state mask, the eps-driven coupling (`joint`) of
                        the exact teacher (toy_tasks.oracle.AlignOracle, not a trained MDM): the label of
                        position 0 names the token; mostly fully masked rows, one scored position per row
                        on the read-out's target rows only (the 50 000-way head at B rows, not B * L),
                        label state k and token k started at 4x the read-out's row k (a tied start)
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from imdm_lab.distill import coupling_loss, eps_coupling_loss, perturbed_coupling, round_plan, sdtt_loss
from imdm_lab.losses import elbo
from imdm_lab.schedules import sample_times
from toy_tasks.models import SCHEDULE, ToyDenoiser, make_model
from toy_tasks.oracle import AlignOracle
from toy_tasks.train import TrainConfig, frozen_copy, train


@dataclass(frozen=True)
class Budget:
    """Optimizer steps and data sizes of one run (a preset fixes them)."""

    elbo_steps: int
    round_steps: int  # per SDTT round
    sdtt_start: int  # N_0: the teacher's step count in round 0
    redi_pairs: int
    redi_teacher_steps: int
    redi_steps: int
    coupling_steps: int
    batch: int = 128
    lr: float = 3e-3
    finetune_lr: float = 1e-3
    # imdm-exact-kV: its own steps, rows, lr and share of fully masked rows (one scored position per row)
    exact_steps: int = 400
    exact_batch: int = 256
    exact_lr: float = 3e-3
    exact_full_mask: float = 0.9

    @property
    def redi_epochs(self) -> float:
        """Passes of the ReDi fine-tuning over its stored pairs."""
        return self.redi_steps * self.batch / self.redi_pairs


# The demo's budget. ReDi in the paper's regime: 512 steps x 128 rows over 256 pairs = 256 epochs (the
# paper's IM-ReDi: 50 000 steps x 512 over 100 000 pairs, ~256 epochs), at the lr that works at this size.
DEMO_BUDGET = Budget(elbo_steps=1000, round_steps=150, sdtt_start=16, redi_pairs=256, redi_teacher_steps=16,
                     redi_steps=512, coupling_steps=1500)


@dataclass
class Run:
    view: object  # a task view (toy_tasks.task_views)
    size: str
    budget: Budget
    seed: int
    models: dict = field(default_factory=dict)
    couplings: dict = field(default_factory=dict)  # teacher name -> the ReDi pairs drawn from it

    def get(self, method: str) -> ToyDenoiser:
        if method not in self.models:
            if method not in METHODS:
                raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
            self.models[method] = METHODS[method](self)
        return self.models[method]

    def fresh(self, labels: str, K: int | None = None) -> ToyDenoiser:
        return make_model(self.size, self.view.V, self.view.L, labels, K, seed=self.seed)

    def data(self, gen: torch.Generator) -> torch.Tensor:
        return self.view.sample(self.budget.batch, gen)

    def fit(self, model, loss_fn, steps: int, lr: float, salt: int) -> None:
        cfg = TrainConfig(steps=steps, lr=lr, batch=self.budget.batch)
        train(model, loss_fn, cfg, seed=self.seed * 1000 + salt)


def _elbo_trained(labels: str, salt: int):
    def method(run: Run) -> ToyDenoiser:
        model = run.fresh(labels)

        def loss(step, gen):
            x0 = run.data(gen)
            t = sample_times(x0.shape[0], model.process.t_min, antithetic=True, generator=gen)
            return elbo(model, x0, t, generator=gen).mean
        run.fit(model, loss, run.budget.elbo_steps, run.budget.lr, salt)
        return model
    return method


def _sdtt(base: str, salt: int):
    def method(run: Run) -> ToyDenoiser:
        student = copy.deepcopy(run.get(base))
        for r, dt in enumerate(round_plan(run.budget.sdtt_start, 1, 2)):
            teacher = frozen_copy(student)  # teacher <- student at every round

            def loss(step, gen, teacher=teacher, dt=dt):
                return sdtt_loss(student, teacher, run.data(gen), dt, k=2, generator=gen)
            run.fit(student, loss, run.budget.round_steps, run.budget.finetune_lr, salt + r)
        return student
    return method


def _redi(base: str, salt: int):
    def method(run: Run) -> ToyDenoiser:
        teacher = run.get(base)
        gen = torch.Generator().manual_seed(run.seed * 1000 + salt)
        pairs = perturbed_coupling(teacher, run.view.sample(run.budget.redi_pairs, gen),
                                   steps=run.budget.redi_teacher_steps, generator=gen)
        run.couplings[base] = pairs
        student = copy.deepcopy(teacher)

        def loss(step, gen):
            rows = torch.randint(0, run.budget.redi_pairs, (run.budget.batch,), generator=gen)
            return coupling_loss(student, type(pairs)(*(v[rows] for v in pairs)))
        run.fit(student, loss, run.budget.redi_steps, run.budget.finetune_lr, salt + 1)
        return student
    return method


def _coupled(student_init: Callable[[Run], ToyDenoiser], reader: str, salt: int):
    def method(run: Run) -> ToyDenoiser:
        teacher = frozen_copy(run.get("mdm"))
        student = student_init(run)

        def loss(step, gen):
            return eps_coupling_loss(student, teacher, run.data(gen), reader=reader, generator=gen)
        run.fit(student, loss, run.budget.coupling_steps, run.budget.lr, salt)
        return student
    return method


# imdm-exact-kV's start: the label state k (and token k) embedded as TIE times the read-out's row k, so the
# one-step map is the same routing for every token (position 0's label to all positions) rather than
# 50 000 separately learned rows (untied, V = 5 000 did not learn in 200 steps: docs/toy-demo.md, paper-synthetic)
TIE = 4.0
# and the read-out's rows at READOUT_SCALE x their default size, so that at V = 50 000 the tied start's
# logit of token k already stands above the 50 000 others at position 0
READOUT_SCALE = 2.0


def _exact_coupled(salt: int):
    def method(run: Run) -> ToyDenoiser:
        if run.view.name != "align":
            raise ValueError(f"method: imdm-exact-kV has an exact teacher for align only, got {run.view.name!r}")
        b, V, L = run.budget, run.view.V, run.view.L
        teacher = AlignOracle(V, L, schedule=SCHEDULE)
        student = run.fresh("finite", V)
        with torch.no_grad():  # a tied start: label state k and token k embed as TIE x read-out row k
            student.out.weight.mul_(READOUT_SCALE)
            student.vocab_embed.mask_table.copy_(TIE * student.out.weight)
            student.vocab_embed.embedding[:V].copy_(TIE * student.out.weight)

        def loss(step, gen):
            return eps_coupling_loss(student, teacher, run.view.sample(b.exact_batch, gen), reader="joint",
                                     full_mask_fraction=b.exact_full_mask, generator=gen, positions=1,
                                     efficient=True, completion=teacher.eps_coupled_completion)
        run.fit(student, loss, b.exact_steps, b.exact_lr, salt)
        return student
    return method


def _from_imdm_elbo(run: Run) -> ToyDenoiser:
    return copy.deepcopy(run.get("imdm-elbo"))


def _finite_from_mdm(K: int):
    def init(run: Run) -> ToyDenoiser:
        model = run.fresh("finite", K)
        missing, unexpected = model.load_state_dict(run.get("mdm").state_dict(), strict=False)
        if unexpected or set(missing) != {"vocab_embed.mask_table"}:
            raise ValueError(f"k{K}: MDM weights do not fit the finite-K model ({missing}, {unexpected})")
        return model  # the zero K x d table: exactly the MDM at the start
    return init


# name -> train(run) -> the trained model
METHODS: dict[str, Callable[[Run], ToyDenoiser]] = {
    "mdm": _elbo_trained("none", 1),
    "imdm-elbo": _elbo_trained("rand", 2),
    "sdtt": _sdtt("mdm", 10),
    "imdm-sdtt": _sdtt("imdm-elbo", 20),
    "redi": _redi("mdm", 30),
    "imdm-redi": _redi("imdm-elbo", 40),
    "imdm-sdtt-redi": _redi("imdm-sdtt", 45),
    "imdm-eps-coupling": _coupled(_from_imdm_elbo, "kr", 50),
    "imdm-eps-reveal": _coupled(_from_imdm_elbo, "reveal-times", 60),
    "imdm-eps-bits": _coupled(_from_imdm_elbo, "bits", 65),
    "imdm-k2": _coupled(_finite_from_mdm(2), "joint", 70),
    "imdm-k4": _coupled(_finite_from_mdm(4), "joint", 80),
    "imdm-k16": _coupled(_finite_from_mdm(16), "joint", 90),
    "imdm-exact-kV": _exact_coupled(100),
}

