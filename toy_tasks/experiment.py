"""The experiments of `python -m toy_tasks experiment` (toy_tasks/commands/experiment.py): train every
method on the preset's tasks, measure its sample law against the exact one at several step counts
(run_preset), and the table and the sentence that report it.

    python -m toy_tasks experiment --preset demo --json results/demo.json --plot results/demo.png
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from queue import Empty

import torch
from tqdm import tqdm

from imdm_lab.exact import align_success
from toy_tasks import redi_epochs, seeds
from toy_tasks.evaluate import evaluate, left_to_right_kl
from toy_tasks.methods import DEMO_BUDGET, METHODS, Budget, Run
from toy_tasks.studies import STUDIES
from toy_tasks.task_views import JointView, task_view

ALL_METHODS = tuple(METHODS)
CORE_METHODS = ("mdm", "imdm-elbo", "sdtt", "imdm-sdtt", "redi", "imdm-redi", "imdm-sdtt-redi",
                "imdm-eps-coupling")
# The eps-driven couplings side by side: how continuous labels are read (`kr`, `reveal-times`, `bits`) and
# how many states a finite mask has (`joint`, K = 2, 4, 16).
READER_METHODS = ("imdm-eps-coupling", "imdm-eps-reveal", "imdm-eps-bits", "imdm-k2", "imdm-k4", "imdm-k16")


@dataclass(frozen=True)
class TaskPlan:
    name: str
    params: dict
    methods: tuple[str, ...]
    # With workers > 1: groups of `methods` split off into processes of their own, each training for
    # itself the teachers its methods start from (every seed derives from the method's name, so these
    # are the same models); the other methods stay together. Empty: the whole task in one process.
    split: tuple[tuple[str, ...], ...] = ()

    def groups(self, names: list[str]) -> list[list[str]]:
        """`names` (in the plan's order): the methods of no split group, then each group; empty ones dropped."""
        apart = [[m for m in names if m in group] for group in self.split]
        rest = [m for m in names if not any(m in group for group in self.split)]
        return [g for g in [rest, *apart] if g]


@dataclass(frozen=True)
class Preset:
    tasks: tuple[TaskPlan, ...]
    size: str
    budget: Budget
    steps: tuple[int, ...] = (1, 2, 4, 8, 16)
    mdm_extra_steps: tuple[int, ...] = (64,)
    min_samples: int = 4096
    # evaluation draws per point; None: max(min_samples, 20 |support|). Fewer than 20 |support| draws
    # report KL only where it is exact (toy_tasks.evaluate, estimator `none`).
    samples: int | None = None


PRESETS = {
    # The core comparison and the finite 16-state mask on align, the core comparison on a seeded dirichlet
    # joint: one task per process on 2 workers, about equal shares of CPU (~220 s each, docs/toy-demo.md).
    # The other eps-driven couplings are the `readers` preset; every seed derives from the method's name,
    # so a method's numbers are the same in either preset.
    "demo": Preset(
        tasks=(TaskPlan("align", {"V": 16, "L": 4}, (*CORE_METHODS, "imdm-k16")),
               TaskPlan("dirichlet", {"V": 4, "L": 4, "seed": 0, "alpha": 0.3}, CORE_METHODS)),
        size="demo",
        budget=DEMO_BUDGET,
        min_samples=2048),
    # Every eps-driven coupling at the demo's budget on align: the continuous readers in one process, the
    # finite masks (with their own `mdm` teacher) in the other.
    "readers": Preset(
        tasks=(TaskPlan("align", {"V": 16, "L": 4}, READER_METHODS,
                        split=(("imdm-k2", "imdm-k4", "imdm-k16"),)),),
        size="demo",
        budget=DEMO_BUDGET,
        min_samples=2048),
    # The continuous-label eps-coupled student of the demo trained 12x longer (18 000 coupling steps):
    # its one-step ancestral success is a training-budget question (docs/toy-demo.md).
    "long-coupling": Preset(
        tasks=(TaskPlan("align", {"V": 16, "L": 4}, ("imdm-eps-coupling",)),),
        size="demo",
        budget=dataclasses.replace(DEMO_BUDGET, coupling_steps=18_000),
        min_samples=2048),
    # The paper's task and model (Ugness/IMDM dataloader.py, SyntheticAlign; configs/model/synthetic.yaml):
    # align V = 50 000, L = 10, the `synthetic` model (d = 128, 4 blocks). Its 50 000-way read-out costs
    # ~0.56 s per training step of 32 rows on one CPU thread, so this is a CPU run's budget, far below the
    # paper's: the learned MDM, IM-ReDi in the paper's
    # regime (256 epochs over 64 pairs), the finite-mask eps-driven coupling of the learned MDM, and
    # `imdm-exact-kV`, the eps-driven coupling of the exact align teacher with a V-state mask (one scored
    # position per row on the read-out's target rows: ~0.83 s per step of 256 rows on one thread, so its
    # 2 000 steps are ~28 min). Three groups on 2 processes (docs/toy-demo.md); 512 draws per point.
    "paper-synthetic": Preset(
        tasks=(TaskPlan("align", {"V": 50000, "L": 10},
                        ("mdm", "imdm-elbo", "imdm-redi", "imdm-k16", "imdm-exact-kV"),
                        split=(("imdm-exact-kV",), ("imdm-elbo", "imdm-redi"))),),
        size="synthetic",
        budget=Budget(elbo_steps=600, round_steps=1, sdtt_start=64, redi_pairs=64, redi_teacher_steps=64,
                      redi_steps=512, coupling_steps=100, batch=32, lr=3e-3, finetune_lr=1e-3,
                      exact_steps=2000, exact_batch=256, exact_lr=3e-3, exact_full_mask=0.9),
        mdm_extra_steps=(),
        samples=512),
}


def _run_task(preset_name: str, plan: TaskPlan, names: list[str], seed: int, done) -> dict:
    """Train and evaluate `names` on one task; done(name) is called after each model."""
    preset = PRESETS[preset_name]
    torch.set_num_threads(1)  # one thread per process: see toy_tasks/commands/experiment.py
    cpu, wall = time.process_time(), time.perf_counter()
    view = task_view(plan.name, **plan.params)
    run = Run(view, preset.size, preset.budget, seed)
    n = preset.samples or max(preset.min_samples, 20 * len(view.support))
    all_steps = sorted(set(preset.steps) | set(preset.mdm_extra_steps))
    entry = {"task": plan.name, "V": view.V, "L": view.L, "params": plan.params, "samples": n,
             "total_correlation": view.total_correlation,
             "mdm_exact_kl": {str(k): view.mdm_kl(k) for k in all_steps},
             "stepwise_bound": {str(k): view.bound(k) for k in all_steps},
             "eps_output_norm": {}, "train_seconds": {}, "results": []}
    if plan.name == "align":
        entry["mdm_exact_success"] = {str(k): align_success(view.V, view.L, k) for k in all_steps}
    for name in names:
        start = time.perf_counter()
        model = run.get(name)
        entry["train_seconds"][name] = round(time.perf_counter() - start, 1)
        entry["eps_output_norm"][name] = model.eps_output_norm(generator=torch.Generator().manual_seed(seed))
        steps = preset.steps + (preset.mdm_extra_steps if name == "mdm" else ())
        variants = [(k, "ancestral") for k in steps] + [(1, "greedy")]
        for j, (k, last) in enumerate(variants):
            # evaluation draws depend on (seed, method, variant), not on which other methods run
            row = evaluate(model, view, k, n, seed=seed * 100_003 + zlib.crc32(name.encode()) + j, last_step=last)
            kl = row["kl"] if row["kl"] is not None and math.isfinite(row["kl"]) else None
            entry["results"].append({"method": name if last == "ancestral" else f"{name}+greedy",
                                     "steps": k, "kl": kl, "kl_ci": row["kl_ci"],
                                     "success": row["success"], "entropy": row["entropy"],
                                     "coverage": row["coverage"], "distinct": row["distinct"], "nfe": row["nfe"],
                                     "kl_estimator": row["kl_estimator"]})
        done(f"{plan.name}: {name}")
    if any(name.startswith(("imdm-eps", "imdm-k")) for name in names) and isinstance(view, JointView):
        # what the coupled students can reach at best: the law of their teacher's completion
        entry["coupling_teacher_kl"] = left_to_right_kl(run.get("mdm"), view)
    # what this process spent on its methods (teachers included): the demo's time budget is per process
    entry["parts"] = [{"methods": names, "cpu_seconds": round(time.process_time() - cpu, 1),
                       "seconds": round(time.perf_counter() - wall, 1)}]
    return entry


def _merge(plan: TaskPlan, parts: list[dict]) -> dict:
    """One task's entry from the entries of its parts, methods in the plan's order."""
    entry = dict(parts[0])
    for key in ("eps_output_norm", "train_seconds"):
        merged = {k: v for part in parts for k, v in part[key].items()}
        entry[key] = {m: merged[m] for m in plan.methods if m in merged}
    rank = {m: i for i, m in enumerate(plan.methods)}
    rows = [r for part in parts for r in part["results"]]
    entry["results"] = sorted(rows, key=lambda r: rank[r["method"].removesuffix("+greedy")])  # stable
    entry["parts"] = [p for part in parts for p in part["parts"]]
    for part in parts:
        if "coupling_teacher_kl" in part:
            entry["coupling_teacher_kl"] = part["coupling_teacher_kl"]
    return entry


def run_preset(preset_name: str, seed: int = 0, methods: list[str] | None = None,
               tasks: list[str] | None = None, progress: bool = True, workers: int = 1) -> dict:
    """Train and evaluate; returns the result object of the JSON contract. With workers > 1 the tasks
    run in parallel processes (one thread each); the result does not depend on it."""
    if preset_name in STUDIES:
        if tasks is not None and tasks != [redi_epochs.TASK[0]]:
            raise ValueError(f"task: preset {preset_name!r} has the task {redi_epochs.TASK[0]}, got {tasks}")
        return STUDIES[preset_name].run(seed, methods, progress, workers)
    if preset_name not in PRESETS:
        raise ValueError(f"preset: expected one of {', '.join([*PRESETS, *STUDIES])}, got {preset_name!r}")
    preset = PRESETS[preset_name]
    plans = [p for p in preset.tasks if tasks is None or p.name in tasks]
    if not plans:
        raise ValueError(f"task: preset {preset_name!r} has tasks {', '.join(p.name for p in preset.tasks)}")
    work = [(p, [m for m in p.methods if methods is None or m in methods]) for p in plans]
    bar = tqdm(total=sum(len(ms) for _, ms in work), desc="train+evaluate", unit="model", disable=not progress)

    def done(label):
        bar.set_postfix_str(label)
        bar.update(1)
    # every task's main group first, then the split-off groups, each unit on the next free process
    grouped = [(plan, plan.groups(names)) for plan, names in work]
    units = [(plan, groups[i]) for i in range(max(len(g) for _, g in grouped)) for plan, groups in grouped
             if i < len(groups)]
    if workers <= 1 or len(units) == 1:
        entries = [_run_task(preset_name, plan, names, seed, done) for plan, names in work]
    else:
        ctx = multiprocessing.get_context("fork")
        with ctx.Manager() as manager, ProcessPoolExecutor(min(workers, len(units)), mp_context=ctx) as pool:
            queue = manager.Queue()
            futures = [pool.submit(_run_task, preset_name, plan, names, seed, queue.put) for plan, names in units]
            while not all(f.done() for f in futures) or not queue.empty():
                try:
                    done(queue.get(timeout=0.5))
                except Empty:
                    pass
            entries = [_merge(plan, [f.result() for (p, _), f in zip(units, futures, strict=True) if p is plan])
                       for plan, _ in work]
    bar.close()
    return {"preset": preset_name, "seed": seed, "tasks": entries}


def _fmt(x, width=7, digits=3):
    return f"{'-':>{width}}" if x is None else f"{x:>{width}.{digits}f}"


def format_table(result: dict) -> str:
    if result["preset"] in STUDIES:
        return STUDIES[result["preset"]].table(result)
    if "seeds" in result:
        return seeds.format_table(result)
    lines = []
    for task in result["tasks"]:
        steps = sorted({r["steps"] for r in task["results"]} & {1, 2, 4, 8, 16})
        lines.append(f"\n{task['task']} V={task['V']} L={task['L']}  TC = {task['total_correlation']:.3f} nats"
                     f"   (KL(p || model) in nats; success / coverage / entropy at one step)")
        head = f"{'method':<24}" + "".join(f"{'KL@' + str(k):>8}" for k in steps)
        lines.append(head + f"{'succ@1':>8}{'cov@1':>8}{'H@1':>8}{'nfe@1':>6}")
        lines.append(f"{'exact MDM':<24}" + "".join(" " + _fmt(task["mdm_exact_kl"][str(k)]) for k in steps))
        if task["stepwise_bound"].get("1") is not None:
            lines.append(f"{'stepwise bound':<24}" + "".join(" " + _fmt(task["stepwise_bound"][str(k)]) for k in steps))
        for method in dict.fromkeys(r["method"] for r in task["results"]):
            rows = {r["steps"]: r for r in task["results"] if r["method"] == method}
            one = rows.get(1)
            line = f"{method:<24}" + "".join(" " + _fmt(rows[k]["kl"]) if k in rows else f"{'':>8}" for k in steps)
            if one:
                line += " " + _fmt(one["success"]) + " " + _fmt(one["coverage"]) + " " + _fmt(one["entropy"])
                line += f"{one['nfe']:>6.3g}"
            lines.append(line)
        if "coupling_teacher_kl" in task:
            lines.append(f"coupling teacher (mdm, one token at a time, left to right): exact KL "
                         f"{task['coupling_teacher_kl']:.3f}")
        norms = ", ".join(f"{m} {v:.3f}" for m, v in task["eps_output_norm"].items() if v > 0)
        lines.append(f"eps-path output RMS (how much the mask embedding varies with eps): {norms or 'none'}")
    return "\n".join(lines)


# How summary_sentence groups the one-step results.
SINGLE_MASK = ("mdm", "sdtt", "redi")  # MDMs: one deterministic mask state, KL >= TC in one step
LABEL_BLIND = ("imdm-elbo", "imdm-sdtt")  # IMDMs whose training targets do not depend on eps
PAIR_TRAINED = ("imdm-redi", "imdm-sdtt-redi")  # IMDMs fine-tuned over a finite set of seeded pairs
# eps-driven couplings with continuous labels
CONTINUOUS_COUPLED = ("imdm-eps-coupling", "imdm-eps-reveal", "imdm-eps-bits")


def _span(one: dict, names, tc: float) -> str:
    values = [one[m]["kl"] for m in names if m in one]
    return f"{min(values):.2f}-{max(values):.2f} nats ({min(values) / tc:.2f}-{max(values) / tc:.2f} TC)"


def summary_sentence(result: dict) -> str:
    """One sentence on what the figure shows, built from the measured numbers."""
    if result["preset"] in STUDIES:
        return STUDIES[result["preset"]].summary(result)
    parts = []
    for task in result["tasks"]:
        tc = task["total_correlation"]
        one = {r["method"]: r for r in task["results"] if r["steps"] == 1 and r["kl"] is not None}
        groups = [("MDMs " + "/".join(m for m in SINGLE_MASK if m in one), SINGLE_MASK),
                  ("label-blind IMDMs " + "/".join(m for m in LABEL_BLIND if m in one), LABEL_BLIND)]
        pieces = [f"{label} {_span(one, names, tc)}" for label, names in groups if any(m in one for m in names)]
        pieces += [f"{m} {one[m]['kl']:.2f} ({one[m]['kl'] / tc:.2f} TC, coverage {one[m]['coverage']:.2f})"
                   for m in PAIR_TRAINED if m in one]
        coupled = [m for m in one if m.startswith(("imdm-eps", "imdm-k")) and "+greedy" not in m]
        if coupled:
            best = min(coupled, key=lambda m: one[m]["kl"])
            pieces.append(f"eps-coupled best {best} {one[best]['kl']:.3f}" + (
                f" (success {one[best]['success']:.2f})" if one[best]["success"] is not None else ""))
        text = f"on {task['task']} (TC {tc:.2f} nats), one step" + (": " + ", ".join(pieces) if pieces else "")
        continuous = [m for m in CONTINUOUS_COUPLED if m in one]
        if continuous and task["task"] == "align":
            best = max(continuous, key=lambda m: one[m]["success"])
            greedy = one.get(best + "+greedy")
            text += (f"; continuous labels: {best} success {one[best]['success']:.2f} with the ancestral last "
                     f"step (KL {one[best]['kl']:.3f})")
            if greedy:
                text += f", {greedy['success']:.2f} with the greedy one (KL {greedy['kl']:.3f})"
        unresolved = {r["method"]: r for r in task["results"] if r["steps"] == 1 and r["kl"] is None
                      and r["kl_estimator"] == "none"}
        if unresolved:  # too large a support for a KL: success and distinct sequences instead
            text += f"; no KL from {task['samples']} draws, success (distinct sequences): " + ", ".join(
                f"{m} {r['success']:.3f} ({r['distinct']})" for m, r in unresolved.items())
        parts.append(text)
    return ("The figure plots KL(p || model law) against sampling steps with the exact MDM curve and the stepwise "
            "bound (a path KL; final-sample KLs lie below it): " + "; ".join(parts) + ".")
