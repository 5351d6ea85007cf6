"""Pseudo-labels on disk (``pst pseudo-label``): the labels of :mod:`pst.train.pseudo`,
made image by image and written as PNG files with an index of checksums.

Each image is computed on its own, seeded per image, with the checkpoint's fixed class prior,
so that the files do not depend on batching, threads or interruptions; the index makes reruns
verifiable (:func:`write_pseudo_labels`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from typing import Iterator, Sequence

import torch

from pst.train.infer import embedding_instances, eval_chunks, eval_view, objectness_probs
from pst.train.pseudo import ClassPrior, SemanticPseudoSettings, gate_things, semantic_pseudo_labels

__all__ = ["write_pseudo_labels", "PSEUDO_FORMAT", "PSEUDO_KINDS", "INDEX_NAME", "PARTIAL_NAME"]

logger = logging.getLogger(__name__)

PSEUDO_FORMAT = "pst-pseudo-labels/2"
PSEUDO_KINDS = ("semantic", "confidence", "instances")  # NAME_<kind>.png, written in this order
INDEX_NAME = "index.json"  # written last, once every image is done
PARTIAL_NAME = "index.partial.json"  # the progress of an unfinished run


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))


@contextlib.contextmanager
def _reproducible_kernels(device: torch.device) -> Iterator[None]:
    """Kernels whose results do not depend on the machine's load: on CPU one intra-op thread
    (oneDNN's convolutions split their reductions by thread count, which changes the last bits
    of the logits), on CUDA deterministic cuDNN algorithms without autotuning."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
    else:
        cudnn = torch.backends.cudnn
        before = cudnn.benchmark, cudnn.deterministic
        cudnn.benchmark, cudnn.deterministic = False, True
        try:
            yield
        finally:
            cudnn.benchmark, cudnn.deterministic = before


@torch.no_grad()
def _image_pseudo_labels(net, keys: Sequence[str], cfg, prior: ClassPrior | None, image: torch.Tensor,
                         name: str) -> dict:
    """The pseudo-labels of one image [3, H, W], as the arrays ``write_pseudo_labels`` writes.

    Only this image enters the networks (in eval mode), the thresholds use the fixed prior of
    the checkpoint, and the random view windows and anchor draws are seeded from ``cfg.seed``
    and ``name``: the result depends on (network, image, name, settings) alone.
    """
    import numpy as np

    from pst.train.data import step_generator

    st = cfg.selftrain
    x = image[None]
    sp = semantic_pseudo_labels(net.semantic, x, prior, SemanticPseudoSettings.from_config(st),
                                generator=step_generator(cfg.seed, "pseudo-label", "views", name), update_prior=False)
    anchor_seed = step_generator(cfg.seed, "pseudo-label", "anchors", name).initial_seed()
    out = net(x, semantic=False, keys=keys)["instance"]
    objs = objectness_probs(out, keys)
    sp = sp._replace(labels=gate_things(sp.labels, objs, {k: net.groups[k] for k in keys}, st.thing_objectness))
    inst, _ = embedding_instances(out, net.groups, keys, sp.labels, sp.confidence, st.instances, seed=anchor_seed,
                                  objectness=objs)
    if inst.numel() and int(inst.max()) > 65535:
        raise ValueError(f"image {name!r}: {int(inst.max())} instances do not fit the uint16 instance PNG "
                         f"(at most 65535)")
    return {"semantic": sp.labels[0].cpu().numpy().astype(np.uint8),
            "confidence": (sp.confidence[0].clamp(0, 1) * 255).round().cpu().numpy().astype(np.uint8),
            "instances": inst[0].cpu().numpy().astype(np.uint16)}


