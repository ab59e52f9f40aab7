"""Counter-based seeded noise: every value is a pure function of (seed, stream, element index).

IM-ReDi trains a student on (eps(seed), x_t) -> x_0 pairs produced by a teacher, so the student must see
exactly the eps the teacher started from. Storing eps is infeasible (8 MiB per OWT sample), storing one
int64 seed is not. A stateless integer hash makes eps depend only on (seed, stream, index): not on batch
composition, chunking, device, call order or the number of processes.

`stream` separates independent uses of one seed: stream 0 is the initial eps of a sample, the sampler
draws the fresh eps of a reset at step j from stream j + 1.

All arithmetic is done on int64 tensors holding 32-bit words, so the uniforms (and the `rand` and
`finite` labels made from them) are bit-identical on every device; normal labels go through log and cos,
whose last ulp may differ between CPU and GPU libraries. Each value carries 32 random bits (u on the grid
k / 2^32), ample for mask labels that the networks read in float32 (24-bit mantissa).
"""
from __future__ import annotations

import functools
import hashlib
import math

import torch

_M32 = 0xFFFFFFFF
# Odd 32-bit multipliers of the "lowbias32" integer hash (C. Wellons' hash-prospector), a bijection of
# 32-bit words with low bias; and the golden-ratio constant to decorrelate the seed halves and streams.
_C1, _C2 = 0x7FEB352D, 0x846CA68B
_GOLDEN = 0x9E3779B9
# normal_at hashes counters up to 2 * index + 1, which must stay a 32-bit word.
MAX_INDEX = 2**31


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32), c < 2^32.

    The int64 product may exceed 2^63 and wrap around (two's complement, as on every CPU and GPU torch
    runs on); its low 32 bits are exact either way. tests/test_kernels_counter_rng.py checks the hash
    bit for bit against pure-Python integer arithmetic."""
    return (x * c) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32: a bijective avalanche hash of 32-bit words stored in int64 (values in [0, 2^32))."""
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    return x ^ (x >> 16)


# Counters below this bound are mixed once and looked up: a label tensor of B x L x D values reuses the
# L x D counters of one sample B times, and a gather is ten times cheaper than mix32 itself.
TABLE_MAX = 2**22


@functools.lru_cache(maxsize=8)
def _mixed_counters(n: int, device: str) -> torch.Tensor:
    return mix32(torch.arange(n, device=device))


def _premix(index: torch.Tensor, bound: int | None = None) -> torch.Tensor:
    """mix32(index), through a cached table when the counters are small. bound: an exclusive upper
    bound of index the caller knows (then nothing is read back); the values do not depend on it."""
    top = bound if bound is not None else (int(index.max()) + 1 if index.numel() else 0)
    if top > TABLE_MAX:
        return mix32(index)
    size = 1 << max(top - 1, 1).bit_length()  # a power of two, so nearby sizes share one table
    return _mixed_counters(size, str(index.device))[index]


def _key(seeds: torch.Tensor, streams: torch.Tensor) -> torch.Tensor:
    """32-bit key of (seed, stream): both seed halves and the stream pass through the hash in a chain."""
    lo = seeds & _M32
    hi = (seeds >> 32) & _M32
    k = mix32((streams & _M32) ^ _GOLDEN)
    k = mix32(hi ^ k)
    return mix32(lo ^ k)


def generator_draw(draw, *args, generator: torch.Generator | None = None, device=None, **kwargs) -> torch.Tensor:
    """draw(*args, **kwargs) (torch.rand, randn, randint) on the generator's device, moved to `device`.

    A generator fills tensors only on its own device (a CUDA generator cannot draw a CPU tensor), so the
    values of a seeded run do not depend on where they are used. device=None: the generator's device,
    or the CPU without a generator."""
    gdev = generator.device if generator is not None else (device or "cpu")
    return draw(*args, generator=generator, device=gdev, **kwargs).to(device or gdev)


def _check_seeds(seeds) -> torch.Tensor:
    if not isinstance(seeds, torch.Tensor) or seeds.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"seeds: expected an integer tensor, got {type(seeds).__name__}"
                         f"{'' if not isinstance(seeds, torch.Tensor) else ' of dtype ' + str(seeds.dtype)}")
    return seeds.long()


def uniform_at(seeds: torch.Tensor, streams, index: torch.Tensor, bound: int | None = None) -> torch.Tensor:
    """u = U(seed, stream, index) = mix32(key(seed, stream) ^ mix32(index)) / 2^32 in [0, 1), float64.

    seeds: Long[...] (any int64, negative allowed), streams: int or Long[...], index: Long[...] in
    [0, 2^32)  ->  Float64[broadcast shape]; the arguments broadcast. mix32 is a bijection, so distinct
    indices of one key never collide before the final mix. bound: index < bound when the caller knows it."""
    seeds = _check_seeds(seeds)
    streams = torch.as_tensor(streams, dtype=torch.int64, device=seeds.device)
    key = _key(seeds, streams)
    h = mix32(key ^ _premix(index.to(torch.int64), bound))
    return h.to(torch.float64) * 2.0**-32


def hash_uniform(seeds: torch.Tensor, n: int, stream: int = 0) -> torch.Tensor:
    """Row b is U(seeds[b], stream, 0..n-1): Long[B] -> Float64[B, n] in [0, 1)."""
    seeds = _check_seeds(seeds)
    if seeds.dim() != 1:
        raise ValueError(f"seeds: expected a 1-d tensor of shape [B], got shape {tuple(seeds.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_INDEX:
        raise ValueError(f"n: expected an integer in [1, {MAX_INDEX}], got {n!r}")
    index = torch.arange(n, device=seeds.device)
    return uniform_at(seeds[:, None], stream, index[None, :])


def normal_at(seeds: torch.Tensor, streams, index: torch.Tensor, bound: int | None = None) -> torch.Tensor:
    """Standard normal N(seed, stream, index) by Box-Muller on two hashed uniforms; Float64.

    Uniform 1 is 1 - U in (0, 1] so the log is finite; the two uniforms come from counters 2i and
    2i + 1 of a stream salted apart from `uniform_at`'s so that rand and randn of one seed differ.
    bound: index < bound when the caller knows it."""
    streams = torch.as_tensor(streams, dtype=torch.int64, device=index.device)
    salted = streams ^ 0x5BD1E995
    twice = None if bound is None else 2 * bound
    u1 = 1.0 - uniform_at(seeds, salted, 2 * index, twice)
    u2 = uniform_at(seeds, salted, 2 * index + 1, twice)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on `parts` (names and counters), identical on every process, run
    and machine, e.g. derive_seed(seed, "mask", step, micro_batch)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
