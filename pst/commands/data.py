"""``pst data``: dataset utilities.

    pst data check --dataset cityscapes --root /data/cityscapes [--split val] [--limit N] [--json report.json]

``check`` scans the tree in the dataset's released layout (pst.data), lists every missing
folder or file, then decodes the samples (all, or the first ``--limit``) and lists every
unreadable image, size mismatch and out-of-range label id, each with the file it concerns.
Exit code 0 when the tree is usable as is, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="dataset utilities (check a dataset tree)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="data_command", metavar="<action>")
    sub.required = True
    c = sub.add_parser("check", help="validate a dataset tree: say what is missing or malformed")
    c.add_argument("--dataset", required=True, choices=["cityscapes", "gta5", "synthia"], help="dataset layout")
    c.add_argument("--root", required=True, type=Path, help="the dataset's root folder")
    c.add_argument("--split", default=None,
                   help="split to check (default: train for cityscapes, all for gta5 / synthia)")
    c.add_argument("--label-space", default=None,
                   help="label space to map to: cityscapes19 or synthia16 (default: the dataset's)")
    c.add_argument("--limit", type=int, default=None,
                   help="decode only the first N samples (default: all; file presence is always checked for all)")
    c.add_argument("--max-lines", type=int, default=50, help="problems listed per kind (default: 50)")
    c.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from pst.data.check import check_dataset
    from pst.io import write_json
    from pst.labels import get_label_space

    space = get_label_space(args.label_space) if args.label_space else None
    if args.limit is not None and args.limit < 0:
        raise ValueError(f"--limit should be >= 0, got {args.limit}")
    report = check_dataset(args.dataset, args.root, args.split, limit=args.limit, label_space=space,
                           progress=not args.no_progress)
    print(report.format(max_lines=args.max_lines))
    if args.json is not None:
        write_json(args.json, report.to_dict())
        logger.info("wrote %s", args.json)
    return 0 if report.ok else 1
