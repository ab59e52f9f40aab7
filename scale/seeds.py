"""Seeds derived from names and counters, identical on every process, run and machine."""
from __future__ import annotations

import hashlib


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends only on `parts`, e.g. derive_seed(seed, "mask", step, micro_batch)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
