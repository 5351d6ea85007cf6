"""The ``pst`` command: ``pst <subcommand> ...``; ``pst <subcommand> -h`` for each one's options."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Each module defines register(subparsers) -> None, which adds its parser and sets
# ``func`` (called with the parsed namespace; returns an exit code or None).
SUBCOMMAND_MODULES = (
    "pst.commands.demo",
    "pst.commands.train",
    "pst.commands.pseudo_label",
    "pst.commands.evaluate",
    "pst.commands.export",
    "pst.commands.data",
    "pst.commands.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pst",
        description="Self-trained panoptic segmentation: train on labelled synthetic scenes, "
        "self-train on unlabelled real ones.",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default: INFO)")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        code = args.func(args)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
        # user errors (bad config, missing files): one clear line, no traceback
        logging.getLogger("pst").debug("error details", exc_info=True)
        print(f"pst {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
