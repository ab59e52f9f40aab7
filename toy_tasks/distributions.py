"""Named enumerable toy tasks: each builds its joint p, a float64 array of shape (V,)*L.

    task = make_task("align", V=8, L=4)      # task.probs, task.params (defaults filled in)

Every parameter is validated and the size is checked against the exact engine's memory budget before
anything of size V^L is allocated.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imdm_lab.checks import check_int, check_seed
from imdm_lab.exact import check_joint, check_size


@dataclass(frozen=True)
class ToyTask:
    name: str
    params: dict
    probs: np.ndarray = field(repr=False)

    @property
    def V(self) -> int:
        return self.probs.shape[0]

    @property
    def L(self) -> int:
        return self.probs.ndim


def _align(V: int, L: int) -> np.ndarray:
    """The paper's synthetic task: all L tokens equal, the common token uniform over V."""
    p = np.zeros((V,) * L)
    p[(np.arange(V),) * L] = 1.0 / V
    return p


def _parity(V: int, L: int) -> np.ndarray:
    """x_1..x_{L-1} uniform, x_L = (x_1 + ... + x_{L-1}) mod V."""
    if L < 2:
        raise ValueError(f"L: expected an integer >= 2 for parity, got {L}")
    grids = np.indices((V,) * L)
    return np.where(grids[-1] == grids[:-1].sum(axis=0) % V, float(V) ** (1 - L), 0.0)


def _permutation(V: int, L: int) -> np.ndarray:
    """All L tokens distinct, uniform over the V!/(V-L)! ordered selections."""
    if V < L:
        raise ValueError(f"V: expected V >= L = {L} for permutation, got {V}")
    p = np.zeros((V,) * L)
    rows = np.array(list(itertools.permutations(range(V), L)))
    p[tuple(rows.T)] = 1.0 / len(rows)
    return p


def _markov(V: int, L: int, seed: int, alpha: float) -> np.ndarray:
    """A Markov chain x_1 -> ... -> x_L: initial law and transition rows ~ Dirichlet(alpha), seeded."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(V, alpha))
    transition = rng.dirichlet(np.full(V, alpha), size=V)
    for _ in range(L - 1):
        p = p[..., None] * transition
    return p


def _dirichlet(V: int, L: int, seed: int, alpha: float) -> np.ndarray:
    """A random joint over all V^L sequences ~ Dirichlet(alpha), seeded (small alpha: few heavy states)."""
    return np.random.default_rng(seed).dirichlet(np.full(V**L, alpha)).reshape((V,) * L)


def _mixture(V: int, L: int, seed: int, modes: int, uniform: float) -> np.ndarray:
    """`modes` distinct random sequences with mass (1 - uniform)/modes each, plus the mass `uniform` spread
    uniformly over all V^L sequences."""
    if modes > V**L:
        raise ValueError(f"modes: expected at most V**L = {V**L} distinct modes, got {modes}")
    flat = np.full(V**L, uniform / V**L)
    flat[np.random.default_rng(seed).choice(V**L, size=modes, replace=False)] += (1.0 - uniform) / modes
    return flat.reshape((V,) * L)


# .npy format version -> its public header reader
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _file(path: str) -> np.ndarray:
    """A joint saved with numpy.save (no pickles). The header's shape is checked first, against the
    exact engine's memory budget: a header can claim any shape, and the data is read only if it fits."""
    try:
        with open(Path(path), "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in NPY_HEADERS:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = NPY_HEADERS[version](f)
            if len(shape) < 1 or any(n != shape[0] for n in shape) or shape[0] < 2:
                raise ValueError(f"expected shape (V,)*L with V >= 2, L >= 1, got shape {shape}")
            if dtype.kind not in "fiu":
                raise ValueError(f"expected a real-valued array, got dtype {dtype}")
            check_size(shape[0], len(shape), name="path")
            f.seek(0)
            p = np.load(f, allow_pickle=False)
        check_joint(p, name="path")  # its values too (finite, >= 0, summing to 1), named as the file
    except (OSError, ValueError) as e:
        reason = str(e).removeprefix("path: ")
        raise ValueError(f"path: expected a readable .npy file holding a joint, got {path!r} ({reason})") from None
    return p


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < math.inf:
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def _probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def _path(name: str, value) -> str:
    if not isinstance(value, (str, Path)):
        raise ValueError(f"{name}: expected a file path, got {value!r}")
    return str(value)


# Parameter name -> validator; every task takes a subset of these.
VALIDATORS: dict[str, Callable] = {
    "V": lambda v: check_int("V", v, 2),
    "L": lambda v: check_int("L", v, 1),
    "seed": lambda v: check_seed("seed", v),
    "alpha": lambda v: _positive_float("alpha", v),
    "modes": lambda v: check_int("modes", v, 1),
    "uniform": lambda v: _probability("uniform", v),
    "path": lambda v: _path("path", v),
}


# The parameters a command line may set (--V, --L, ...) and their types; a task refuses the ones it does not
# take. `path` is left out: the commands give it as --probs.
TASK_OPTIONS: dict[str, type] = {"V": int, "L": int, "seed": int, "alpha": float, "modes": int, "uniform": float}


@dataclass(frozen=True)
class TaskSpec:
    build: Callable[..., np.ndarray]
    defaults: dict  # every parameter of `build`; None = required
    doc: str


TASKS: dict[str, TaskSpec] = {
    "align": TaskSpec(_align, {"V": 8, "L": 4}, "all tokens equal, uniform over V (the paper's task)"),
    "parity": TaskSpec(_parity, {"V": 4, "L": 4}, "last token = sum of the others mod V"),
    "permutation": TaskSpec(_permutation, {"V": 5, "L": 4}, "all tokens distinct, uniform (V >= L)"),
    "markov": TaskSpec(_markov, {"V": 4, "L": 5, "seed": 0, "alpha": 0.5}, "seeded random Markov chain"),
    "dirichlet": TaskSpec(_dirichlet, {"V": 4, "L": 4, "seed": 0, "alpha": 1.0}, "seeded Dirichlet(alpha) joint"),
    "mixture": TaskSpec(_mixture, {"V": 8, "L": 4, "seed": 0, "modes": 3, "uniform": 0.1},
                        "a few seeded modes plus a uniform floor"),
    "file": TaskSpec(_file, {"path": None}, "a joint saved with numpy.save"),
}


# the tasks built from their parameters alone (every one but `file`, which reads its joint from disk)
PARAMETRIC_TASKS = tuple(name for name, spec in TASKS.items() if "path" not in spec.defaults)


def make_task(name: str, budget_bytes: int | None = None, **params) -> ToyTask:
    """Build a named task; unspecified parameters take the task's defaults."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {sorted(TASKS)}, got {name!r}")
    spec = TASKS[name]
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of task {name!r} (its parameters: {sorted(spec.defaults)})")
    full = {**spec.defaults, **params}
    missing = sorted(k for k, v in full.items() if v is None)
    if missing:
        raise ValueError(f"{missing[0]}: required by task {name!r}")
    full = {k: VALIDATORS[k](v) for k, v in full.items()}
    if "V" in full:
        check_size(full["V"], full["L"], budget_bytes)
    probs = spec.build(**full)
    check_joint(probs, budget_bytes=budget_bytes)
    return ToyTask(name, full, np.asarray(probs, dtype=np.float64))
