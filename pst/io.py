"""Atomic file writes: nothing half-written is ever left under the final name.

Every writer goes to a temporary file in the destination folder, flushes and fsyncs
it, then renames it over the destination (``os.replace`` is atomic on POSIX and
Windows when both paths are on one file system). A crash leaves either the old file
or the new one, plus at worst a stray ``.tmp-<name>.<random>`` file, which
:func:`remove_stale_temps` deletes when the next run starts or resumes in that folder.

Files get the permissions of any file the user creates (``0666`` less the umask), not
``mkstemp``'s ``0600``. A write that the system refuses (full disk, permission denied,
read-only file system) raises :class:`WriteError`, an ``OSError`` whose message names the
cause and the file, e.g. ``no space left on device while writing runs/x/last.pt``; the
file that was there before is left as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import string
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

__all__ = [
    "WriteError",
    "atomic_open",
    "write_bytes",
    "write_text",
    "write_json",
    "save_png",
    "png_bytes",
    "file_sha256",
    "torch_save",
    "read_png",
    "remove_stale_temps",
]

logger = logging.getLogger(__name__)

# the names atomic_open's temporary files get: ".tmp-" + final name + "." + 8 random characters
_TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"\.tmp-.+\.[A-Za-z0-9_]{8}")
_TEMP_CHARS = string.ascii_letters + string.digits + "_"


class WriteError(OSError):
    """The system refused a write: ``str()`` is one line naming the cause and the file
    (``no space left on device while writing runs/x/last.pt``). ``errno`` and ``filename``
    are those of the refused operation's error."""

    def __init__(self, cause: OSError, path: str | os.PathLike, action: str = "writing"):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        reason = os.strerror(cause.errno) if cause.errno else (cause.strerror or str(cause))
        self.message = f"{reason[:1].lower()}{reason[1:]} while {action} {path}"

    def __str__(self) -> str:
        return self.message


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty temporary file for ``folder / name``, created with mode 0666 so that the
    kernel applies the umask (``tempfile.mkstemp`` would make it 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = folder / f"{_TEMP_PREFIX}{name}.{''.join(secrets.choice(_TEMP_CHARS) for _ in range(8))}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit it replaces ``path``.

    Raises:
        WriteError: the system refused to create, write or rename the file (``path`` is
            then untouched and the temporary file removed).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path.parent, path.name)
    except OSError as exc:
        raise WriteError(exc, path) from exc
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(exc, path) from exc
        raise


def remove_stale_temps(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that :func:`atomic_open` left in ``folder`` (and below it)
    when a writer was killed: only names of its own pattern, ``.tmp-<name>.<8 characters>``.

    Call it when a run starts or resumes in ``folder``, before anything writes there (a writer
    running at the same time in that folder would lose its file). Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    walk = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]
    removed = []
    for root, _, files in walk:
        for name in files:
            if name.startswith(_TEMP_PREFIX) and _TEMP_NAME.fullmatch(name):
                p = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    if removed:
        logger.info("removed %d stale temporary file(s) of an interrupted write under %s: %s", len(removed),
                    folder, ", ".join(str(p.relative_to(folder)) for p in removed[:10])
                    + (" ..." if len(removed) > 10 else ""))
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def png_bytes(array: np.ndarray) -> bytes:
    """The PNG encoding of a uint8 / uint16 [H, W] or uint8 [H, W, 3|4] array (the same
    array always gives the same bytes)."""
    from PIL import Image

    array = np.asarray(array)
    if array.dtype == np.uint16 and array.ndim == 2:
        image = Image.fromarray(array)  # 16-bit greyscale ("I;16")
    elif array.dtype == np.uint8 and array.ndim in (2, 3):
        image = Image.fromarray(array)
    else:
        raise ValueError(
            f"save_png expects uint8 [H, W] / [H, W, 3|4] or uint16 [H, W], got {array.dtype} {array.shape}"
        )
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 / uint16 [H, W] or uint8 [H, W, 3|4] array as a PNG, atomically."""
    write_bytes(path, png_bytes(array))


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG into a numpy array, with an error that names the file when it is unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a temporary file, so a kill mid-write leaves the old checkpoint.

    Raises:
        WriteError: the system refused the write (torch itself would only report "unexpected
            pos" from its zip writer, without the cause or the file).
    """
    import torch

    with atomic_open(path, "wb") as f:
        sink = _KeepWriteError(f)
        try:
            torch.save(obj, sink)
        except RuntimeError as exc:
            if sink.error is not None:
                raise WriteError(sink.error, path) from exc
            raise


class _KeepWriteError:
    """A file's ``write`` that remembers the OSError it raised: torch's zip writer turns it
    into a RuntimeError that no longer says what happened."""

    def __init__(self, f: IO):
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self._f.flush()
