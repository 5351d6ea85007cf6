"""Time of one self-training iteration of a config, and its share spent on instance pseudo-labels.

No dataset is needed: small SYNTHIA and Cityscapes trees of synthetic images (the files' real
layouts: street-like label maps with cars and persons as rectangles) are written to a temporary
folder at the config's training size, the network is built without pretrained weights (the
timing does not depend on them) and saved as the source checkpoint, then pst's own
``self_train`` runs ``warmup`` steps, stops, resumes and runs ``steps`` more. The reported times
are those of the resumed steps only (pst's per-part timing, ``extra["timing_sum"]``), so
start-up, cuDNN autotuning and the allocator's first growth stay out.

    python benchmarks/gpu/bench_selftrain.py --device cuda            # synthia_cityscapes, 512 x 1024
    python benchmarks/gpu/bench_selftrain.py --device cpu --size 64 128 --steps 1 --warmup 1   # dry run
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# SYNTHIA class ids (R channel) of the fake scenes: road, sidewalk, building, sky, vegetation,
# car and person (things, with instance ids in G)
_SYN_STUFF = (3, 4, 2, 1, 6)
_SYN_CAR, _SYN_PERSON = 8, 10
# Cityscapes label ids: road, sidewalk, building, sky, vegetation; car 26, person 24
_CS_STUFF = (7, 8, 11, 23, 21)
_CS_CAR, _CS_PERSON = 26, 24


def _scene(rng: np.random.Generator, h: int, w: int, stuff, car: int, person: int):
    """(class map, instance map) of a street-like scene: stuff bands, then cars and persons."""
    cls = np.empty((h, w), np.int64)
    bands = np.sort(rng.integers(0, h, size=len(stuff) - 1))
    edges = np.concatenate([[0], bands, [h]])
    for k, c in enumerate(stuff):
        cls[edges[k]:edges[k + 1]] = c
    ins = np.zeros((h, w), np.int64)
    n = 0
    for c, count, (lo, hi) in ((car, 8, (h // 12, h // 4)), (person, 10, (h // 10, h // 3))):
        for _ in range(count):
            hh = int(rng.integers(max(lo, 2), max(hi, 3)))
            ww = hh * 2 if c == car else max(1, hh // 3)
            y, x = int(rng.integers(0, max(1, h - hh))), int(rng.integers(0, max(1, w - ww)))
            n += 1
            cls[y:y + hh, x:x + ww] = c
            ins[y:y + hh, x:x + ww] = n
    return cls, ins


def _rgb(rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
    colours = rng.integers(0, 256, size=(int(cls.max()) + 1, 3))
    img = colours[cls] + rng.integers(-20, 21, size=cls.shape + (3,))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_trees(root: Path, h: int, w: int, n: int, seed: int = 0) -> tuple[Path, Path]:
    """SYNTHIA (RGB/, GT/LABELS/ 16-bit R = class, G = instance) and Cityscapes (leftImg8bit/,
    gtFine/ labelIds + instanceIds, train and val) trees of n synthetic h x w scenes each."""
    rng = np.random.default_rng(seed)
    syn, cs = root / "synthia", root / "cityscapes"
    (syn / "RGB").mkdir(parents=True, exist_ok=True)
    (syn / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for k in range(n):
        cls, ins = _scene(rng, h, w, _SYN_STUFF, _SYN_CAR, _SYN_PERSON)
        Image.fromarray(_rgb(rng, cls)).save(syn / "RGB" / f"{k:07d}.png")
        bgr = np.stack([np.zeros_like(cls), ins, cls], axis=-1).astype(np.uint16)
        cv2.imwrite(str(syn / "GT" / "LABELS" / f"{k:07d}.png"), bgr)
    for split in ("train", "val"):
        for k in range(n):
            cls, ins = _scene(rng, h, w, _CS_STUFF, _CS_CAR, _CS_PERSON)
            stem = f"aachen_{k:06d}_000019"
            img_dir = cs / "leftImg8bit" / split / "aachen"
            gt_dir = cs / "gtFine" / split / "aachen"
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_rgb(rng, cls)).save(img_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(cls.astype(np.uint8)).save(gt_dir / f"{stem}_gtFine_labelIds.png")
            inst = np.where(ins > 0, cls * 1000 + ins, cls).astype(np.uint16)
            cv2.imwrite(str(gt_dir / f"{stem}_gtFine_instanceIds.png"), inst)
    return syn, cs


def selftrain_iteration(config: str = "synthia_cityscapes", *, device: str = "cuda", size=(512, 1024),
                        steps: int = 3, warmup: int = 2, n_images: int = 4, workdir: Path | None = None,
                        extra_overrides=()) -> dict:
    """Seconds per self-training iteration (mean over `steps` steps after `warmup` steps) and the
    share of each part, pst's own timing (pst.train.selftrain.TIMING_KEYS)."""
    import torch  # noqa: PLC0415

    from pst.config import config_to_dict, load_config  # noqa: PLC0415
    from pst.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: PLC0415
    from pst.train.model import build_panoptic_net  # noqa: PLC0415
    from pst.train.selftrain import self_train  # noqa: PLC0415

    h, w = size
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        syn, cs = make_trees(tmp / "data", h, w, n_images)
        overrides = [f"data.source.root={syn}", f"data.target.root={cs}", f"data.target_val.root={cs}",
                     f"data.size=[{h},{w}]", f"data.eval_size=[{h},{w}]", "data.num_workers=0", "data.cache=false",
                     f"device={device}", f"selftrain.steps={warmup + steps}", "selftrain.eval_every=0",
                     "selftrain.bn_recalibrate=0", f"selftrain.checkpoint_every={warmup + steps + 1}",
                     f"selftrain.log_every={warmup + steps + 1}", *extra_overrides]
        cfg = load_config(config, overrides)
        torch.manual_seed(0)
        net = build_panoptic_net(cfg)
        init = tmp / "source.pt"
        save_checkpoint(init, {"stage": "source", "config": config_to_dict(cfg), "step": 0, "model": net.state_dict()})
        del net
        setup_s = time.perf_counter() - t0
        out = tmp / "run"
        self_train(cfg, out, init=init, max_steps=warmup, device=device, progress=False)
        first = load_checkpoint(out / "selftrain" / "last.pt", require=("extra",))["extra"]
        self_train(cfg, out, init=init, resume=True, device=device, progress=False)
        done = load_checkpoint(out / "selftrain.pt", require=("extra",))["extra"]
    n = done["timed_steps"] - first["timed_steps"]
    per = {k: (done["timing_sum"][k] - first["timing_sum"][k]) / max(n, 1) for k in done["timing_sum"]}
    it = max(per["iteration"], 1e-12)
    return {
        "config": config, "device": device, "size": [h, w], "batch_size": cfg.data.batch_size,
        "steps_timed": n, "warmup_steps": warmup, "setup_s": setup_s,
        "seconds_per_iteration": per,
        "instance_pseudo_share": per["instance_pseudo"] / it,
        "instance_pseudo_share_with_teacher": (per["instance_pseudo"] + per["teacher_instance"]) / it,
        "method": cfg.selftrain.instances.method,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="synthia_cityscapes")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, nargs=2, default=(512, 1024))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: print only)")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = selftrain_iteration(args.config, device=args.device, size=tuple(args.size), steps=args.steps,
                              warmup=args.warmup, extra_overrides=args.overrides)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
