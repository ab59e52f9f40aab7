"""Forward process q(x_t | x_0) and the mask labels eps of the infinite-state mask.

MDM: every position is independently replaced by the mask token with probability 1 - alpha_t.
IMDM: a masked position also carries a label eps drawn i.i.d. per position; eps is independent of x_0,
so the masking itself is the same and the labels are a separate draw (`MaskNoise`).

Label kinds (imdm-reference sec. 1, 3.3): `rand` U(-1, 1)^D * scale, `randn` N(0, I_D) * scale,
`learnable` N(0, I_D) * scale mapped to mu + sigma * n by the embedding (mu, sigma are its parameters),
`finite` an integer in [0, K) (a K-state mask; K = 1 is the MDM).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imdm_lab import noise as hashed
from imdm_lab.schedules import Schedule, get_schedule


def _uniform_to_rand(u, noise):
    return (2.0 * u - 1.0) * noise.scale


def _normal_to_randn(n, noise):
    return n * noise.scale


def _uniform_to_finite(u, noise):
    # u < 1 always, but u * K can round up to K in float64 when K is huge; clamp keeps it in range.
    return torch.clamp((u * noise.K).floor().long(), max=noise.K - 1)


def _rand_to_uniform(eps, noise):
    return (eps.double() / noise.scale + 1.0) / 2.0


def _randn_to_uniform(eps, noise):
    return torch.special.ndtr(eps.double() / noise.scale)


# kind -> (base variate 'uniform' | 'normal', map from the base variate to eps, map from eps back to a
# U(0, 1) variate: the CDF of its law, None for finite labels)
NOISE_KINDS = {
    "rand": ("uniform", _uniform_to_rand, _rand_to_uniform),
    "randn": ("normal", _normal_to_randn, _randn_to_uniform),
    "learnable": ("normal", _normal_to_randn, _randn_to_uniform),
    "finite": ("uniform", _uniform_to_finite, None),
}

# Largest float64 below 1: uniforms read back from labels are kept in [0, 1).
BELOW_ONE = 1.0 - 2.0**-53


@dataclass(frozen=True)
class MaskNoise:
    """Law of the per-position mask label eps.

    kind: one of NOISE_KINDS; dim: D (continuous kinds); scale: multiplies the continuous draw;
    K: number of mask states (kind 'finite'). Continuous eps are Float[..., D], finite eps Long[...]."""

    kind: str = "rand"
    dim: int | None = None
    scale: float = 1.0
    K: int | None = None

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"kind: expected one of {sorted(NOISE_KINDS)}, got {self.kind!r}")
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
            raise ValueError(f"noise: expected continuous labels to read a uniform from, got {self.kind!r}")
        return NOISE_KINDS[self.kind][2](eps, self).clamp(0.0, BELOW_ONE)

    def _finish(self, base: torch.Tensor, dtype) -> torch.Tensor:
        eps = NOISE_KINDS[self.kind][1](base, self)
        return eps.to(dtype) if self.continuous else eps

    def draw_rows(self, n: int, generator: torch.Generator | None = None, device=None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """n fresh labels from the generator: Float[n, D] or Long[n] (drawn in float64, then cast)."""
        shape = (n, self.dim) if self.continuous else (n,)
        draw = torch.rand if NOISE_KINDS[self.kind][0] == "uniform" else torch.randn
        base = hashed.generator_draw(draw, shape, generator=generator, device=device, dtype=torch.float64)
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
        seeds = hashed._check_seeds(seeds)
        streams = torch.as_tensor(streams, dtype=torch.int64, device=seeds.device)
        w = self.width
        index = positions.to(torch.int64)[..., None] * w + torch.arange(w, device=seeds.device)
        top = length if length is not None else (int(positions.max()) + 1 if positions.numel() else 0)
        if top * w > hashed.MAX_INDEX:
            raise ValueError(f"positions: L * D must stay below {hashed.MAX_INDEX}")
        draw = hashed.uniform_at if NOISE_KINDS[self.kind][0] == "uniform" else hashed.normal_at
        base = draw(seeds[..., None], streams[..., None] if streams.dim() else streams, index, top * w)
        eps = self._finish(base, dtype)
        return eps if self.continuous else eps[..., 0]

    def from_seeds(self, seeds: torch.Tensor, length: int, stream: int = 0,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Labels of whole sequences from per-sample seeds: Long[B] -> Float[B, L, D] or Long[B, L]."""
        seeds = hashed._check_seeds(seeds)
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


def check_tokens(x: torch.Tensor, name: str, batch: int | None = None, length: int | None = None,
                 validate: bool = True):
    """x must be a Long[B, L] tensor of non-negative ids (validate=False: shape and dtype only, no read-back)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.dtype != torch.int64:
        got = f"shape {tuple(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a Long[B, L] tensor, got {got}")
    if batch is not None and tuple(x.shape) != (batch, length):
        raise ValueError(f"{name}: expected shape {(batch, length)}, got {tuple(x.shape)}")
    if validate and x.numel() and int(x.min()) < 0:
        raise ValueError(f"{name}: expected token ids >= 0, got {int(x.min())}")
    return x


def check_times(t, batch: int, name: str = "t", validate: bool = True) -> torch.Tensor:
    """t must be a Float[B] tensor (or a number, broadcast) with values in [0, 1] (validate=False: the
    range is not read back)."""
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.full((batch,), float(t), dtype=torch.float64)
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or tuple(t.shape) != (batch,):
        got = f"shape {tuple(t.shape)} dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a float tensor of shape ({batch},) or a number, got {got}")
    if validate and not bool(torch.all((t >= 0) & (t <= 1))):
        raise ValueError(f"{name}: expected times in [0, 1], got range [{float(t.min())}, {float(t.max())}]")
    return t


def q_sample(x0: torch.Tensor, t, schedule: str | Schedule, mask_id: int,
             generator: torch.Generator | None = None, validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw x_t ~ q(x_t | x_0):  x_t^i = x_0^i with prob. alpha_t, else the mask token (MDLM eq. 2).

    x0: Long[B, L], t: Float[B] in [0, 1]  ->  (x_t: Long[B, L], masked: Bool[B, L]).
    The coin of each position is a float64 uniform from `generator` compared with 1 - alpha_t."""
    check_tokens(x0, "x0", validate=validate)
    sched = get_schedule(schedule)
    t = check_times(t, x0.shape[0], validate=validate).to(device=x0.device, dtype=torch.float64)
    coins = hashed.generator_draw(torch.rand, x0.shape, generator=generator, device=x0.device,
                                  dtype=torch.float64)
    masked = coins < (1.0 - sched.alpha(t))[:, None]
    return torch.where(masked, torch.full_like(x0, mask_id), x0), masked
