"""``pst pseudo-label``: write a dataset's pseudo-labels (semantic, confidence, instances) to disk."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("pseudo-label", help="write the pseudo-labels of a dataset to disk (resumable)",
                       description="Teacher pseudo-labels of every image: NAME_semantic.png (train ids, 255 = "
                                   "ignored), NAME_confidence.png, NAME_instances.png (uint16), index.json "
                                   "(written last: settings and per-file SHA-256). The files depend on the "
                                   "checkpoint, the image and the settings only, not on --batch-size, threads or "
                                   "interruptions. A rerun keeps the images whose files match the index, redoes "
                                   "the rest, and refuses a folder indexed with other settings unless --overwrite.")
    p.add_argument("--checkpoint", required=True, help="selftrain.pt (teacher) or any pst checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--dataset", default="target", choices=["target", "source", "target_val"],
                   help="which dataset of the checkpoint's config (default: target)")
    p.add_argument("--which", default="teacher", choices=["teacher", "model"],
                   help="teacher (EMA, default) or model (the student)")
    p.add_argument("--mode", default=None, help="category mode of the instance models (default: the config's first)")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="images between two saves of the progress (the network sees one image at a time)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="redo every image, whatever an index in --out says")
    p.set_defaults(func=run)


def run(args) -> int:
    from pst.train.pseudo_files import write_pseudo_labels
    from pst.train.runlock import hold_run_folder

    with hold_run_folder(args.out):  # one writer per folder (pst.train.runlock)
        r = write_pseudo_labels(args.checkpoint, args.out, dataset=args.dataset, which=args.which, mode=args.mode,
                                resume=not args.overwrite, limit=args.limit, batch_size=args.batch_size,
                                device=args.device)
    print(json.dumps(r))
    return 0
