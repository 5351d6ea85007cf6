"""Loading of the compiled op library, then of the fake (meta) kernels of its ops (``pst._meta``).

Importing this module loads ``pst._C``, whose static initialisers register every op
with PyTorch's dispatcher as ``torch.ops.pst.<name>``; when ``PST_OPS_LIB`` names another
build of the op library (``make sanitize``'s), that one is loaded instead. Kernels exist per device key
(CPU always, CUDA when the extension was built with the CUDA toolkit); calling an op
on a device without a kernel raises PyTorch's own "Could not run ... with arguments
from the 'CUDA' backend" error.
"""

from __future__ import annotations

import ctypes
import os

import torch

_LIB = os.environ.get("PST_OPS_LIB")  # another build of the ops (the sanitizer build), instead of pst._C
if _LIB:
    torch.ops.load_library(_LIB)
    _C = None
else:
    try:
        from pst import _C  # registers torch.ops.pst.*
    except ImportError as exc:  # pragma: no cover - only without a build
        raise ImportError(
            "pst's compiled ops (pst._C) are not built. Install with "
            "`pip install --no-build-isolation .` (or `-e .` for development). "
            f"Original error: {exc}"
        ) from exc

ops = torch.ops.pst


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``torch.ops.pst.<op>`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"pst::{op}", dispatch_key)


def native_library() -> ctypes.CDLL:
    """The loaded op library (``pst._C`` or ``PST_OPS_LIB``) through ctypes, for its few plain C
    functions (``pst_cpu_isa``, ``pst_sigint_arm`` / ``pst_sigint_disarm``)."""
    global _NATIVE
    if _NATIVE is None:
        _NATIVE = ctypes.CDLL(_LIB or _C.__file__)
    return _NATIVE


_NATIVE: ctypes.CDLL | None = None


def cpu_isa() -> str:
    """The vector instruction set of the CPU kernels' inner loops on this machine: "avx512",
    "avx2" or "baseline" (picked at load time; cap it with ``PST_CPU_ISA=avx2|baseline``)."""
    if _C is not None:
        return _C.cpu_isa()
    fn = native_library().pst_cpu_isa
    fn.restype = ctypes.c_char_p
    return fn().decode()


def has_cuda() -> bool:
    """Whether this build of pst has CUDA kernels (whatever GPUs this machine has)."""
    return has_kernel("nearest_center", "CUDA")


# The fake kernels of every op (pst/_meta.py, the module the schemas name), once the ops exist.
from pst import _meta  # noqa: E402,F401
