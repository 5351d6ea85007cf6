"""Pseudo-labels of self-training.

Semantic (REFERENCE.md, SAC, Araslanov & Roth 2021): the teacher sees ``n_views``
clean augmented copies of each target image (random zoom in [0.5, 1], flips;
``pst.data.transforms.multi_view``); its softmax outputs are warped back to the image
frame and averaged (``warp_back``). Per image and class c the threshold is
``tau_c = max(0.2, 0.75 * peak_c * (1 - exp(-chi_c / beta)))`` with ``peak_c`` the
highest confidence among pixels predicted c and ``chi_c`` an EMA (0.99) of the mean
teacher probability of c (:class:`ClassPrior`, beta = 1e-3); pixels under it are ignored.

Instance: the teacher's embeddings are clustered inside the thing masks of the semantic
pseudo-label (:func:`pst.cluster.cluster_instances`, objectness anchors), then cleaned
with :func:`pst.morph.refine` and clipped back to their class masks.

On disk (:func:`write_pseudo_labels`, ``pst pseudo-label``): the same computation image by
image, seeded per image, with the checkpoint's fixed prior, so that the files do not depend
on batching, threads or interruptions; an index with checksums makes reruns verifiable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from typing import Iterator, NamedTuple, Sequence

import torch

from pst.labels import IGNORE
from pst.train.distributed import all_reduce_mean

__all__ = ["ClassPrior", "class_thresholds", "SemanticPseudo", "SemanticPseudoSettings",
           "semantic_pseudo_labels", "gate_things",
           "instance_pseudo_labels", "instance_scores", "write_pseudo_labels"]

logger = logging.getLogger(__name__)


class ClassPrior:
    """EMA ``chi`` [C] of the mean teacher probability per class (the class prior).

    The first update sets it; later ones do ``chi = m * chi + (1 - m) * mean`` with the
    mean averaged over processes under DDP so that every process holds the same prior.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99):
        if num_classes < 1:
            raise ValueError(f"num_classes should be >= 1, got {num_classes}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum should be in [0, 1], got {momentum}")
        self.num_classes = num_classes
        self.momentum = momentum
        self.chi: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> torch.Tensor:
        """Args: probs [B, C, H, W] softmax. Returns the updated chi [C] float32."""
        if probs.dim() != 4 or probs.shape[1] != self.num_classes:
            raise ValueError(f"probs should be [B, {self.num_classes}, H, W], got {tuple(probs.shape)}")
        mean = all_reduce_mean(probs.float().mean(dim=(0, 2, 3)))
        if self.chi is None:
            self.chi = mean.clone()
        else:
            self.chi = self.momentum * self.chi.to(mean.device) + (1.0 - self.momentum) * mean
        return self.chi

    def state_dict(self) -> dict:
        return {"chi": None if self.chi is None else self.chi.cpu(), "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.chi = None if state["chi"] is None else state["chi"].clone()
        self.momentum = float(state["momentum"])


def class_thresholds(confidence: torch.Tensor, labels: torch.Tensor, chi: torch.Tensor, *,
                     minimum: float = 0.2, scale: float = 0.75, beta: float = 1e-3) -> torch.Tensor:
    """Class-wise thresholds per image (SAC).

    Args:
        confidence: [B, H, W] float, the top softmax probability per pixel.
        labels: [B, H, W] int64, its class.
        chi: [C] float class prior.
    Returns:
        [B, C] float: ``max(minimum, scale * peak_bc * (1 - exp(-chi_c / beta)))``, with
        ``peak_bc`` the highest confidence of class c in image b (0 if absent).
    """
    B = confidence.shape[0]
    C = chi.numel()
    idx = (torch.arange(B, device=labels.device)[:, None] * C + labels.reshape(B, -1)).reshape(-1)
    peak = torch.zeros(B * C, dtype=confidence.dtype, device=confidence.device)
    peak = peak.scatter_reduce(0, idx, confidence.reshape(-1), reduce="amax", include_self=True).view(B, C)
    tau = scale * peak * (1.0 - torch.exp(-chi.to(peak)[None] / beta))
    return tau.clamp_min(minimum)


class SemanticPseudo(NamedTuple):
    """labels [B,H,W] int64 (IGNORE under threshold); confidence [B,H,W] float;
    probs [B,C,H,W] float (fused teacher softmax); argmax [B,H,W] int64 (unthresholded)."""

    labels: torch.Tensor
    confidence: torch.Tensor
    probs: torch.Tensor
    argmax: torch.Tensor


@dataclasses.dataclass(frozen=True)
class SemanticPseudoSettings:
    """How :func:`semantic_pseudo_labels` fuses views and thresholds: ``n_views`` teacher views
    zoomed into ``zoom`` [lo, hi] (flipped at random when ``flip``), thresholds
    ``max(minimum, scale * peak_c * (1 - exp(-chi_c / beta)))``. The defaults are SAC's;
    :meth:`from_config` reads them from ``cfg.selftrain``."""

    n_views: int = 4
    zoom: tuple[float, float] = (0.5, 1.0)
    flip: bool = True
    minimum: float = 0.2
    scale: float = 0.75
    beta: float = 1e-3

    @classmethod
    def from_config(cls, st) -> SemanticPseudoSettings:
        """The settings of a :class:`pst.config.SelfTrainConfig` (``cfg.selftrain``)."""
        return cls(n_views=st.n_views, zoom=tuple(st.view_zoom), flip=st.view_flip, minimum=st.threshold_min,
                   scale=st.threshold_scale, beta=st.prior_beta)


@torch.no_grad()
def semantic_pseudo_labels(teacher, images: torch.Tensor, prior: ClassPrior | None,
                           settings: SemanticPseudoSettings = SemanticPseudoSettings(), *,
                           generator: torch.Generator | None = None, update_prior: bool = True) -> SemanticPseudo:
    """Multi-view fused, class-wise thresholded semantic pseudo-labels.

    Args:
        teacher: forward(x [B,3,h,w]) -> logits [B,C,h,w].
        images: [B, 3, H, W] float in [0, 1] (clean: no photometric noise).
        prior: the class prior, updated with this batch when ``update_prior`` (None: no
            prior, the exp factor is 1).
        settings: views and thresholds (:class:`SemanticPseudoSettings`).
        generator: draws the views' zoom windows and flips.
    """
    if not isinstance(settings, SemanticPseudoSettings):
        raise TypeError(f"settings should be a SemanticPseudoSettings, got {type(settings).__name__}")
    n_views, minimum, scale, beta = settings.n_views, settings.minimum, settings.scale, settings.beta
    B, _, H, W = images.shape
    if n_views > 1:
        from pst.data.transforms import multi_view, warp_back

        views, params = multi_view(images, n_views, zoom=tuple(settings.zoom), flip=settings.flip, generator=generator)
        outs = [torch.softmax(teacher(v).float(), dim=1) for v in views]
        probs = warp_back(outs, params, (H, W))
    else:
        probs = torch.softmax(teacher(images).float(), dim=1)
    probs = probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-12)
    conf, arg = probs.max(dim=1)
    if prior is not None and update_prior:
        chi = prior.update(probs)
    elif prior is not None and prior.chi is not None:
        chi = prior.chi
    else:
        chi = torch.ones(probs.shape[1], device=probs.device)
    tau = class_thresholds(conf, arg, chi.to(probs.device), minimum=minimum, scale=scale, beta=beta)
    keep = conf >= tau.gather(1, arg.reshape(B, -1)).view(B, H, W)
    labels = torch.where(keep, arg, torch.full_like(arg, IGNORE))
    return SemanticPseudo(labels, conf, probs, arg)


