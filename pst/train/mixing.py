"""Cross-domain class mixing for self-training (DACS, Tranheden et al., WACV 2021).

Self-training keeps the confusions of the source model: a class that the source model
reads as another on the target (toy: car -> truck, facade -> person) stays wrong in the
pseudo-labels, and the student learns the mistake. DACS pastes the pixels of some
classes of a *labelled source* image onto a target image; the pasted pixels carry their
true labels, the rest the target's pseudo-labels. The student then sees correctly
labelled objects in target context every step.

Here the instance pseudo-labels are mixed too: pasted source instances keep their own ids
(offset past the target's), so the instance branch also learns on true instances.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from pst.config import MIX_POLICIES
from pst.labels import IGNORE

__all__ = ["Mixed", "choose_mix_classes", "cross_domain_mix"]

MIX_CLASSES = MIX_POLICIES[1:]  # "off" is the caller's


class Mixed(NamedTuple):
    image: torch.Tensor  # [B,3,H,W]
    semantic: torch.Tensor  # [B,H,W] int64 (IGNORE = void)
    confidence: torch.Tensor  # [B,H,W] float: 1 on pasted pixels
    instances: dict  # key -> [B,H,W] int64
    pasted: torch.Tensor  # [B,H,W] bool


def choose_mix_classes(semantic: torch.Tensor, policy: str, thing_ids: Sequence[int],
                       generator: torch.Generator | None = None) -> list[int]:
    """Classes of one source label map [H,W] to paste.

    ``half``: a random half (rounded up) of the classes present (ClassMix / DACS);
    ``things``: every thing class present.
    """
    if policy not in MIX_CLASSES:
        raise ValueError(f"mix classes policy should be one of {MIX_CLASSES}, got {policy!r}")
    present = [int(c) for c in torch.unique(semantic).tolist() if int(c) != IGNORE]
    if policy == "things":
        things = set(int(t) for t in thing_ids)
        return [c for c in present if c in things]
    if not present:
        return []
    order = torch.randperm(len(present), generator=generator).tolist()
    return sorted(present[j] for j in order[:(len(present) + 1) // 2])


def cross_domain_mix(source_image: torch.Tensor, source_semantic: torch.Tensor, source_instances: torch.Tensor,
                     target_image: torch.Tensor, target_semantic: torch.Tensor, target_confidence: torch.Tensor,
                     target_instances: dict, *, policy: str = "half", thing_ids: Sequence[int] = (),
                     generator: torch.Generator | None = None) -> Mixed:
    """Paste classes of source image ``i`` onto target image ``i`` (the batches pair up).

    Args:
        source_image, target_image: [B,3,H,W] of one size.
        source_semantic: [B,H,W] int64 true labels; source_instances: [B,H,W] int64 (0 = none).
        target_semantic: [B,H,W] pseudo-labels; target_confidence: [B,H,W] their pixel weights.
        target_instances: per instance model, [B,H,W] int64 pseudo-instances (0 = none).
    Returns:
        :class:`Mixed`: pasted pixels take the source image, label, confidence 1 and the
        source instance id offset past the target's largest id in that image.
    """
    if source_image.shape != target_image.shape or source_image.dim() != 4:
        raise ValueError(f"source and target images should both be [B,3,H,W] of one shape, got "
                         f"{tuple(source_image.shape)} and {tuple(target_image.shape)}")
    b, _, h, w = source_image.shape
    for name, t in (("source_semantic", source_semantic), ("source_instances", source_instances),
                    ("target_semantic", target_semantic), ("target_confidence", target_confidence),
                    *((f"target_instances[{k!r}]", v) for k, v in target_instances.items())):
        if tuple(t.shape) != (b, h, w):
            raise ValueError(f"{name} should be [B,H,W] = {(b, h, w)}, got {tuple(t.shape)}")
    pasted = torch.zeros((b, h, w), dtype=torch.bool, device=source_semantic.device)
    for i in range(b):
        chosen = choose_mix_classes(source_semantic[i], policy, thing_ids, generator)
        if chosen:
            pasted[i] = torch.isin(source_semantic[i], torch.tensor(chosen, device=source_semantic.device))
    image = torch.where(pasted[:, None], source_image, target_image)
    semantic = torch.where(pasted, source_semantic, target_semantic)
    confidence = torch.where(pasted, torch.ones_like(target_confidence), target_confidence)
    src_inst = source_instances.long()
    instances = {}
    for key, t_inst in target_instances.items():
        offset = t_inst.flatten(1).amax(dim=1).clamp_min(0)[:, None, None]
        pasted_ids = torch.where(src_inst > 0, src_inst + offset, torch.zeros_like(src_inst))
        instances[key] = torch.where(pasted, pasted_ids, t_inst)
    return Mixed(image, semantic, confidence, instances, pasted)
