"""Loss terms of the training stages, built on pst.losses.

Supervised (source, oracle): cross-entropy on the semantic logits; per instance model
the discriminative loss on the instances of its classes and the objectness loss on its
classes' mask. Self-training adds the same terms on target pseudo-labels (focal,
confidence-weighted cross-entropy; clustered instance pseudo-labels) and the anchor
embedding consistency between student and teacher.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from pst.labels import IGNORE

__all__ = ["group_mask", "semantic_ce", "instance_terms", "supervised_losses"]


def group_mask(semantic: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
    """[B,H,W] bool: pixels whose class is one of ``ids``."""
    return torch.isin(semantic, torch.as_tensor(list(ids), device=semantic.device, dtype=semantic.dtype))


def semantic_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over non-ignored pixels (0 when there are none)."""
    if bool((target != IGNORE).any()):
        return F.cross_entropy(logits.float(), target, ignore_index=IGNORE)
    return logits.sum() * 0.0


def instance_terms(out: dict, semantic: torch.Tensor, instances: torch.Tensor, ids: Sequence[int],
                   loss_cfg) -> dict[str, torch.Tensor]:
    """Discriminative + objectness loss of one instance model.

    Args:
        out: {"embedding": [B,D,H,W], "objectness": [B,H,W] logits}.
        semantic: [B,H,W] int64 (pseudo-)labels, IGNORE = void.
        instances: [B,H,W] int64 instance ids (0 = none).
        ids: the model's thing classes.
    """
    from pst.losses import discriminative_loss, objectness_loss

    gmask = group_mask(semantic, ids)
    valid = semantic != IGNORE
    inst = torch.where(gmask, instances, torch.zeros_like(instances))
    emb = out["embedding"].float()
    disc = discriminative_loss(emb, inst, delta_v=loss_cfg.delta_v, delta_d=loss_cfg.delta_d, valid=valid)
    obj = objectness_loss(out["objectness"].float(), gmask, valid=valid)
    return {"disc": disc * loss_cfg.instance_weight, "obj": obj * loss_cfg.objectness_weight}


def supervised_losses(out: dict, semantic: torch.Tensor, instances: torch.Tensor, groups: dict,
                      loss_cfg, *, prefix: str = "") -> dict[str, torch.Tensor]:
    """All supervised terms: ``{prefix+"sem", prefix+"disc/<key>", prefix+"obj/<key>"}``."""
    losses = {prefix + "sem": semantic_ce(out["logits"], semantic)}
    for key, (_, ids) in groups.items():
        if key not in out["instance"]:
            continue
        for name, v in instance_terms(out["instance"][key], semantic, instances, ids, loss_cfg).items():
            losses[f"{prefix}{name}/{key}"] = v
    return losses
