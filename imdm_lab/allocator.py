"""glibc malloc settings for a training process: keep freed memory instead of returning it to the OS.

glibc serves a request above its mmap threshold (dynamic, at most 32 MiB on 64-bit) with a fresh mmap and
unmaps it on free. A training step allocates and frees the same large buffers every time (at a 50 258-token
vocabulary the chunked head's [1024, C] float32 logits and their gradients are ~206 MB each, above any
threshold glibc accepts), so every step page-faults them in again, zero-filled by the kernel: system time
and minor faults that grow with the vocabulary. Serving every block from the heap (M_MMAP_MAX = 0) and
never trimming its top (M_TRIM_THRESHOLD = 2^31 - 1) makes the second step reuse the first one's pages.
The cost: the process keeps its peak resident size. docs/scale-training.md, "Training throughput on a
CPU", measures both.

Applied at the start of `python -m scale` and `python -m toy_tasks` (their __main__), never on import.
A user's own malloc settings (the MALLOC_*_ variables or a glibc.malloc tunable) win; on a C library
other than glibc nothing is done.
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h parameter numbers
KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def user_settings() -> bool:
    """Whether the environment sets glibc's malloc itself."""
    return any(k in os.environ for k in USER_SETTINGS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory() -> bool:
    """Set KEEP with mallopt; whether it was set (False: not glibc, or the user's settings stand)."""
    if platform.libc_ver()[0] != "glibc" or user_settings():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in KEEP.items())
