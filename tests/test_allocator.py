"""imdm_lab.allocator: once `python -m scale` has started, a large block freed and allocated again reuses
its pages (no new page faults); without it glibc unmaps the block and the kernel faults it in again. A
user's malloc settings, or a C library other than glibc, leave malloc alone."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from imdm_lab import allocator

ROOT = Path(__file__).resolve().parents[1]
# minor faults of 3 rounds of: 64 MiB (16 Ki pages) allocated, written, freed; after `setup`
CYCLES = """
import ctypes, json, resource, runpy, sys
{setup}
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(64 << 20)
    ctypes.memset(block, 1, 64 << 20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(faults))
"""
SCALE_START = """
sys.argv = ["scale", "--help"]
try:
    runpy.run_module("scale", run_name="__main__")
except SystemExit:
    pass
"""
PAGES = (64 << 20) // 4096


def _faults(setup: str, **env: str) -> list[int]:
    clean = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", CYCLES.format(setup=setup)], capture_output=True, text=True,
                          check=True, cwd=ROOT, env={**clean, "PYTHONPATH": str(ROOT), **env})
    return json.loads(done.stdout.splitlines()[-1])


glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


@glibc
def test_python_m_scale_keeps_a_freed_block_resident():
    fresh, *again = _faults(SCALE_START)
    assert fresh > PAGES // 2  # the first round faults the block in
    assert max(again) < PAGES // 100  # later rounds reuse its pages


@glibc
def test_glibc_defaults_fault_the_block_in_every_time():
    assert min(_faults("")) > PAGES // 2


@glibc
def test_a_users_malloc_setting_wins():
    assert min(_faults(SCALE_START, MALLOC_MMAP_MAX_="65536")) > PAGES // 2
    assert min(_faults(SCALE_START, GLIBC_TUNABLES="glibc.malloc.perturb=0")) > PAGES // 2


def test_another_c_library_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: pytest.fail("mallopt called off glibc"))
    assert allocator.keep_freed_memory() is False
