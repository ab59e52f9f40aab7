"""Memorisation checks of stored samples (`python -m scale memorisation`): how much of each sample is
training text, and how close it is to a stored teacher completion of a coupling.

For each (checkpoint label, steps) cell of a samples file (scale.evaluation.samples_file), n samples s of
length L:

- train-set reproduction: m(s), the longest run of consecutive tokens of s found verbatim inside one
  training block (scale.evaluation.reproduction); reported as the mean and max over the cell's samples and
  the fraction with m(s) >= threshold. The same for the first `reference` validation blocks, once: what
  real text that was never trained on scores.
- nearest stored completion (cells whose label has a coupling): with X_0 the coupling's stored teacher
  completions, rows x of length L,

      d(s) = min_{x in X_0} (1/L) sum_{l=1}^{L} [s_l != x_l]         (normalised Hamming distance)

  reported as the mean and min over samples, the fraction of exact copies (d = 0) and the fraction with
  d <= near.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from imdm_lab.checks import check_int
from scale.evaluation.reproduction import longest_runs
from scale.evaluation.samples_file import SampleCell

PAIRS = 1 << 24  # sample x row x position comparisons held at once by nearest_hamming


@dataclass(frozen=True)
class MemorisationSettings:
    """threshold: the run length (tokens) counted as a reproduction; near: the distance counted as a near
    copy; reference: validation blocks scored as the reference. Refused on construction when out of range."""
    threshold: int = 32
    near: float = 0.1
    reference: int = 256

    def __post_init__(self):
        check_int("--threshold", self.threshold, 1)
        check_int("--reference", self.reference, 1)
        if isinstance(self.near, bool) or not isinstance(self.near, (int, float)) or not 0.0 <= self.near <= 1.0:
            raise ValueError(f"--near: expected a number in [0, 1], got {self.near!r}")


def nearest_hamming(samples: torch.Tensor, rows: torch.Tensor, device="cpu") -> torch.Tensor:
    """Float64[S]: d(s) = min over rows x of (1/L) sum_l [s_l != x_l] (module docstring), for samples Long[S, L]
    and rows Long[M, L], compared in blocks of at most PAIRS comparisons on `device`."""
    if samples.shape[1] != rows.shape[1]:
        raise ValueError(f"rows: expected sequences of the samples' length {samples.shape[1]}, got {rows.shape[1]}")
    S, L = samples.shape
    rows = rows.to(device)
    mb = min(len(rows), max(1, PAIRS // L))  # rows per block
    sb = max(1, PAIRS // (L * mb))  # samples per block
    best = torch.full((S,), L, dtype=torch.int64)
    for lo in range(0, S, sb):
        part = samples[lo:lo + sb].to(device)
        for mlo in range(0, len(rows), mb):
            diff = (part[:, None, :] != rows[None, mlo:mlo + mb, :]).sum(-1)  # [s, m] differing positions
            best[lo:lo + sb] = torch.minimum(best[lo:lo + sb], diff.min(1).values.cpu())
    return best.double() / L


def run_summary(longest: np.ndarray, threshold: int) -> dict:
    """Mean and max of the longest reproduced runs m(s), the fraction with m(s) >= threshold, and every m(s)."""
    return {"mean_longest": float(longest.mean()), "max_longest": int(longest.max()),
            "frac_at_least_threshold": float((longest >= threshold).mean()),
            "per_sample_longest": longest.tolist()}


def distance_summary(distance: torch.Tensor, near: float) -> dict:
    """Mean and min of d(s), the fractions of exact copies (d = 0) and of near copies (d <= near), every d(s)."""
    d = distance.double()
    return {"mean_distance": float(d.mean()), "min_distance": float(d.min()),
            "frac_exact": float((d == 0).double().mean()),
            "frac_near": float((d <= near).double().mean()), "per_sample_distance": d.tolist()}


def check_couplings(cells: list[SampleCell], couplings: dict) -> None:
    """Refuse a coupling {label: (folder, x_0 Long[M, L])} of a label that no cell has, or whose sequences are
    not of the length of its label's samples."""
    labels = sorted({c.label for c in cells})
    for label, (folder, x_0) in couplings.items():
        if label not in labels:
            raise ValueError(f"--coupling: {label}={folder}: expected a label of the samples ({', '.join(labels)}), "
                             f"got {label!r}")
        for cell in cells:
            if cell.label == label and cell.ids.shape[1] != x_0.shape[1]:
                raise ValueError(f"--coupling: {label}={folder} holds sequences of length {x_0.shape[1]}, the samples "
                                 f"of {label!r} at {cell.steps} steps have length {cell.ids.shape[1]}")


def block_chunks(blocks, tokens: int = 1 << 20) -> Callable[[], Iterable[np.ndarray]]:
    """A function yielding the rows of `blocks` (an Int[N, L] array or memory map) in chunks of about `tokens`
    tokens, each read as Int64 (one pass over the blocks per call)."""
    rows = max(1, tokens // blocks.shape[1])
    return lambda: (np.asarray(blocks[lo:lo + rows], dtype=np.int64) for lo in range(0, len(blocks), rows))


def memorisation(cells: list[SampleCell], train: Callable[[], Iterable[np.ndarray]], train_length: int,
                 reference: np.ndarray, couplings: dict, settings: MemorisationSettings, device="cpu") -> dict:
    """The result of the checks (module docstring): {"threshold", "near", "reference": {"blocks", ...run_summary},
    "cells": [{"checkpoint", "label", "steps", "seed", "n", "length", "train": run_summary, "coupling": null or
    {"name", "folder", "rows", ...distance_summary}}]}.

    train() yields the training blocks Int[rows, train_length] (once per search round); reference: validation
    blocks Int[K, L']; couplings: {label: (folder, x_0 Long[M, L])}, checked by check_couplings."""
    check_couplings(cells, couplings)
    # every sequence of one length in one search: the passes over the training blocks are shared
    seqs = [reference] + [c.ids for c in cells]
    runs = [None] * len(seqs)
    for length in sorted({s.shape[1] for s in seqs}):
        which = [i for i, s in enumerate(seqs) if s.shape[1] == length]
        found = longest_runs(np.concatenate([seqs[i] for i in which]), train, train_length)
        for i, part in zip(which, np.split(found, np.cumsum([len(seqs[i]) for i in which])[:-1]), strict=True):
            runs[i] = part
    result = {"threshold": settings.threshold, "near": settings.near,
              "reference": {"blocks": len(reference), **run_summary(runs[0], settings.threshold)}, "cells": []}
    for cell, longest in zip(cells, runs[1:], strict=True):
        entry = {"checkpoint": cell.checkpoint, "label": cell.label, "steps": cell.steps, "seed": cell.seed,
                 "n": len(cell.ids), "length": int(cell.ids.shape[1]),
                 "train": run_summary(longest, settings.threshold), "coupling": None}
        if cell.label in couplings:
            folder, x_0 = couplings[cell.label]
            d = nearest_hamming(torch.from_numpy(cell.ids), x_0, device)
            entry["coupling"] = {"name": cell.label, "folder": str(folder), "rows": len(x_0),
                                 **distance_summary(d, settings.near)}
        result["cells"].append(entry)
    return result
