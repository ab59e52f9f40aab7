"""Durable files: a file or a folder appears complete or not at all, whatever instant its writer dies at.

One naming scheme for everything being written: the sibling `.NAME.tmp-PID` of the final name NAME, PID
the writer's process id (`staging`). Nothing reads a staging name, so a writer killed half-way leaves
only something the next writer recognises and removes.

A file (`write_file`, `write_text`): its bytes go to the staging name, are fsynced, the staging name is
os.replace'd onto NAME and the folder fsynced. A reader sees the old file or the new one, never a part.

A folder (`folder`): its files are made in the staging folder, every file and folder in it is fsynced,
and it is renamed onto NAME, then the parent fsynced. Where NAME already is a non-empty folder, it is
replaced only if `Owner` says it is this writer's own earlier output (its marker file is in it): the two
folders are swapped in one step (Linux renameat2 RENAME_EXCHANGE, macOS renamex_np RENAME_SWAP) and the
old one, now under the staging name, is removed. Any other non-empty folder is refused (`check_owner`,
which the commands call before their work starts): a user's folder is never deleted.

One writer (`take_lock`, `writer`): a folder written over time (a run, a coupling, a pipeline) is held
by an exclusive flock on its `.writer.lock` for as long as its writer runs; a second writer is refused
before it writes anything, and a dead writer's lock goes with its process.

Stale temporaries: a staging name whose writer is no longer alive (`alive`: signal 0 to its PID) is
removed by the next writer of the same name (`clean_stale`); a live writer's is left alone. PIDs are
those of this machine, so writers on several machines keep to names of their own.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

TMP = ".tmp-"
_STAGING = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)")
AT_FDCWD, RENAME_EXCHANGE, RENAME_SWAP = -100, 2, 2  # Linux <fcntl.h> / <linux/fs.h>, macOS <stdio.h>


# ---- names and writers -----------------------------------------------------------------------------
def staging(final: str | os.PathLike, pid: int | None = None) -> Path:
    """The staging name `.NAME.tmp-PID` of `final` for the writer `pid` (default: this process)."""
    final = Path(final)
    return final.with_name(f".{final.name}{TMP}{os.getpid() if pid is None else pid}")


def writer_of(path: str | os.PathLike) -> int | None:
    """The PID in a staging name, None for a name of another form."""
    match = _STAGING.fullmatch(Path(path).name)
    return int(match["pid"]) if match else None


def alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OverflowError:  # beyond any PID
        return False
    return True


def stale(path: str | os.PathLike) -> bool:
    """A staging name whose writer is dead."""
    pid = writer_of(path)
    return pid is not None and not alive(pid)


def remove(path: str | os.PathLike) -> None:
    """Remove a file or a folder. A folder is first renamed to its staging name, so that a kill in the
    middle of the removal leaves a stale temporary, not a half-emptied folder under its own name."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        if writer_of(path) is None:
            trash = staging(path)
            os.rename(path, trash)
            path = trash
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def clean_stale(folder: str | os.PathLike, name: str | None = None) -> None:
    """Remove the staging names in `folder` of the final name `name` (None: of any name) whose writers
    are dead; those of live writers stay."""
    folder = Path(folder)
    for path in list(folder.iterdir()) if folder.is_dir() else []:
        match = _STAGING.fullmatch(path.name)
        if match and (name is None or match["name"] == name) and not alive(int(match["pid"])):
            remove(path)


def name_path(err: BaseException, path: str | os.PathLike) -> None:
    """Give an OSError that names no file (a write to an open file: a full disk) the path being written,
    so that its message says where."""
    if isinstance(err, OSError) and err.filename is None:
        err.filename = str(path)


# ---- durable steps ---------------------------------------------------------------------------------
def fsync(path: str | os.PathLike) -> None:
    """Flush a file's contents, or a folder's names, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_file(staged: Path, final: Path) -> None:
    """Make the complete file `staged` the file `final`: fsync it, replace `final` with it in one step,
    fsync the folder (the rename itself)."""
    fsync(staged)
    os.replace(staged, final)
    fsync(final.parent)


def write_file(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """The file `path` written by write(f) (f: a binary file open on its staging name), atomically; its
    folder must exist. A failed write leaves the old file and no temporary."""
    path = Path(path)
    staged = staging(path)
    try:
        with open(staged, "wb") as f:
            write(f)
        publish_file(staged, path)
    except BaseException as err:
        staged.unlink(missing_ok=True)
        name_path(err, path)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """The file `path` holding `text` (UTF-8), atomically."""
    data = text.encode()
    return write_file(path, lambda f: f.write(data))


def write_figure(fig, path: str | os.PathLike, **savefig) -> Path:
    """The matplotlib figure `fig` written to `path` atomically, in the format its suffix names (a file
    object carries no name, so the format is passed); savefig: fig.savefig's other options."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or None
    return write_file(path, lambda f: fig.savefig(f, format=fmt, **savefig))


