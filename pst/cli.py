"""The ``pst`` command: ``pst <subcommand> ...``; ``pst <subcommand> -h`` for each one's options.

Errors end the command with one line on stderr, ``pst <subcommand>: error: <message>``, and a
non-zero exit code: 2 for bad input (config, arguments, files that are not what they should
be), 1 when the system or another process stands in the way (full disk, permission denied,
read-only folder, a run folder held by another pst process). ``--log-level DEBUG`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pst.train.runlock import RunFolderBusy

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
        return _error(args, exc, 2)
    except (OSError, RunFolderBusy) as exc:
        # the system refused (pst.io.WriteError names the file and the cause) or the run
        # folder is another process's: one line too
        return _error(args, exc, 1)
    return int(code or 0)


def _error(args, exc: BaseException, code: int) -> int:
    logging.getLogger("pst").debug("error details", exc_info=True)
    text = str(exc)
    if isinstance(exc, OSError) and exc.strerror and exc.filename and text.startswith("[Errno"):
        # a bare OSError: "[Errno 13] Permission denied: 'x'" -> "permission denied: x"
        text = f"{exc.strerror[:1].lower()}{exc.strerror[1:]}: {exc.filename}"
    print(f"pst {args.command}: error: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
