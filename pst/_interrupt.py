"""Ctrl-C for the compiled ops.

While an op runs, the main thread is inside C++ and Python's own SIGINT handler cannot run:
Ctrl-C would only take effect after the op returns (minutes, for a long fit). Inside
:func:`interruptible` a C-level SIGINT handler is installed instead: it sets a flag that the
long kernels poll between chunks of work (``csrc/interrupt.h``); the op then stops, and the
block raises :class:`KeyboardInterrupt` as Python would have. The handler is installed only for
the duration of the block, only in the main thread, and only while Python's SIGINT handler is
its default (``signal.default_int_handler``): a program that set its own handler or ignores
SIGINT keeps it, and its ops run to the end as before.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from pst._ops import native_library, ops
from pst._threads import capped_threads

__all__ = ["interruptible", "interruptible_ops"]


class interruptible:  # noqa: N801 - used like a function: ``with interruptible(): ...``
    """Context manager: the compiled ops called in this block stop on Ctrl-C (SIGINT), and the
    block then raises KeyboardInterrupt (also when the signal came after the op's last look at
    the flag). Does nothing outside the main thread, when SIGINT's handler is not Python's
    default one, or inside another ``interruptible`` block (the outer one is in charge)."""

    __slots__ = ("_armed",)

    def __enter__(self) -> interruptible:
        self._armed = False
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._armed = bool(native_library().pst_sigint_arm())
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._armed and native_library().pst_sigint_disarm():
            # replaces the op's "pst: interrupted" RuntimeError, if it raised one
            raise KeyboardInterrupt from None
        return False


class _InterruptibleOps:
    """``torch.ops.pst`` whose every call runs inside :class:`interruptible` and
    :class:`pst._threads.capped_threads`."""

    def __getattr__(self, name: str) -> Any:
        op = getattr(ops, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with interruptible(), capped_threads():
                return op(*args, **kwargs)

        call.__name__ = name
        return call


interruptible_ops = _InterruptibleOps()
