"""Inference pieces shared by evaluation, export and the pseudo-labels on disk.

* :func:`embedding_instances`: the instance step of a network's outputs: the objectness
  sigmoid, :func:`pst.train.pseudo.instance_pseudo_labels` per instance model, each
  instance's score (mean objectness x semantic confidence, :func:`pst.train.pseudo.instance_scores`)
  and, for several instance models, the merge by score (:func:`merge_by_score`).
  :func:`pst.train.evaluate.predict` and :mod:`pst.train.pseudo_files` both run it.
* :func:`eval_chunks` / :func:`eval_batches`: the walk over a dataset in order, a few images
  at a time, at the evaluation size (``data.eval_size``), with a progress bar.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from pst.panoptic import merge_instance_maps
from pst.train.data import collate, resize_sample
from pst.train.pseudo import instance_pseudo_labels, instance_scores

__all__ = ["objectness_probs", "merge_by_score", "embedding_instances", "eval_view", "eval_chunks", "eval_batches"]


def objectness_probs(outputs: dict, keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Instance model key -> objectness probabilities [B, H, W] float32 (the sigmoid of its logits).

    Args:
        outputs: the network's ``"instance"`` outputs, key -> {"embedding", "objectness"}.
    """
    return {k: torch.sigmoid(outputs[k]["objectness"].float()) for k in keys}


@torch.no_grad()
def merge_by_score(maps: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One instance map from the maps of several instance models.

    Args:
        maps: [B, H, W] int64 instance maps (0 = none).
        weights: per map, [B, H, W] float whose mean over an instance is its score
            (objectness x semantic confidence).
    Returns:
        instances [B, H, W] int64 and scores [B, K] float64: the map itself and its scores
        when there is one; else :func:`pst.panoptic.merge_instance_maps` by score (scores of
        ids absent from an image are 0).
    """
    scores = [instance_scores(m, w) for m, w in zip(maps, weights)]
    if len(maps) == 1:
        return maps[0], scores[0]
    merged = merge_instance_maps(list(maps), scores)
    return merged.instances, torch.nan_to_num(merged.scores, nan=0.0)


@torch.no_grad()
def embedding_instances(outputs: dict, groups: dict, keys: Sequence[str], semantic: torch.Tensor,
                        confidence: torch.Tensor, icfg, *, seed: int = 0,
                        objectness: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Instances of the instance models ``keys`` from the network's outputs.

    Args:
        outputs: the network's ``"instance"`` outputs, key -> {"embedding", "objectness"}.
        groups: key -> (mode, thing ids), as ``net.groups``.
        semantic: [B, H, W] int64 (pseudo-)labels whose thing masks are clustered.
        confidence: [B, H, W] float semantic confidence (weighs the scores).
        icfg: :class:`pst.config.InstancePseudoConfig`.
        seed: the seed of the clustering's anchor draws.
        objectness: :func:`objectness_probs` of ``outputs`` when the caller has them already.
    Returns:
        instances [B, H, W] int64 and scores [B, K] float64, as :func:`merge_by_score`.
    """
    if not keys:
        raise ValueError("keys should name at least one instance model")
    objs = objectness if objectness is not None else objectness_probs(outputs, keys)
    maps = [instance_pseudo_labels(outputs[k]["embedding"].float(), objs[k], semantic, groups[k][1], icfg, seed=seed)
            for k in keys]
    return merge_by_score(maps, [objs[k] * confidence for k in keys])


def eval_view(sample: dict, cfg) -> dict:
    """``sample`` at the evaluation size ``cfg.data.eval_size`` (itself when that is None)."""
    if cfg.data.eval_size is None:
        return sample
    return resize_sample(sample, cfg.data.eval_size)


def eval_chunks(dataset, n: int, size: int, *, desc: str, progress: bool = False) -> Iterator[list[tuple[int, dict]]]:
    """The first ``n`` samples of ``dataset`` in order, ``size`` at a time, as lists of
    (index, sample) pairs as read (not resized); a progress bar counts the images."""
    from tqdm import tqdm

    with tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
        for start in range(0, n, size):
            chunk = [(i, dataset[i]) for i in range(start, min(n, start + size))]
            yield chunk
            bar.update(len(chunk))


def eval_batches(dataset, cfg, *, limit: int = 0, desc: str = "evaluate",
                 progress: bool = False) -> Iterator[tuple[int, dict]]:
    """(index of the first image, collated batch) over ``dataset`` (its first ``limit``
    images when > 0) in order, ``cfg.eval.batch_size`` images at a time, each at the
    evaluation size (:func:`eval_view`)."""
    n = min(len(dataset), limit) if limit else len(dataset)
    for chunk in eval_chunks(dataset, n, cfg.eval.batch_size, desc=desc, progress=progress):
        yield chunk[0][0], collate([eval_view(s, cfg) for _, s in chunk])
