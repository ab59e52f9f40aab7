"""Fault injection into durable writes: the process ends abruptly (os._exit: no clean-up, no flush, what
a SIGKILL or a power cut leaves of the files) at the n-th file-system step made while the faults are
armed. The steps are the calls of os.rename, os.replace, os.fsync, os.unlink and os.rmdir and the
one-step swap of two folders (imdm_lab.durable._exchange); with `torn`, a file being fsynced is first cut
to half its length (a write the kill interrupted).

Used by tests/test_durable.py (imdm_lab.durable itself) and tests/checkpoint_faults.py (the commits of a
training run)."""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager

from imdm_lab import durable

KILLED = 86  # exit status of a process the fault ended
NOT_A_WRITE = 87  # exit status when a torn fault lands on a call that is no file's fsync
EVENTS = ("rename", "replace", "fsync", "unlink", "rmdir")


class Faults:
    """Installed once per process (install); counts steps only inside `armed()`."""

    def __init__(self, n: int, torn: bool = False):
        self.n, self.torn, self.count, self.active = n, torn, 0, False

    def _hit(self, name: str, real):
        def call(*args, **kwargs):
            if self.active:
                self.count += 1
                if self.count == self.n:
                    if self.torn:
                        if name != "fsync" or not stat.S_ISREG(os.fstat(args[0]).st_mode):
                            os._exit(NOT_A_WRITE)
                        os.truncate(f"/proc/self/fd/{args[0]}", os.fstat(args[0]).st_size // 2)
                    os._exit(KILLED)
            return real(*args, **kwargs)
        return call

    def install(self) -> Faults:
        for name in EVENTS:
            setattr(os, name, self._hit(name, getattr(os, name)))
        durable._exchange = self._hit("exchange", durable._exchange)
        return self

    @contextmanager
    def armed(self):
        self.active = True
        try:
            yield
        finally:
            self.active = False


def killed_at(n: int, torn: bool, write) -> int:
    """Run write() in a forked child with the faults armed at step n; its exit status: 0 when write made
    fewer than n steps, KILLED or NOT_A_WRITE when the fault ended it, 1 when write raised."""
    pid = os.fork()
    if pid == 0:
        try:
            faults = Faults(n, torn).install()
            with faults.armed():
                write()
        except BaseException:  # never return into the parent's code
            os._exit(1)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
