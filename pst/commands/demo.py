"""``pst demo``: source training, oracle, self-training, evaluation and report on the toy scenes."""

from __future__ import annotations

import json
import logging

from pst.commands._common import add_config_args, config_from_args

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole pipeline on the toy scenes and write a report",
                       description="Train on the toy source, self-train on the toy target, evaluate source-only, "
                                   "self-trained and oracle models on held-out target scenes, write "
                                   "OUT/metrics.json, OUT/report.md and the checkpoints.")
    add_config_args(p, default="toy")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--resume", action="store_true", help="skip finished stages, continue an interrupted one")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pst.train.demo import run_demo

    cfg = config_from_args(args)
    m = run_demo(cfg, args.out, resume=args.resume, progress=not args.no_progress, device=args.device)
    summary = {k: {kk: round(m[k][kk], 4) for kk in ("PQ", "PQ_things", "mIoU", "AP")}
               for k in ("source_only", "self_trained", "oracle") if k in m}
    cc = m["cc_baseline"]
    print(json.dumps({"out": args.out, **summary, "gap_closed": m.get("gap_closed"),
                      "PQ_things_gain_over_cc": {k: round(v, 4) for k, v in cc["PQ_things_gain"].items()},
                      "wall_seconds": round(m["wall_seconds"], 1)}, indent=2))
    return 0