def _tensor_sha256(t: torch.Tensor) -> str:
    h = hashlib.sha256(repr((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _PseudoIndex:
    """The record of a pseudo-label folder: the settings, and per image its name, the SHA-256
    of its input image and of its three files.

    ``index.partial.json`` holds the progress of a run (rewritten atomically now and then);
    ``index.json`` is written once every image is done, and the partial one removed. An
    image counts as done only when its entry matches the settings, the image and the bytes
    of its files; everything else is redone.
    """

    def __init__(self, out_dir, settings: dict, checkpoint: str):
        self.out_dir = out_dir
        self.settings = settings
        self.checkpoint = checkpoint
        self.entries: dict[str, dict] = {}
        self.final: dict | None = None  # the index.json found, as read
        self.seen: dict[str, str] = {}  # stem -> image name, in this run
        self.partial_written = False
        self.dirty = False
        self.last_flush = time.monotonic()
        self.redo = {"no entry": 0, "files changed": 0}
        self.found = False  # an index of an earlier run was read

    def load(self) -> None:
        """Read index.json and index.partial.json; refuse either when made with other settings."""
        for name in (INDEX_NAME, PARTIAL_NAME):
            path = self.out_dir / name
            if not path.is_file():
                continue
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: not a readable pseudo-label index ({exc}); pass --overwrite "
                                 f"(resume=False) to redo every image, or write to another folder") from exc
            if not isinstance(doc, dict) or doc.get("format") != PSEUDO_FORMAT:
                raise ValueError(f"{path} is not a {PSEUDO_FORMAT} index (an older pst wrote it, without "
                                 f"checksums): pass --overwrite (resume=False) to redo every image, "
                                 f"or write to another folder")
            theirs = doc.get("settings")
            if theirs != self.settings:
                theirs = theirs if isinstance(theirs, dict) else {}
                diff = sorted(k for k in set(theirs) | set(self.settings) if theirs.get(k) != self.settings.get(k))
                shown = "; ".join(f"{k}: {theirs.get(k)!r} there, {self.settings.get(k)!r} now" for k in diff)
                raise ValueError(f"{path} was written with other settings ({shown}): pass --overwrite "
                                 f"(resume=False) to redo every image, or write to another folder")
            self.found = True
            entries = doc.get("entries")
            if isinstance(entries, dict):
                self.entries.update(entries)
            if name == INDEX_NAME:
                self.final = doc

    def clear(self) -> None:
        """Start afresh (``--overwrite``): forget and delete the indexes found."""
        for name in (INDEX_NAME, PARTIAL_NAME):
            (self.out_dir / name).unlink(missing_ok=True)

    def claim(self, stem: str, name: str) -> None:
        if stem in self.seen:
            raise ValueError(f"images {self.seen[stem]!r} and {name!r} would both be written as {stem}_*.png "
                             f"in {self.out_dir}: the dataset's image names should stay distinct once "
                             f"reduced to letters, digits and '-_.'")
        self.seen[stem] = name

    def _files_match(self, stem: str, sums) -> bool:
        from pst.io import file_sha256

        if not isinstance(sums, dict):
            return False
        for kind in PSEUDO_KINDS:
            path = self.out_dir / f"{stem}_{kind}.png"
            if not path.is_file() or file_sha256(path) != sums.get(kind):
                return False
        return True

    def done(self, stem: str, name: str, image_sha256: str) -> bool:
        """Whether the files of this image are those its entry records (else count why not)."""
        e = self.entries.get(stem)
        if not isinstance(e, dict):
            self.redo["no entry"] += 1
            return False
        if e.get("name") == name and e.get("image_sha256") == image_sha256 and self._files_match(stem, e.get("sha256")):
            return True
        logger.warning("%s: the files of image %r differ from its entry in the index (changed, truncated or "
                       "from another image since): redoing it", self.out_dir, name)
        self.redo["files changed"] += 1
        return False

    def begin(self) -> None:
        """Call before writing an image's files: the settings are on disk before any file of this run."""
        if not self.partial_written:
            self._write(PARTIAL_NAME, complete=False)

    def record(self, stem: str, entry: dict) -> None:
        self.entries[stem] = entry
        self.dirty = True

    def flush(self, every: float) -> None:
        if self.dirty and time.monotonic() - self.last_flush >= every:
            self._write(PARTIAL_NAME, complete=False)

    def _doc(self, complete: bool) -> dict:
        entries = dict(sorted(self.entries.items(), key=lambda kv: (kv[1].get("index", -1), kv[0])))
        return {"format": PSEUDO_FORMAT, "complete": complete, "checkpoint": self.checkpoint,
                "settings": self.settings, "files": [f"{{name}}_{k}.png" for k in PSEUDO_KINDS],
                "images": list(entries), "entries": entries}

    def _write(self, name: str, *, complete: bool) -> None:
        from pst.io import write_json

        write_json(self.out_dir / name, self._doc(complete))
        self.partial_written = self.partial_written or name == PARTIAL_NAME
        self.dirty = False
        self.last_flush = time.monotonic()

    def finish(self) -> None:
        """Write index.json (unless the one found already says exactly this) and drop the partial one.
        Entries of images outside this run (an earlier, longer run) stay when their files still match."""
        for stem in [s for s in self.entries if s not in self.seen]:
            if not self._files_match(stem, self.entries[stem].get("sha256") if isinstance(self.entries[stem], dict)
                                     else None):
                logger.warning("%s: dropping image %s from the index: its files changed since it was written",
                               self.out_dir, stem)
                del self.entries[stem]
        if self._doc(True) != self.final:
            self._write(INDEX_NAME, complete=True)
        (self.out_dir / PARTIAL_NAME).unlink(missing_ok=True)


def _pseudo_settings(checkpoint, cfg, which: str, mode: str, dataset: str, device: torch.device) -> dict:
    """What the files of ``write_pseudo_labels`` are a function of, besides the image: the
    checkpoint's bytes (network, prior and config), the options, the device type and torch's
    version (a kernel may change its last bits between versions)."""
    import dataclasses

    from pst.io import file_sha256

    st = cfg.selftrain
    s = {"checkpoint_sha256": file_sha256(checkpoint), "which": which, "mode": mode, "dataset": dataset,
         "device": device.type, "torch": torch.__version__, "seed": cfg.seed, "n_views": st.n_views,
         "view_zoom": st.view_zoom, "view_flip": st.view_flip, "threshold_min": st.threshold_min,
         "threshold_scale": st.threshold_scale, "prior_beta": st.prior_beta,
         "instances": dataclasses.asdict(st.instances), "eval_size": cfg.data.eval_size}
    return json.loads(json.dumps(s))  # as it reads back from the index (tuples -> lists)


def write_pseudo_labels(checkpoint, out_dir, *, dataset: str = "target", which: str = "teacher",
                        mode: str | None = None, resume: bool = True, limit: int = 0, batch_size: int = 4,
                        device: str = "cpu", progress: bool = True, flush_every: float = 5.0) -> dict:
    """Write the pseudo-labels of a dataset to disk (``pst pseudo-label``), resumably.

    For every image ``NAME`` of ``cfg.data.<dataset>``: ``NAME_semantic.png`` (uint8 train
    ids, 255 = below threshold), ``NAME_confidence.png`` (uint8, confidence x 255) and
    ``NAME_instances.png`` (uint16 instance ids, 0 = none), each written atomically.

    The files are a function of (checkpoint, image, settings) alone, byte for byte: every
    image goes through the networks on its own, with one CPU thread (or deterministic
    cuDNN); its view windows and anchor draws are seeded from the config's seed and the
    image's name; the class thresholds use the checkpoint's class prior, not a batch's. So
    neither ``batch_size``, the thread count nor an interruption changes them.

    ``index.json``, written last, records the settings (with the checkpoint's SHA-256) and
    per image the SHA-256 of the input image and of its three files; ``index.partial.json``
    records an unfinished run's progress (saved after a batch, at most every ``flush_every``
    seconds). With ``resume``, an image is skipped only when its entry matches its image and
    the bytes of its files; any other image (no entry: e.g. written just before a kill; a
    truncated or changed file) is redone. A folder indexed with other settings (another
    checkpoint, dataset, mode, device...) is refused; ``resume=False`` redoes every image.

    Args:
        checkpoint: a self-training (or source) checkpoint; ``which`` = "teacher" uses
            the EMA teacher when the checkpoint has one, "model" the student.
        dataset: "target", "source" or "target_val" (from the checkpoint's config).
        mode: category mode of the instance models (default: the config's first).
        batch_size: images between two saves of the progress (not a network batch).
    Returns:
        ``{"written": n, "skipped": n, "images": N, "out": str}``.
    """
    from pathlib import Path

    from pst.io import png_bytes, remove_stale_temps, write_bytes
    from pst.train.checkpoint import load_checkpoint, net_from_checkpoint
    from pst.train.data import build_dataset

    if dataset not in ("target", "source", "target_val"):
        raise ValueError(f"dataset should be 'target', 'source' or 'target_val', got {dataset!r}")
    if which not in ("teacher", "model"):
        raise ValueError(f"which should be 'teacher' or 'model', got {which!r}")
    for key, value, low in (("batch_size", batch_size, 1), ("limit", limit, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} should be an int >= {low}, got {value!r}")
    if isinstance(flush_every, bool) or not isinstance(flush_every, (int, float)) or not flush_every >= 0:
        raise ValueError(f"flush_every should be a number of seconds >= 0, got {flush_every!r}")
    out_dir = Path(out_dir)
    remove_stale_temps(out_dir)
    dev = torch.device(device)
    state = load_checkpoint(checkpoint, map_location=dev)
    which = which if state.get("teacher") else "model"
    net, cfg = net_from_checkpoint(state, which=which, device=dev)
    mode = mode or cfg.categories[0]
    keys = net.keys_for(mode)
    if not keys:
        raise ValueError(f"checkpoint has no instance models for category mode {mode!r}")
    prior = None
    pstate = state.get("extra", {}).get("prior")
    if pstate is not None and pstate.get("chi") is not None:
        prior = ClassPrior(cfg.space.num_classes)
        prior.load_state_dict(pstate)
    index = _PseudoIndex(out_dir, _pseudo_settings(checkpoint, cfg, which, mode, dataset, dev), str(checkpoint))
    if resume:
        index.load()
        if not index.found and any(out_dir.glob("*_instances.png")):
            logger.info("%s: pseudo-label files but no index (a run killed before saving its progress): "
                        "every image is redone", out_dir)
    else:
        index.clear()
    ds = build_dataset(getattr(cfg.data, dataset), cfg.space, cfg.data.size)
    n = min(len(ds), limit) if limit else len(ds)
    written = skipped = 0
    with _reproducible_kernels(dev):
        for chunk in eval_chunks(ds, n, batch_size, desc="pseudo-labels", progress=progress):
            for i, sample in chunk:
                name = str(sample.get("name", f"{i:06d}"))
                stem = _safe_name(name)
                index.claim(stem, name)
                image_sha256 = _tensor_sha256(sample["image"])
                if resume and index.done(stem, name, image_sha256):
                    skipped += 1
                    continue
                index.begin()
                arrays = _image_pseudo_labels(net, keys, cfg, prior, eval_view(sample, cfg)["image"].to(dev), name)
                sums = {}
                for kind in PSEUDO_KINDS:
                    data = png_bytes(arrays[kind])
                    write_bytes(out_dir / f"{stem}_{kind}.png", data)
                    sums[kind] = hashlib.sha256(data).hexdigest()
                index.record(stem, {"index": i, "name": name, "image_sha256": image_sha256, "sha256": sums})
                written += 1
            index.flush(flush_every)
    if index.found and written:
        logger.info("%s: %d image(s) verified and kept, %d (re)done (%d without an entry, %d whose files changed)",
                    out_dir, skipped, written, index.redo["no entry"], index.redo["files changed"])
    index.finish()
    return {"written": written, "skipped": skipped, "images": n, "out": str(out_dir)}
