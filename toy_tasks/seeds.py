"""One experiment over several training seeds: each number as its mean and range over the seeds.

Float32 training is bit-identical only on the same machine (same CPU, same torch build): another CPU
with other vector instructions rounds differently, and a few hundred optimizer steps turn rounding into
a different model. A single seed's one-step KL can then move by tens of percent, so the demo's headline
numbers are quoted as the mean and the range (min-max) over training seeds, and a run is placed inside
or outside that range (`compare`).

`aggregate` turns the per-seed results of `toy_tasks.experiment.run_preset` (same preset, same methods)
into one result of the same shape: every row's `kl`, `success`, `coverage` and `entropy` are the means
over the seeds that have a value, `kl_range`, `success_range` and `coverage_range` are [min, max] over
them, and `seeds` keeps each seed's values, [{seed, kl, kl_ci, success, coverage}, ...]. The exact
quantities of a task (TC, exact MDM, bound) do not depend on the seed and are kept once.
"""
from __future__ import annotations

import math
import time

SEED_KEYS = ("kl", "kl_ci", "success", "coverage")  # kept per seed in each row's `seeds` list
MEAN_KEYS = ("kl", "success", "coverage", "entropy")  # averaged over the seeds
RANGE_KEYS = ("kl", "success", "coverage")  # [min, max] over the seeds
# per-seed task quantities, kept as {seed: value} in the task's `by_seed`
TASK_SEED_KEYS = ("eps_output_norm", "train_seconds", "coupling_teacher_kl", "parts")


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-2' -> [0, 1, 2]; at least one seed, no repeats, each >= 0."""
    try:
        if "-" in text.strip("-") and "," not in text:
            lo, hi = (int(v) for v in text.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            seeds = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds: expected distinct integers >= 0 as 0,1,2 or 0-2, got {text!r}")
    return seeds


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def _range(values: list) -> list[float] | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return [min(values), max(values)] if values else None


def _row(rows: list[dict], seeds: list[int]) -> dict:
    """One row (method, steps) from the same row of every seed."""
    out = dict(rows[0])
    for key in MEAN_KEYS:
        out[key] = _mean([r[key] for r in rows])
    for key in RANGE_KEYS:
        out[f"{key}_range"] = _range([r[key] for r in rows])
    out["kl_ci"] = None  # a bootstrap interval of one seed's draws; each seed's is in `seeds`
    out["distinct"] = _mean([r["distinct"] for r in rows])
    out["seeds"] = [{"seed": s, **{k: r[k] for k in SEED_KEYS}} for s, r in zip(seeds, rows, strict=True)]
    return out


def aggregate(results: list[dict]) -> dict:
    """The result object of several seeds of one preset (module docstring); the rows must match."""
    seeds = [r["seed"] for r in results]
    if len(set(seeds)) != len(seeds) or len({r["preset"] for r in results}) != 1:
        got = [(r["preset"], s) for r, s in zip(results, seeds, strict=True)]
        raise ValueError(f"results: expected one preset at distinct seeds, got {got}")
    tasks = []
    for entries in zip(*(r["tasks"] for r in results), strict=True):
        keys = [[(row["method"], row["steps"]) for row in e["results"]] for e in entries]
        if any(k != keys[0] for k in keys):
            raise ValueError(f"results: task {entries[0]['task']} has different rows at different seeds")
        task = {k: v for k, v in entries[0].items() if k not in TASK_SEED_KEYS}
        task["results"] = [_row(list(rows), seeds) for rows in zip(*(e["results"] for e in entries), strict=True)]
        task["by_seed"] = {key: {str(s): e[key] for s, e in zip(seeds, entries, strict=True) if key in e}
                           for key in TASK_SEED_KEYS}
        tasks.append(task)
    return {"preset": results[0]["preset"], "seeds": seeds, "tasks": tasks,
            "seconds_by_seed": {str(s): r.get("seconds") for s, r in zip(seeds, results, strict=True)}}


def run_seeds(run_one, seed_list: list[int]) -> dict:
    """run_one(seed) -> the result of one seed, for each seed in turn (timed), aggregated."""
    results = []
    for seed in seed_list:
        start = time.perf_counter()
        results.append(run_one(seed))
        results[-1]["seconds"] = round(time.perf_counter() - start, 1)
    return aggregate(results)


def seed_span(seeds: list[int]) -> str:
    """[0, 1, 2] -> 'seeds 0-2'; [0, 3, 7] -> 'seeds 0, 3, 7'."""
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _partial(row: dict) -> str:
    """'*' where the mean leaves out seeds without a KL."""
    return "*" if row["kl"] is not None and any(s["kl"] is None for s in row["seeds"]) else ""


def format_table(result: dict) -> str:
    """Per task: KL against steps (mean over the seeds), then the one-step KL, success and coverage as
    mean [min, max]."""
    span = seed_span(result["seeds"])
    lines = []
    for task in result["tasks"]:
        steps = sorted({r["steps"] for r in task["results"]} & {1, 2, 4, 8, 16})
        lines.append(f"\n{task['task']} V={task['V']} L={task['L']}  TC = {task['total_correlation']:.3f} nats"
                     f"   (mean over {span}; one step: mean [min, max])")
        lines.append(f"{'method':<24}" + "".join(f"{'KL@' + str(k):>8}" for k in steps)
                     + f"   {'KL@1 [min, max]':<22}{'succ@1 [min, max]':<22}{'cov@1':>6}")
        lines.append(f"{'exact MDM':<24}" + "".join(f"{task['mdm_exact_kl'][str(k)]:>8.3f}" for k in steps))
        partial = False
        for method in dict.fromkeys(r["method"] for r in task["results"]):
            rows = {r["steps"]: r for r in task["results"] if r["method"] == method}
            line = f"{method:<24}" + "".join(f"{_fmt(rows[k]['kl']) + _partial(rows[k]):>8}" if k in rows
                                             else f"{'':>8}" for k in steps)
            one = rows.get(1)
            if one:
                kl = f"{_fmt(one['kl'])} [{', '.join(map(_fmt, one['kl_range']))}]" if one["kl_range"] else "-"
                have = sum(s["kl"] is not None for s in one["seeds"])
                if one["kl_range"] and have < len(one["seeds"]):  # the others drew no sample of some sequence
                    kl = f"{_fmt(one['kl'])} ({have} of {len(one['seeds'])})"
                succ = (f"{_fmt(one['success'])} [{', '.join(map(_fmt, one['success_range']))}]"
                        if one["success_range"] else "-")
                line += f"   {kl:<22}{succ:<22}{_fmt(one['coverage']):>6}"
            lines.append(line)
            partial = partial or "*" in line
        if partial:
            lines.append("* mean over the seeds with a KL (the others never drew some support sequence)")
    return "\n".join(lines)


def compare(result: dict, committed: dict, methods: list[str] | None = None) -> list[str]:
    """Where each one-step KL of `result` (one seed or several) falls against the committed seed range,
    one line per task and method found in both, e.g.
    'align imdm-k16 one-step KL 0.072: inside the committed range 0.053-0.072 over seeds 0-2; bit-identical
    to the committed seed 0', and a last line counting them. A single-seed run whose seed was committed is
    also compared with that seed's own value: equal bit for bit on the machine that made the file, and in
    general not on another CPU."""
    if "seeds" not in committed:
        raise ValueError("compare: expected a results file of several seeds (written with --seeds)")
    span = seed_span(committed["seeds"])
    seed = result.get("seed") if "seeds" not in result else None
    lines, inside, same, total = [], 0, 0, 0
    for task in result["tasks"]:
        ref = next((t for t in committed["tasks"] if t["task"] == task["task"] and t["V"] == task["V"]
                    and t["L"] == task["L"] and t["params"] == task["params"]), None)
        if ref is None:
            continue
        refs = {r["method"]: r for r in ref["results"] if r["steps"] == 1}
        for row in task["results"]:
            name, committed_row = row["method"], refs.get(row["method"])
            if (row["steps"] != 1 or row["kl"] is None or committed_row is None or committed_row["kl_range"] is None
                    or (methods and name not in methods)):
                continue
            lo, hi = committed_row["kl_range"]
            where = "inside" if lo <= row["kl"] <= hi else "below" if row["kl"] < lo else "above"
            line = (f"{task['task']} {name} one-step KL {row['kl']:.3f}: {where} the committed range "
                    f"{lo:.3f}-{hi:.3f} over {span}")
            own = next((s["kl"] for s in committed_row["seeds"] if s["seed"] == seed), None)
            if own is not None:
                line += (f"; bit-identical to the committed seed {seed}" if own == row["kl"] else
                         f"; the committed seed {seed} gave {own:.3f}")
                same += own == row["kl"]
            lines.append(line)
            inside += where == "inside"
            total += 1
    summary = f"{inside} of {total} one-step KLs inside the committed ranges"
    if seed is not None and seed in committed["seeds"]:
        summary += (f", {same} of {total} bit-identical to the committed seed {seed} (all of them on the machine "
                    f"that wrote the file)")
    return [*lines, summary]


def read_committed(path: str) -> dict:
    """The results file of several seeds that `compare` places a run against; checked before any training."""
    import json

    try:
        with open(path) as f:
            committed = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"compare: expected a readable JSON file of an experiment with --seeds, got {path!r} "
                         f"({err})") from None
    if not isinstance(committed, dict) or "seeds" not in committed or "tasks" not in committed:
        raise ValueError(f"compare: {path} is not the JSON of an experiment with --seeds (no 'seeds' list)")
    return committed
