"""imdm_lab.durable: a writer killed at any file-system step (tests/fault_injection.py, one forked process
per step, once more with the file being fsynced cut to half) leaves the old complete file or folder or
the new one, never a mixture; the temporaries of dead writers are cleaned by the next writer, those of
live ones are not; a non-empty folder is replaced only when it holds its writer's marker."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_injection import KILLED, NOT_A_WRITE, killed_at

from imdm_lab import durable

JUDGE = durable.Owner("--out", "judge.json", "a judge")
OLD = {"judge.json": b"{}", "weights.bin": b"old" * 1000, "sub/notes.txt": b"old notes"}
NEW = {"judge.json": b'{"v": 2}', "weights.bin": b"new" * 3000, "tokenizer.json": b"[]"}


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def _tree(folder: Path) -> dict | None:
    """{relative path: bytes} of the files under `folder`; None when it does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _fill(folder: Path, files: dict) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if durable.writer_of(p) is not None)


def _sweep(reset, write, check) -> list[tuple[int, bool]]:
    """Kill write() at its 1st, 2nd, ... step until it runs to the end, whole and torn, each time from
    reset(); check(n, torn) after each kill. Returns the (step, torn) cases in which the fault ended the
    writer."""
    cases = []
    for torn in (False, True):
        for n in range(1, 100):
            reset()
            code = killed_at(n, torn, write)
            if code == 0:
                break
            assert code in (KILLED, NOT_A_WRITE), (n, torn, code)
            check(n, torn)  # NOT_A_WRITE: killed at a step that writes no file, as in the whole sweep
            if code == KILLED:
                cases.append((n, torn))
    return cases


# ---- names and writers -----------------------------------------------------------------------------
def test_one_staging_name_per_final_name_and_writer(tmp_path):
    assert durable.staging(tmp_path / "a.json", 42) == tmp_path / ".a.json.tmp-42"
    assert durable.staging(tmp_path / "a") == tmp_path / f".a.tmp-{os.getpid()}"
    assert durable.writer_of(tmp_path / ".step-00000002.tmp-42") == 42
    assert [durable.writer_of(tmp_path / n) for n in ("a.json", ".a.tmp-x", "a.tmp-42", ".write-probe-1")] == [None] * 4


def test_liveness_of_writers():
    assert durable.alive(os.getpid()) and not durable.alive(_dead_pid()) and not durable.alive(2**80)


