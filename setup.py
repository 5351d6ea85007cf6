"""Build of the compiled op library ``pst._C``.

Metadata lives in pyproject.toml; this file only describes the extension.
It builds against the torch that is already installed, so install with::

    pip install --no-build-isolation .

An isolated build would have to install its own torch first (several GB of
CUDA packages on a CPU machine) and could build against another version than
the one the extension is later loaded into.

Environment:
    FORCE_CUDA=1   build the CUDA kernels even when no GPU is visible
                   (needs nvcc and a CUDA build of torch)
    FORCE_CPU=1    never build the CUDA kernels
    PST_DEBUG=1    build with -O0 -g
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent

try:
    import torch
    from torch.utils import cpp_extension
except ImportError as exc:  # pragma: no cover - depends on the build environment
    raise SystemExit(
        "pst builds its C++ ops against the installed torch, but torch could not be "
        f"imported ({exc}). Install torch first, then build without isolation:\n"
        "    pip install torch && pip install --no-build-isolation ."
    ) from exc


def read_sources() -> dict[str, list[str]]:
    """Expand csrc/sources.txt into {kind: [relative paths]}."""
    kinds: dict[str, list[str]] = {"cpu": [], "python": [], "cuda": []}
    for raw in (ROOT / "csrc" / "sources.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kind, pattern = line.split()
        if kind not in kinds:
            raise SystemExit(f"csrc/sources.txt: unknown kind {kind!r} in line {raw!r}")
        kinds[kind] += sorted(
            os.path.relpath(p, ROOT) for p in glob.glob(str(ROOT / pattern))
        )
    return kinds


def want_cuda() -> bool:
    if os.environ.get("FORCE_CPU", "0") == "1":
        return False
    has_toolkit = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if not has_toolkit:
            raise SystemExit(
                "FORCE_CUDA=1 needs nvcc (CUDA_HOME) and a CUDA build of torch; found "
                f"CUDA_HOME={cpp_extension.CUDA_HOME}, torch.version.cuda={torch.version.cuda}"
            )
        return True
    return has_toolkit and torch.cuda.is_available()


def openmp_flags() -> list[str]:
    """Use OpenMP only when torch itself runs on it, so that at::parallel_for
    in our kernels shares torch's one OpenMP runtime (libgomp loaded by torch)."""
    info = torch.__config__.parallel_info()
    if sys.platform == "darwin" or "backend: OpenMP" not in info:
        return []
    if "OpenMP not found" in info:
        return []
    return ["-fopenmp", "-DAT_PARALLEL_OPENMP=1"]


def make_extension():
    sources = read_sources()
    debug = os.environ.get("PST_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # no fused multiply-add: distances must round the same on every machine (kd-tree bounds rely on it)
    cxx = opt + ["-std=c++20", "-Wall", "-Wno-unknown-pragmas", "-ffp-contract=off"] + openmp_flags()
    files = sources["cpu"] + sources["python"]
    extra = {"cxx": cxx}
    if want_cuda():
        files += sources["cuda"]
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        nvcc = opt + ["-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
        if not arch:
            # Hopper by default; TORCH_CUDA_ARCH_LIST overrides (cpp_extension reads it).
            nvcc += ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90"]
        extra["nvcc"] = nvcc
        ext_cls = cpp_extension.CUDAExtension
    else:
        ext_cls = cpp_extension.CppExtension
    return ext_cls(
        name="pst._C",
        sources=files,
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"] if "-fopenmp" in cxx else [],
        py_limited_api=False,
    )



class BuildPyWithConfigs(build_py):
    """Also ships the repository's configs/*.yaml as pst/configs/ in wheels (pst.config looks there)."""

    def run(self):
        super().run()
        dst = Path(self.build_lib) / "pst" / "configs"
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted((ROOT / "configs").glob("*.yaml")):
            shutil.copy2(f, dst / f.name)


setup(
    ext_modules=[make_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True), "build_py": BuildPyWithConfigs},
)