@torch.no_grad()
def gate_things(labels: torch.Tensor, objectness: dict[str, torch.Tensor], groups: dict,
                threshold: float) -> torch.Tensor:
    """Semantic pseudo-labels whose thing pixels need the instance branch's agreement.

    A pixel labelled with a thing class becomes ``IGNORE`` where the teacher's objectness
    of an instance model covering that class is below ``threshold``. The objectness
    comes from another network (the U-Net) than the semantic labels, so its errors are
    partly independent: on the toy target, of the pixels a source model labels as things,
    82% of the true thing pixels have objectness > 0.5 against 34% of the stuff pixels.

    Args:
        labels: [B, H, W] int64 semantic pseudo-labels (``IGNORE`` = void).
        objectness: instance model key -> [B, H, W] probabilities in [0, 1].
        groups: key -> (mode, thing ids) of the instance models (``net.groups``).
        threshold: in [0, 1]; 0 leaves the labels as they are.
    Returns:
        [B, H, W] int64, a new tensor.
    """
    from pst.train.objectives import group_mask

    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold should be in [0, 1], got {threshold}")
    drop = torch.zeros_like(labels, dtype=torch.bool)
    if threshold > 0:
        for key, (_, ids) in groups.items():
            if key not in objectness:
                raise ValueError(f"no objectness for instance model {key!r} (have {sorted(objectness)})")
            obj = objectness[key]
            if obj.shape != labels.shape:
                raise ValueError(f"objectness of {key!r} should be {tuple(labels.shape)}, got {tuple(obj.shape)}")
            drop |= group_mask(labels, ids) & (obj < threshold)
    return torch.where(drop, torch.full_like(labels, IGNORE), labels)


