"""What the training stages run on, in one place: the process set-up (device, threads,
determinism, seeds, torchrun's process group), mixed precision (when autocast is on and with
which dtype, the GradScaler), the DistributedDataParallel wrapper and the optimizer step
(backward, gradient clipping, BatchNorm buffers averaged over processes)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

from pst.train.distributed import DistInfo, init_from_env, resolve_device, sync_buffers

__all__ = ["Runtime", "setup_runtime", "seed_everything", "make_scaler", "amp_enabled", "cpu_has_bf16",
           "autocast_for", "wrap_ddp", "optimizer_step"]

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    device: torch.device
    dist: DistInfo
    amp: bool

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def setup_runtime(cfg, device: str | torch.device | None = None, *, threads: int = 0) -> Runtime:
    """Resolve the device (``cfg.device`` unless given), join torchrun's process group if
    there is one, set torch threads (``threads``, else ``cfg.threads``; 0: as they are) and
    determinism, seed everything."""
    import os

    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device) if device is not None else resolve_device(cfg.device, local)
    info = init_from_env(dev)
    if threads or cfg.threads:
        torch.set_num_threads(threads or cfg.threads)
    if cfg.deterministic:
        # Exact repeatability. With 2+ CPU threads, runs of the default toy config drifted apart
        # after about 100 steps until deterministic algorithms were requested (warn_only: ops
        # without a deterministic version warn instead of failing). cuDNN autotuning off on GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.seed)
    return Runtime(device=dev, dist=info, amp=amp_enabled(cfg, dev))


def amp_enabled(cfg, device: torch.device) -> bool:
    """Whether ``cfg.amp`` turns autocast on for ``device``: on a GPU, and on a CPU that
    computes bfloat16 natively. Training and every evaluation of its checkpoints use it,
    so that ``pst evaluate`` reproduces the numbers of the run."""
    return bool(cfg.amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())))


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16, Linux flags).
    Elsewhere CPU autocast would emulate bfloat16 and run slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def autocast_for(device: torch.device, enabled: bool):
    """bfloat16 autocast on a GPU that supports it (float16 otherwise) and on a CPU
    (:func:`setup_runtime` enables it there only where the CPU computes bfloat16 natively,
    :func:`amp_enabled`); nothing on other devices."""
    if not enabled or device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    if device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def make_scaler(rt: Runtime):
    """A GradScaler for float16 autocast (bfloat16 and CPU need none: returns None)."""
    if rt.amp and rt.device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.amp.GradScaler("cuda")
    return None


def wrap_ddp(net: torch.nn.Module, rt: Runtime):
    """``net`` in DistributedDataParallel when more than one process runs, else itself."""
    if rt.dist.world_size <= 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    # buffers are averaged after every step (sync_buffers), not broadcast before each forward
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}
    return DistributedDataParallel(net, device_ids=[rt.device] if rt.device.type == "cuda" else None, **sync)


def optimizer_step(loss: torch.Tensor, optimizer, scaler, net, *, grad_clip: float = 0.0) -> None:
    """Backward (through ``scaler`` when there is one), optional global gradient-norm
    clipping, step; then average BN buffers over processes."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
    sync_buffers(net)
