"""``pst train source|oracle|selftrain``: one training stage (also under torchrun)."""

from __future__ import annotations

import logging

from pst.commands._common import add_config_args, config_from_args

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("train", help="train one stage: source, oracle or selftrain",
                       description="Supervised training on the source (or the labelled target: oracle), or "
                                   "self-training from a source checkpoint. Runs under torchrun with DDP "
                                   "(gloo on CPU, nccl on GPU): torchrun --nproc_per_node 2 -m pst train ...")
    stages = p.add_subparsers(dest="stage", metavar="<stage>")
    stages.required = True
    helps = {"source": "supervised training on the labelled source",
             "oracle": "supervised training on the labelled target (upper bound)",
             "selftrain": "self-training on the target from a source checkpoint"}
    for stage, text in helps.items():
        q = stages.add_parser(stage, help=text, description=text)
        add_config_args(q, default="toy")
        q.add_argument("--out", required=True, help="run folder; the final checkpoint is OUT/<stage>.pt")
        if stage == "selftrain":
            q.add_argument("--init", default=None, help="source checkpoint (default: OUT/source.pt)")
        q.add_argument("--resume", action="store_true", help="continue from OUT/<stage>/last.pt")
        q.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
        q.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the config's device)")
        q.add_argument("--no-progress", action="store_true")
        q.set_defaults(func=run)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from pst.train.distributed import shutdown

    cfg = config_from_args(args)
    try:
        if args.stage == "selftrain":
            from pst.train.selftrain import self_train

            init = Path(args.init) if args.init else Path(args.out) / "source.pt"
            if not init.is_file():
                raise FileNotFoundError(f"{init}: no source checkpoint (train the source stage first or pass --init)")
            path = self_train(cfg, args.out, init=init, resume=args.resume, max_steps=args.max_steps,
                              device=args.device, progress=not args.no_progress)
        else:
            from pst.train.source import train_supervised

            path = train_supervised(cfg, args.out, stage=args.stage, resume=args.resume, max_steps=args.max_steps,
                                    device=args.device, progress=not args.no_progress)
    finally:
        shutdown()
    logger.info("checkpoint: %s", path if path is not None else f"{args.out}/{args.stage}/last.pt (stopped early)")
    return 0
