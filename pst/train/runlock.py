"""One writer per run folder: a process that writes into a folder (training, resume, demo,
pseudo-labels, export) holds that folder's lock until it returns.

The lock is ``fcntl.flock`` on ``<folder>/.pst-lock``, held through an open file: the kernel
releases it when the process ends, however it ends. The file also records the holder (pid,
host, start time, command) so that a second process is refused with a message naming it.
A clean release empties the file; a file that still names a holder but is not locked was
left by a process that died, and the next process takes it over with a warning naming the
old holder. The file itself is never deleted (deleting it would let two processes lock two
different files of one name).

Who holds what:

* Within one process the lock is re-entrant: the demo holds its folder and calls the
  training stages, which ask for the same folder again.
* Under torchrun only rank 0 (``RANK`` unset or 0) takes it; the other ranks write nothing.
* The demo trains the oracle in a child process beside the source stage, in the same folder.
  The child does not take the lock: :func:`join_parent_hold` checks that its parent process
  is the holder and then lets the child work under the parent's lock (the parent waits for
  the child before it returns). A child whose parent no longer holds the folder takes the
  lock itself, like any other process.

Locks are advisory: they keep pst processes apart, not other programs.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import inspect
import json
import logging
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from pst.io import WriteError

__all__ = ["LOCK_NAME", "RunFolderBusy", "hold_run_folder", "holds_run_folder", "join_parent_hold", "lock_holder"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".pst-lock"


class RunFolderBusy(RuntimeError):
    """Another process holds the run folder's lock."""


# folders this process holds (or works in under its parent's hold): real path -> [open fd or None, depth]
_held: dict[str, list] = {}


def _describe(info: dict) -> str:
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}, "
            f"command: {info.get('command', '?')}")


def _read_info(fd: int) -> dict | None:
    """The holder recorded in an open lock file, None when the file is empty (released cleanly)."""
    data = os.pread(fd, 65536, 0)
    if not data.strip():
        return None
    try:
        info = json.loads(data.decode("utf-8", "replace"))
    except json.JSONDecodeError:
        return {"command": f"(unreadable lock file: {data[:80]!r})"}
    return info if isinstance(info, dict) else {"command": f"(unreadable lock file: {data[:80]!r})"}


def lock_holder(folder: str | os.PathLike) -> dict | None:
    """The process recorded as holding ``folder`` (``pid``, ``host``, ``started``, ``command``),
    or None when the folder has no lock file or it names nobody."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _read_info(fd)
    finally:
        os.close(fd)


def _open_lock_file(folder: Path) -> int:
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise WriteError(exc, path, "creating the lock file") from exc


def _try_lock(fd: int) -> bool:
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _take(folder: Path, key: str, fd: int) -> None:
    """``fd`` is locked: take over any dead holder's record and write ours."""
    old = _read_info(fd)
    if old is not None:
        logger.warning("%s: taking over the lock left by a process that ended without releasing it (%s)",
                       folder, _describe(old))
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else sys.executable}
    data = (json.dumps(info) + "\n").encode("utf-8")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:
        raise WriteError(exc, folder / LOCK_NAME) from exc
    _held[key] = [fd, 1]
    logger.debug("%s: locked by this process (%s)", folder, _describe(info))


# A holder writes its record just after it gets the lock, so a process refused in between
# finds the file empty or half written: it waits this long for the record before it gives up.
_RECORD_WAIT_S = 2.0


def _holder_record(fd: int) -> dict:
    """The record of the process that holds ``fd``'s lock right now (``{}`` when none appears
    within :data:`_RECORD_WAIT_S`)."""
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        info = _read_info(fd)
        if info is not None and "pid" in info:
            return info
        if time.monotonic() >= deadline:
            return info or {}
        time.sleep(0.01)


def _busy(folder: Path, info: dict) -> RunFolderBusy:
    return RunFolderBusy(f"{folder}: in use by another pst process ({_describe(info)}); wait for it to finish or "
                         f"write into another folder (the lock is {folder / LOCK_NAME})")


def _release(key: str) -> None:
    entry = _held[key]
    entry[1] -= 1
    if entry[1] > 0:
        return
    del _held[key]
    fd = entry[0]
    if fd is None:  # worked under the parent's hold
        return
    import fcntl

    try:
        os.ftruncate(fd, 0)  # released cleanly: the next process has no holder to warn about
    except OSError:  # a full or read-only disk: the record stays, the kernel lock goes all the same
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextlib.contextmanager
def hold_run_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock (creating the folder) for the ``with`` block; re-entrant within a
    process. Under torchrun, ranks other than 0 hold nothing.

    Raises:
        RunFolderBusy: another process holds it (the message names that process).
        pst.io.WriteError: the lock file cannot be created (read-only folder, full disk ...).
    """
    folder = Path(folder)
    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield folder
        return
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
    else:
        fd = _open_lock_file(folder)
        try:
            if not _try_lock(fd):
                raise _busy(folder, _holder_record(fd))
            _take(folder, key, fd)
        except BaseException:
            os.close(fd)
            raise
    try:
        yield folder
    finally:
        _release(key)


@contextlib.contextmanager
def join_parent_hold(folder: str | os.PathLike) -> Iterator[Path]:
    """For a child process that its parent started to work in the parent's run folder: work
    under the parent's lock when the parent holds it, else take the lock as any process would.

    Raises:
        RunFolderBusy: the folder is held by a process other than the parent.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    fd = _open_lock_file(folder)
    try:
        if _try_lock(fd):  # the parent does not hold it (any more): hold it ourselves
            _take(folder, key, fd)
            fd = None
        else:
            info = _holder_record(fd)
            if info.get("pid") != os.getppid() or info.get("host") != socket.gethostname():
                raise _busy(folder, info)
            logger.debug("%s: working under the lock of the parent process %d", folder, os.getppid())
            _held[key] = [None, 1]
    finally:
        if fd is not None:
            os.close(fd)
    try:
        yield folder
    finally:
        _release(key)


def holds_run_folder(arg: str = "out_dir") -> Callable:
    """Decorator: the function runs holding the folder passed as its argument ``arg``
    (:func:`hold_run_folder`)."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            folder = sig.bind(*args, **kwargs).arguments[arg]
            with hold_run_folder(folder):
                return fn(*args, **kwargs)

        return wrapper

    return decorate
