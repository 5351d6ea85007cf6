"""The momentum (EMA) teacher of self-training (REFERENCE.md, SAC):
``teacher = m * teacher + (1 - m) * student`` over the weights *and* the BatchNorm
running statistics, applied every ``ema_every`` iterations."""

from __future__ import annotations

import copy

import torch

__all__ = ["make_teacher", "ema_update"]


def make_teacher(student: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``student`` in eval mode."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` for every parameter
    and floating-point buffer; integer buffers (BN's ``num_batches_tracked``) are copied.

    Raises:
        ValueError: ``momentum`` outside [0, 1], or the two models differ in structure.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum should be in [0, 1], got {momentum}")
    t_state = teacher.state_dict(keep_vars=True)
    s_state = student.state_dict(keep_vars=True)
    if t_state.keys() != s_state.keys():
        missing = sorted(set(s_state) ^ set(t_state))[:5]
        raise ValueError(f"teacher and student should have the same tensors, they differ in {missing}")
    for k, t in t_state.items():
        s = s_state[k].detach()
        if t.shape != s.shape:
            raise ValueError(f"teacher {k} has shape {tuple(t.shape)}, student {tuple(s.shape)}")
        if t.is_floating_point():
            t.data.mul_(momentum).add_(s.to(t.dtype), alpha=1.0 - momentum)
        else:
            t.data.copy_(s)
