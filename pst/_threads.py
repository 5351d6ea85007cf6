"""An honest thread cap for pst's CPU work.

On a machine whose cores other processes keep busy, every parallel region of torch's thread
pool ends by waiting for threads that first have to get a core: an op split over 2 threads
then runs slower than on 1. :class:`capped_threads` asks the op library how many cores are
idle now (csrc/cpu/parallel.cpp: the runnable tasks of /proc/loadavg less this process's own)
and, when at most one is, runs the torch kernels this thread calls inside the block (pst's ops
and the torch calls around them) on this thread alone, restoring the thread count at the end.
Other threads and processes keep their settings: the cap is torch's OpenMP setting of the
calling thread only. Every call of a compiled op through ``pst._interrupt.interruptible_ops``
runs inside one; the clustering entry points wrap their whole body with :func:`thread_capped`.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any, Callable, TypeVar

from pst._ops import native_library

F = TypeVar("F", bound=Callable[..., Any])

_BEGIN: Any = None
_END: Any = None


def _functions() -> tuple[Any, Any]:
    global _BEGIN, _END
    if _BEGIN is None:
        lib = native_library()
        _END = lib.pst_thread_cap_end
        _END.argtypes = [ctypes.c_int]
        _END.restype = None
        _BEGIN = lib.pst_thread_cap_begin
        _BEGIN.restype = ctypes.c_int
    return _BEGIN, _END


class capped_threads:  # noqa: N801 - used like a function: ``with capped_threads(): ...``
    """Context manager: the torch CPU kernels this thread runs in the block use one thread
    while the machine has at most one idle core (decided on entry). Nests."""

    __slots__ = ("_restore",)

    def __enter__(self) -> capped_threads:
        self._restore = int(_functions()[0]())
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._restore > 0:
            _functions()[1](self._restore)
        return False


def thread_capped(fn: F) -> F:
    """``fn`` run inside :class:`capped_threads`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with capped_threads():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
