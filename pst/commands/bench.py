"""``pst bench NAME [ARGS...]``: run pst.bench.<NAME>.main(ARGS)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def _available() -> list[str]:
    import pst.bench

    return sorted(m.name for m in pkgutil.iter_modules(pst.bench.__path__) if not m.name.startswith("_"))


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark (cluster, morph, ...)",
                       description="Benchmarks live in pst.bench; each writes JSON + Markdown under "
                                   "benchmarks/results/ (or --out). Arguments after NAME go to the benchmark.")
    p.add_argument("name", help="benchmark name (a module of pst.bench)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=run)


def run(args) -> int:
    names = _available()
    if args.name not in names:
        raise ValueError(f"unknown benchmark {args.name!r}; available: {', '.join(names) or 'none'}")
    mod = importlib.import_module(f"pst.bench.{args.name}")
    return int(mod.main(list(args.args)) or 0)