@torch.no_grad()
def instance_pseudo_labels(embedding: torch.Tensor, objectness: torch.Tensor | None, semantic: torch.Tensor,
                           thing_ids: Sequence[int], icfg, *, seed: int = 0) -> torch.Tensor:
    """Instance pseudo-labels of one instance model.

    Args:
        embedding: [B, D, H, W] float teacher embeddings.
        objectness: [B, H, W] float probabilities in [0, 1], or None.
        semantic: [B, H, W] int64 (pseudo-)labels; only ``thing_ids`` pixels are clustered.
        icfg: :class:`pst.config.InstancePseudoConfig`. ``cluster_within="class"``
            clusters each class's mask on its own; ``"group"`` clusters the union of
            ``thing_ids`` at once (an object whose pixels the semantic labels split between
            two of the classes stays one instance; fusion then gives it its majority class).
    Returns:
        [B, H, W] int64, 0 = none, 1..K per image, each instance inside one class's mask
        (``"group"``: inside the union of the classes' masks).
    """
    from pst.cluster import cluster_instances
    from pst.morph import refine
    from pst.train.objectives import group_mask

    ids = [int(i) for i in thing_ids]
    by_group = icfg.cluster_within == "group" and len(ids) > 1
    if by_group:  # one segment per image: the group's mask, labelled with its first class
        mask = group_mask(semantic, ids)
        seg_map = torch.where(mask, torch.full_like(semantic, ids[0]), torch.full_like(semantic, IGNORE))
        classes = ids[:1]
    else:
        seg_map, classes = semantic, ids
    inst = cluster_instances(
        embedding.float(), seg_map, None if objectness is None else objectness.float(),
        thing_classes=classes, method=icfg.method, bandwidth=icfg.bandwidth,
        merge_distance=icfg.merge_distance, min_size=icfg.min_size, n_anchors=icfg.n_anchors,
        max_iter=icfg.max_iter, seed=seed)
    if icfg.open_radius or icfg.close_radius or icfg.fill_holes or icfg.largest_component:
        inst = refine(inst, open_radius=icfg.open_radius, close_radius=icfg.close_radius,
                      fill_holes=icfg.fill_holes, min_size=icfg.min_size,
                      largest_component=icfg.largest_component).long()
        # refinement may grow an instance over another class: clip it to its own class mask
        B = inst.shape[0]
        K = int(inst.max()) if inst.numel() else 0
        if by_group:
            inst = torch.where(mask, inst, torch.zeros_like(inst))
        elif K:
            cls = _instance_majority(inst, semantic, K)  # [B, K+1]
            own = cls.gather(1, inst.view(B, -1)).view_as(inst)
            inst = torch.where(semantic == own, inst, torch.zeros_like(inst))
    return inst


def _instance_majority(inst: torch.Tensor, semantic: torch.Tensor, K: int) -> torch.Tensor:
    """[B, K+1] majority semantic class under each instance id (column 0 = -1)."""
    B = inst.shape[0]
    sem = semantic.clamp(0, 255).long()
    idx = (torch.arange(B, device=inst.device)[:, None] * (K + 1) + inst.view(B, -1)) * 256 + sem.view(B, -1)
    counts = torch.bincount(idx.reshape(-1), minlength=B * (K + 1) * 256).view(B, K + 1, 256)
    counts[..., IGNORE] = 0
    cls = counts.argmax(-1)
    cls[:, 0] = -1
    return cls


