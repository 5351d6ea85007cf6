"""``pst evaluate``: score predictions against Cityscapes ground truth, or a checkpoint on toy scenes.

    pst evaluate --gt CITYSCAPES_ROOT --pred PRED_DIR [--split val] --out results.json
    pst evaluate --checkpoint CKPT_OR_RUN_DIR [--toy-seed S] [--toy-style NAME] [--n-scenes N] --out results.json

The first reads ``CITYSCAPES_ROOT/gtFine/<split>/<city>/*_gtFine_{labelIds,instanceIds}.png``
and the prediction folder described in :mod:`pst.formats.cityscapes`, prints a table and
writes JSON with ``PQ``, ``SQ``, ``RQ``, ``PQ_things``, ``PQ_stuff``, ``PQ_dagger``, ``mIoU``,
``AP``/``AP50`` (when ``PRED_DIR/instance`` exists) and ``per_class``, as fractions in
[0, 1] (null where undefined).

The second evaluates on the run's held-out set, ``data.target_val`` of the checkpoint's
config (the scenes of the demo's metrics.json and of the self-training curve); each
``--toy-*`` / ``--n-scenes`` option given replaces that field (toy scenes).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import Any

from pst.io import write_json

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="PQ / PQ† / mIoU / AP of predictions (Cityscapes format) or of a checkpoint (toy scenes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("Cityscapes-format predictions")
    src.add_argument("--gt", type=Path, help="Cityscapes root (holds gtFine/<split>/<city>/)")
    src.add_argument("--pred", type=Path, help="prediction folder: panoptic/ + panoptic.json [semantic/] [instance/]")
    src.add_argument("--split", default="val", help="gtFine split to evaluate (default: val)")
    src.add_argument("--label-space", default="cityscapes19",
                     help="label space of the evaluation: cityscapes19 (default), synthia16, toy")
    ck = p.add_argument_group("checkpoint on its held-out set (or other toy scenes)")
    ck.add_argument("--checkpoint", type=Path, help="checkpoint file or run folder")
    ck.add_argument("--toy-seed", type=int, default=None,
                    help="seed of the toy scenes (default: the config's data.target_val.seed)")
    ck.add_argument("--toy-style", default=None,
                    help="toy style name (default: the config's data.target_val.style)")
    ck.add_argument("--n-scenes", type=int, default=None,
                    help="number of toy scenes (default: the config's data.target_val.n)")
    p.add_argument("--device", default="cpu", help="torch device for the metrics / model (default: cpu)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is not None:
        if args.gt is not None or args.pred is not None:
            raise ValueError("use either --checkpoint or --gt/--pred, not both")
        results = run_checkpoint(args)
        label_space = None
    else:
        if args.gt is None or args.pred is None:
            raise ValueError("pass --gt CITYSCAPES_ROOT and --pred PRED_DIR (or --checkpoint)")
        from pst.formats.cityscapes import evaluate_dirs
        from pst.labels import get_label_space

        label_space = get_label_space(args.label_space)
        results = evaluate_dirs(args.gt, args.pred, split=args.split, label_space=label_space,
                                device=args.device, progress=not args.quiet)
    if not args.quiet:
        _print_results(results, label_space)
    # evaluate_checkpoint gets ``out`` itself; write only what nobody wrote yet
    if args.out is not None and (args.checkpoint is None or not args.out.exists()):
        from pst.formats.cityscapes import to_json_safe

        write_json(args.out, to_json_safe(results))
        logger.info("wrote %s", args.out)
    return 0


def run_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    """Call pst.train.evaluate.evaluate_checkpoint (imported only now: it pulls in the models)."""
    try:
        mod = importlib.import_module("pst.train.evaluate")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("pst.train"):
            raise ValueError("--checkpoint needs pst.train.evaluate.evaluate_checkpoint, which is not "
                             "available in this installation") from exc
        raise
    fn = getattr(mod, "evaluate_checkpoint", None)
    if fn is None:
        raise ValueError("pst.train.evaluate has no evaluate_checkpoint function")
    kwargs: dict[str, Any] = dict(device=args.device, out=args.out)
    for key, value in (("seed", args.toy_seed), ("style", args.toy_style), ("n_scenes", args.n_scenes)):
        if value is not None:  # else the pipeline's default: the checkpoint's data.target_val
            kwargs[key] = value
    return fn(args.checkpoint, **kwargs)


def _print_results(results: dict[str, Any], label_space) -> None:
    from pst.formats.cityscapes import results_table

    if "per_class" in results and "PQ" in results:
        print(results_table(results, label_space))
    else:  # evaluate_checkpoint: {stage: {metric: value}} (or flat)
        for key, value in results.items():
            if isinstance(value, dict):
                flat = "  ".join(f"{k} {100 * v:.1f}" for k, v in value.items()
                                 if isinstance(v, float) and k in _SUMMARY_KEYS)
                print(f"{key:<12} {flat}")
            elif not isinstance(value, list):
                print(f"{key}: {value}")


_SUMMARY_KEYS = ("PQ", "PQ_dagger", "SQ", "RQ", "PQ_things", "PQ_stuff", "mIoU", "AP", "AP50")