def sync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (deepest first), `root` last."""
    for here, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync(Path(here) / name)
        fsync(here)


def _exchange(a: Path, b: Path) -> None:
    """Swap the names of two paths in one step."""
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "renameat2"):
        rc = libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    elif hasattr(libc, "renamex_np"):
        rc = libc.renamex_np(os.fsencode(a), os.fsencode(b), RENAME_SWAP)
    else:
        raise OSError(errno.ENOSYS, "this system cannot swap two paths in one step", str(b))
    if rc != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(b))


# ---- one writer -------------------------------------------------------------------------------------
LOCK = ".writer.lock"


def take_lock(folder: str | os.PathLike, option: str) -> IO:
    """Become the one writer of `folder` (which must exist): an exclusive flock on folder/.writer.lock,
    held while the returned file stays open and released by the system when the process dies (so a
    killed writer never blocks the next). A folder another live process holds is a ValueError naming
    `option`, before anything is written."""
    lock = open(Path(folder) / LOCK, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ValueError(f"{option}: {folder} is being written by another running process") from None
    return lock


@contextmanager
def writer(folder: str | os.PathLike, option: str) -> Iterator[Path]:
    """with writer(folder, option): ... -- the block runs as the one writer of `folder` (take_lock),
    made when missing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = take_lock(folder, option)
    try:
        yield folder
    finally:
        lock.close()


# ---- folders ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Owner:
    """The writer of a kind of folder: `option` names the folder on the command line, `marker` is the
    file only this writer's folders hold, `what` says what the folder holds ("a tokenizer")."""
    option: str
    marker: str
    what: str


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_owner(final: str | os.PathLike, owner: Owner) -> Path:
    """`final` as a Path that `owner` may write: absent, an empty folder, or a folder holding its marker
    (its own earlier output, which will be replaced); anything else is a ValueError naming the option."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise ValueError(f"{owner.option}: expected a folder, got the file {str(final)!r}")
    if _non_empty(final) and not (final / owner.marker).is_file():
        raise ValueError(f"{owner.option}: {final} is a non-empty folder that is not {owner.what} written by this "
                         f"command (it has no {owner.marker}); expected a new or empty folder, or one of its own")
    return final


def publish_folder(staged: Path, final: Path, owner: Owner | None = None) -> None:
    """Make the complete folder `staged` the folder `final` and the rename durable. A non-empty `final`
    is swapped out and removed when it holds `owner`'s marker; without an owner it is a FileExistsError
    (another writer finished first)."""
    if _non_empty(final):
        if owner is None:
            raise FileExistsError(errno.EEXIST, "a non-empty folder is in the way", str(final))
        check_owner(final, owner)
        try:
            _exchange(staged, final)
        except OSError as err:
            raise ValueError(f"{owner.option}: {final} cannot be replaced in one step on this file system "
                             f"({err.strerror}); remove it or choose another folder") from None
        fsync(final.parent)
        remove(staged)  # the old folder, under the staging name now
        return
    try:
        os.rename(staged, final)  # an empty folder in the way is replaced
    except OSError as err:
        if err.errno in (errno.EEXIST, errno.ENOTEMPTY):  # made by another writer since the check above
            raise FileExistsError(errno.EEXIST, "a non-empty folder is in the way", str(final)) from None
        raise
    fsync(final.parent)


@contextmanager
def folder(final: str | os.PathLike, owner: Owner | None = None) -> Iterator[Path]:
    """with folder(final) as staged: ... -- the files written into `staged` become the folder `final`
    when the block ends without an error (synced, then published: see publish_folder); otherwise the
    staging folder is removed and `final` is untouched. Stale temporaries of `final` are removed first.
    With an owner, a foreign non-empty `final` is refused (check_owner) before the block runs."""
    final = Path(final)
    if owner is not None:
        check_owner(final, owner)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent, final.name)
    staged = staging(final)
    if staged.exists():  # left by an earlier failed attempt of this very process
        remove(staged)
    staged.mkdir()
    try:
        yield staged
        sync_tree(staged)
        publish_folder(staged, final, owner)
    except BaseException as err:
        if staged.exists():
            remove(staged)
        name_path(err, final)
        raise
