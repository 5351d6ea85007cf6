"""Argument helpers shared by the training subcommands (config + key=value overrides)."""

from __future__ import annotations

import argparse

__all__ = ["add_config_args", "config_from_args"]


def add_config_args(p: argparse.ArgumentParser, default: str | None = "toy") -> None:
    p.add_argument("--config", default=default,
                   help=f"YAML config: a path or a shipped name (toy, toy_ccm, synthia_cityscapes, ...; "
                        f"default: {default})")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. source.steps=100 data.batch_size=2 categories=[base,ccm]")


def config_from_args(args):
    from pst.config import load_config

    return load_config(args.config, args.overrides)