def test_stale_temporaries_of_dead_writers_are_cleaned_and_those_of_live_ones_kept(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    for name in (f".shard-000000.tmp-{dead}", f".shard-000000.tmp-{live}", f".shard-000001.tmp-{dead}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.npy").write_bytes(b"partial")
    (tmp_path / f".meta.json.tmp-{dead}").write_text("partial")
    (tmp_path / "shard-000002").mkdir()  # a committed folder is no temporary
    durable.clean_stale(tmp_path, "shard-000000")  # the temporaries of one final name
    assert _temporaries(tmp_path) == sorted([f".shard-000000.tmp-{live}", f".shard-000001.tmp-{dead}",
                                             f".meta.json.tmp-{dead}"])
    durable.clean_stale(tmp_path)  # of every name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".shard-000000.tmp-{live}", "shard-000002"])


# ---- files -----------------------------------------------------------------------------------------
def test_a_file_killed_at_any_step_is_the_old_or_the_new_one(tmp_path):
    path = tmp_path / "result.json"
    old, new = b'{"old": 1}', b'{"new": 2}' * 500

    def check(n, torn):
        assert path.read_bytes() == (new if n == 3 else old), (n, torn)
        durable.clean_stale(tmp_path)
        assert _temporaries(tmp_path) == []

    cases = _sweep(lambda: path.write_bytes(old), lambda: durable.write_file(path, lambda f: f.write(new)), check)
    assert cases == [(1, False), (2, False), (3, False), (1, True)]  # fsync, replace, fsync of the folder
    durable.write_text(path, new.decode())
    assert path.read_bytes() == new and _temporaries(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "s.npy"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError, match="No space"):
        durable.write_file(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["s.npy"]


# ---- folders ---------------------------------------------------------------------------------------
def _write_folder(final: Path, files: dict, owner=None):
    def write():
        with durable.folder(final, owner) as staged:
            _fill(staged, files)
    return write


def test_a_new_folder_killed_at_any_step_is_absent_or_complete(tmp_path):
    final = tmp_path / "judge"
    def check(n, torn):
        tree = _tree(final)
        assert tree == (NEW if n == 6 else None), (n, torn)
        durable.clean_stale(tmp_path)
        assert _temporaries(tmp_path) == []

    def reset():
        if final.exists():
            durable.remove(final)

    cases = _sweep(reset, _write_folder(final, NEW), check)
    # the fsyncs of 3 files and their folder, the rename, the fsync of the parent
    assert [n for n, torn in cases if not torn] == [1, 2, 3, 4, 5, 6] and len(cases) == 9
    reset()
    _write_folder(final, NEW)()
    assert _tree(final) == NEW and _temporaries(tmp_path) == []


def test_a_folder_replacing_its_own_earlier_one_is_the_old_or_the_new_one(tmp_path):
    final = tmp_path / "judge"
    swap = 5  # after the fsyncs of 3 files and their folder

    def check(n, torn):
        tree = _tree(final)
        assert tree == (NEW if n > swap else OLD), (n, torn, sorted(tree or {}))
        durable.clean_stale(tmp_path, "judge")  # the next writer: the dead one's staging folder goes
        assert _temporaries(tmp_path) == []

    def reset():
        if final.exists():
            durable.remove(final)
        _fill(final, OLD)

    cases = _sweep(reset, _write_folder(final, NEW, JUDGE), check)
    # the swap, the fsync of the parent, then the removal of the old one (3 files, 2 folders)
    assert len([c for c in cases if not c[1]]) == swap + 6 and len([c for c in cases if c[1]]) == 3
    reset()
    _write_folder(final, NEW, JUDGE)()
    assert _tree(final) == NEW and sorted(p.name for p in tmp_path.iterdir()) == ["judge"]


def test_an_error_inside_the_block_leaves_the_old_folder_and_no_temporary(tmp_path):
    final = tmp_path / "judge"
    _fill(final, OLD)
    with pytest.raises(RuntimeError, match="training failed"):
        with durable.folder(final, JUDGE) as staged:
            _fill(staged, NEW)
            raise RuntimeError("training failed")
    assert _tree(final) == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["judge"]


@pytest.mark.parametrize("content", [{"notes.txt": b"mine"}, {"config.json": b"{}", "sub/judge.json": b"{}"}])
def test_a_non_empty_folder_without_the_marker_is_refused_before_the_work(tmp_path, content):
    final = tmp_path / "D"
    _fill(final, content)
    ran = []
    with pytest.raises(ValueError, match=rf"^--out: {final} is a non-empty folder that is not a judge written by "
                                         r"this command \(it has no judge\.json\)"):
        with durable.folder(final, JUDGE):
            ran.append(True)
    assert ran == [] and _tree(final) == content and sorted(p.name for p in tmp_path.iterdir()) == ["D"]
    with pytest.raises(ValueError, match="^--out: expected a folder, got the file"):
        durable.check_owner(final / "notes.txt" if "notes.txt" in content else final / "config.json", JUDGE)


def test_absent_and_empty_folders_may_be_written(tmp_path):
    assert durable.check_owner(tmp_path / "new", JUDGE) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    _write_folder(tmp_path / "empty", NEW, JUDGE)()
    _write_folder(tmp_path / "plain", NEW)()
    assert _tree(tmp_path / "empty") == NEW == _tree(tmp_path / "plain")


def test_without_an_owner_a_folder_in_the_way_is_never_replaced(tmp_path):
    """What a second writer of a cache meets when the first one finished: FileExistsError, the first
    writer's folder untouched, no temporary left."""
    final = tmp_path / "cache"
    _fill(final, OLD)
    with pytest.raises(FileExistsError):
        _write_folder(final, NEW)()
    assert _tree(final) == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_a_file_system_that_cannot_swap_folders_is_an_error_naming_the_option(tmp_path, monkeypatch):
    def unsupported(a, b):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(b))
    monkeypatch.setattr(durable, "_exchange", unsupported)
    final = tmp_path / "judge"
    _fill(final, OLD)
    with pytest.raises(ValueError, match=rf"^--out: {final} cannot be replaced in one step on this file system"):
        _write_folder(final, NEW, JUDGE)()
    assert _tree(final) == OLD and sorted(p.name for p in tmp_path.iterdir()) == ["judge"]


def test_a_removal_killed_half_way_leaves_a_stale_temporary_not_a_half_empty_folder(tmp_path):
    final = tmp_path / "step-00000001"

    def check(n, torn):
        assert _tree(final) == (OLD if n == 1 else None), (n, torn)
        durable.clean_stale(tmp_path)
        assert _temporaries(tmp_path) == []

    def reset():
        if not final.exists():
            _fill(final, OLD)

    cases = _sweep(reset, lambda: durable.remove(final), check)
    assert [n for n, _ in cases] == [1, 2, 3, 4, 5, 6]  # the rename, then 3 unlinks and 2 rmdirs
    reset()
    durable.remove(final)
    assert list(tmp_path.iterdir()) == []
