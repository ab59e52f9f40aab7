"""The law of the mask labels eps of the infinite-state mask, and the one vocabulary that names it.

An IMDM gives every masked position a label eps drawn i.i.d. per position, independent of x_0
(Ugness/IMDM models/dit.py: noise types rand, randn, learnable and num_mask). Label kinds, `LABEL_NAMES`:

    none        no labels: the MDM (a single deterministic mask state)
    rand        U(-1, 1)^D * scale
    randn       N(0, I_D) * scale
    learnable   N(0, I_D) * scale, mapped to mu + sigma * n by the embedding (mu, sigma its parameters)
    finite      an integer in [0, K) (a K-state mask; K = 1 is the MDM)

`mask_labels(kind, ...)` turns a name into a `MaskLabels` (None for `none`); the toy models, the DiT config
and the checkpoint importer all use it. Seeded labels come from the counter RNG (imdm_lab.counter_rng).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imdm_lab import counter_rng


def _uniform_to_rand(u, labels):
    return (2.0 * u - 1.0) * labels.scale


def _normal_to_randn(n, labels):
    return n * labels.scale


def _uniform_to_finite(u, labels):
    # u < 1 always, but u * K can round up to K in float64 when K is huge; clamp keeps it in range.
    return torch.clamp((u * labels.K).floor().long(), max=labels.K - 1)


def _rand_to_uniform(eps, labels):
    return (eps.double() / labels.scale + 1.0) / 2.0


def _randn_to_uniform(eps, labels):
    return torch.special.ndtr(eps.double() / labels.scale)


# kind -> (base variate 'uniform' | 'normal', map from the base variate to eps, map from eps back to a
# U(0, 1) variate: the CDF of its law, None for finite labels)
LABEL_KINDS = {
    "rand": ("uniform", _uniform_to_rand, _rand_to_uniform),
    "randn": ("normal", _normal_to_randn, _randn_to_uniform),
    "learnable": ("normal", _normal_to_randn, _randn_to_uniform),
    "finite": ("uniform", _uniform_to_finite, None),
}

# Largest float64 below 1: uniforms read back from labels are kept in [0, 1).
BELOW_ONE = 1.0 - 2.0**-53


@dataclass(frozen=True)
class MaskLabels:
    """Law of the per-position mask label eps.

    kind: one of LABEL_KINDS; dim: D (continuous kinds); scale: multiplies the continuous draw;
    K: number of mask states (kind 'finite'). Continuous eps are Float[..., D], finite eps Long[...]."""

    kind: str = "rand"
    dim: int | None = None
    scale: float = 1.0
    K: int | None = None

    def __post_init__(self):
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"kind: expected one of {sorted(LABEL_KINDS)}, got {self.kind!r}")
        if self.kind == "finite":
            if isinstance(self.K, bool) or not isinstance(self.K, int) or self.K < 1:
                raise ValueError(f"K: expected an integer >= 1 for kind 'finite', got {self.K!r}")
        else:
            if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
                raise ValueError(f"dim: expected an integer >= 1 for kind {self.kind!r}, got {self.dim!r}")
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) \
                    or not 0 < self.scale < math.inf:
                raise ValueError(f"scale: expected a finite number > 0, got {self.scale!r}")

    @property
    def continuous(self) -> bool:
        return self.kind != "finite"

    @property
    def width(self) -> int:
        """Number of hashed values per position: D for continuous labels, 1 for finite ones."""
        return self.dim if self.continuous else 1

    def to_uniform(self, eps: torch.Tensor) -> torch.Tensor:
        """U(0, 1) variates read from continuous labels, elementwise: Float[...] -> Float64[...] in [0, 1).

        u = CDF(eps) of the label law (learnable: of the N(0, 1) * scale draw, before mu and sigma)."""
        if not self.continuous:
            raise ValueError(f"labels: expected continuous labels to read a uniform from, got {self.kind!r}")
        return LABEL_KINDS[self.kind][2](eps, self).clamp(0.0, BELOW_ONE)

    def _finish(self, base: torch.Tensor, dtype) -> torch.Tensor:
        eps = LABEL_KINDS[self.kind][1](base, self)
        return eps.to(dtype) if self.continuous else eps

    def draw_rows(self, n: int, generator: torch.Generator | None = None, device=None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """n fresh labels from the generator: Float[n, D] or Long[n] (drawn in float64, then cast)."""
        shape = (n, self.dim) if self.continuous else (n,)
        draw = torch.rand if LABEL_KINDS[self.kind][0] == "uniform" else torch.randn
        base = counter_rng.generator_draw(draw, shape, generator=generator, device=device, dtype=torch.float64)
        return self._finish(base, dtype)

    def draw(self, batch: int, length: int, generator: torch.Generator | None = None, device=None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Fresh i.i.d. labels for a batch: Float[B, L, D] or Long[B, L]."""
        eps = self.draw_rows(batch * length, generator=generator, device=device, dtype=dtype)
        return eps.reshape(batch, length, *eps.shape[1:])

    def at(self, seeds: torch.Tensor, streams, positions: torch.Tensor,
           dtype: torch.dtype = torch.float32, length: int | None = None) -> torch.Tensor:
        """Seeded labels of single positions: eps(seed_n, stream_n, position_n) -> Float[N, D] or Long[N].

        Element (position l, coordinate d) has counter l * D + d, so `at` agrees with `from_seeds`.
        length: positions < length, known to the caller (then the positions are not read back)."""
        seeds = counter_rng._check_seeds(seeds)
        streams = torch.as_tensor(streams, dtype=torch.int64, device=seeds.device)
        w = self.width
        index = positions.to(torch.int64)[..., None] * w + torch.arange(w, device=seeds.device)
        top = length if length is not None else (int(positions.max()) + 1 if positions.numel() else 0)
        if top * w > counter_rng.MAX_INDEX:
            raise ValueError(f"positions: L * D must stay below {counter_rng.MAX_INDEX}")
        draw = counter_rng.uniform_at if LABEL_KINDS[self.kind][0] == "uniform" else counter_rng.normal_at
        base = draw(seeds[..., None], streams[..., None] if streams.dim() else streams, index, top * w)
        eps = self._finish(base, dtype)
        return eps if self.continuous else eps[..., 0]

    def from_seeds(self, seeds: torch.Tensor, length: int, stream: int = 0,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Labels of whole sequences from per-sample seeds: Long[B] -> Float[B, L, D] or Long[B, L]."""
        seeds = counter_rng._check_seeds(seeds)
        if seeds.dim() != 1:
            raise ValueError(f"seeds: expected a 1-d tensor of shape [B], got shape {tuple(seeds.shape)}")
        positions = torch.arange(length, device=seeds.device)
        return self.at(seeds[:, None], stream, positions[None, :], dtype=dtype, length=length)

    def check(self, eps: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """Validate eps against this law for a [B, L] sequence batch; returns eps."""
        want = (batch, length, self.dim) if self.continuous else (batch, length)
        if not isinstance(eps, torch.Tensor) or tuple(eps.shape) != want:
            got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
            raise ValueError(f"eps: expected shape {want} for {self.kind!r} labels, got {got}")
        if self.continuous != eps.is_floating_point():
            raise ValueError(f"eps: expected a {'float' if self.continuous else 'long'} tensor for "
                             f"{self.kind!r} labels, got dtype {eps.dtype}")
        return eps


# The one vocabulary of the label law: "none" (an MDM) or a MaskLabels kind.
LABEL_NAMES = ("none", *LABEL_KINDS)


def mask_labels(kind: str, dim: int | None = None, scale: float = 1.0, K: int | None = None) -> MaskLabels | None:
    """The label law named `kind` (one of LABEL_NAMES): None for "none", else MaskLabels(kind, ...).

    dim: D of continuous labels; scale: their multiplier; K: the number of states of "finite" labels."""
    if kind not in LABEL_NAMES:
        raise ValueError(f"labels: expected one of {', '.join(LABEL_NAMES)}, got {kind!r}")
    if kind == "none":
        return None
    if kind == "finite":
        return MaskLabels("finite", K=K)
    return MaskLabels(kind, dim=dim, scale=scale)