def instance_scores(instances: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``weights`` over each instance.

    Args:
        instances: [B, H, W] int64, 0 = none, 1..K.
        weights: [B, H, W] float (e.g. objectness x semantic confidence).
    Returns:
        [B, K] float64 (0 for ids absent from an image), K = max id over the batch.
    """
    B = instances.shape[0]
    K = int(instances.max()) if instances.numel() else 0
    if K == 0:
        return torch.zeros((B, 0), dtype=torch.float64, device=instances.device)
    idx = (torch.arange(B, device=instances.device)[:, None] * (K + 1) + instances.view(B, -1)).reshape(-1)
    s = torch.bincount(idx, weights=weights.reshape(-1).double(), minlength=B * (K + 1)).view(B, K + 1)
    n = torch.bincount(idx, minlength=B * (K + 1)).view(B, K + 1)
    return (s / n.clamp_min(1))[:, 1:]



# --------------------------------------------------------------------------- pseudo-labels on disk

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

    from pst.panoptic import merge_instance_maps
    from pst.train.data import step_generator

    st = cfg.selftrain
    x = image[None]
    sp = semantic_pseudo_labels(net.semantic, x, prior, SemanticPseudoSettings.from_config(st),
                                generator=step_generator(cfg.seed, "pseudo-label", "views", name), update_prior=False)
    anchor_seed = step_generator(cfg.seed, "pseudo-label", "anchors", name).initial_seed()
    out = net(x, semantic=False, keys=keys)["instance"]
    objs = {k: torch.sigmoid(out[k]["objectness"].float()) for k in keys}
    sp = sp._replace(labels=gate_things(sp.labels, objs, {k: net.groups[k] for k in keys}, st.thing_objectness))
    maps, scores = [], []
    for k in keys:
        inst = instance_pseudo_labels(out[k]["embedding"].float(), objs[k], sp.labels, net.groups[k][1],
                                      st.instances, seed=anchor_seed)
        maps.append(inst)
        scores.append(instance_scores(inst, objs[k] * sp.confidence))
    inst = maps[0] if len(maps) == 1 else merge_instance_maps(maps, scores).instances
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

    from tqdm import tqdm

    from pst.io import png_bytes, remove_stale_temps, write_bytes
    from pst.train.checkpoint import load_checkpoint
    from pst.train.data import build_dataset, resize_sample
    from pst.train.evaluate import net_from_checkpoint

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
    with _reproducible_kernels(dev), tqdm(total=n, desc="pseudo-labels", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            for i in range(start, min(n, start + batch_size)):
                sample = ds[i]
                name = str(sample.get("name", f"{i:06d}"))
                stem = _safe_name(name)
                index.claim(stem, name)
                image_sha256 = _tensor_sha256(sample["image"])
                if resume and index.done(stem, name, image_sha256):
                    skipped += 1
                else:
                    if cfg.data.eval_size is not None:
                        sample = resize_sample(sample, cfg.data.eval_size)
                    index.begin()
                    arrays = _image_pseudo_labels(net, keys, cfg, prior, sample["image"].to(dev), name)
                    sums = {}
                    for kind in PSEUDO_KINDS:
                        data = png_bytes(arrays[kind])
                        write_bytes(out_dir / f"{stem}_{kind}.png", data)
                        sums[kind] = hashlib.sha256(data).hexdigest()
                    index.record(stem, {"index": i, "name": name, "image_sha256": image_sha256, "sha256": sums})
                    written += 1
                bar.update(1)
            index.flush(flush_every)
    if index.found and written:
        logger.info("%s: %d image(s) verified and kept, %d (re)done (%d without an entry, %d whose files changed)",
                    out_dir, skipped, written, index.redo["no entry"], index.redo["files changed"])
    index.finish()
    return {"written": written, "skipped": skipped, "images": n, "out": str(out_dir)}
