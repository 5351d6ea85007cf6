"""``pst export``: predictions of a checkpoint on a dataset in the Cityscapes formats."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint's predictions in Cityscapes formats",
                       description="Panoptic (PNG + panoptic.json), semantic (labelIds PNG) and instance "
                                   "(txt + mask PNGs) predictions, as cityscapesScripts and `pst evaluate "
                                   "--pred` read them.")
    p.add_argument("--checkpoint", required=True, help="a pst checkpoint (.pt)")
    p.add_argument("--out", required=True, help="prediction folder")
    p.add_argument("--dataset", default="target_val", choices=["target_val", "target", "source"],
                   help="which dataset of the checkpoint's config (default: target_val)")
    p.add_argument("--mode", default=None, help="category mode (default: the config's first)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    p.add_argument("--formats", default="panoptic,semantic,instance",
                   help="comma-separated subset of panoptic,semantic,instance")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from pst.train.export import export_predictions

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    r = export_predictions(args.checkpoint, args.out, dataset=args.dataset, mode=args.mode, limit=args.limit,
                           formats=formats, device=args.device)
    print(json.dumps(r))
    return 0
