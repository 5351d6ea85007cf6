"""The momentum (EMA) teacher of self-training (SAC, Araslanov & Roth 2021, visinf/da-sac):
``teacher = m * teacher + (1 - m) * student`` over the weights *and* the BatchNorm
running statistics, applied every ``ema_every`` iterations."""

from __future__ import annotations

import copy

import torch

__all__ = ["make_teacher", "ema_update", "recalibrate_bn"]


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


@torch.no_grad()
def recalibrate_bn(nets, batches, *, forward=None) -> int:
    """Replace every BatchNorm layer's running statistics by those of ``batches`` (AdaBN,
    Li et al. 2016): the statistics are reset, then accumulated as a plain average over the
    batches in train mode, without gradients; weights are untouched.

    Self-training feeds source and target images through one forward pass, so the running
    statistics it leaves describe the mixture of both domains; recomputing them on target
    images alone normalises target features as they are at test time.

    Args:
        nets: one model or a sequence of models; every batch goes through each of them, so the
            data are read once. Their train/eval modes are restored afterwards.
        batches: an iterable of input tensors.
        forward: ``forward(net, x)`` (default ``net(x)``).
    Returns:
        The number of batches seen (0 leaves the statistics as they were).
    """
    nets = [nets] if isinstance(nets, torch.nn.Module) else list(nets)
    bns = [m for net in nets for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    if not bns:
        return 0
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    modes = [net.training for net in nets]
    for net in nets:
        net.train()
    n = 0
    try:
        for x in batches:
            for net in nets:
                net(x) if forward is None else forward(net, x)
            n += 1
    finally:
        for m, (mean, var, count, mom) in zip(bns, saved):
            m.momentum = mom
            if n == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        for net, mode in zip(nets, modes):
            net.train(mode)
    return n
