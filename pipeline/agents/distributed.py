"""Data-parallel training under torchrun: process group setup and gradient averaging across ranks.

Gradients are averaged with one all-reduce per parameter group (flattened), which is what DDP does for a model;
doing it by hand lets the actor and critic keep separate optimizers and partial backward passes.
gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """True when torchrun (torch.distributed.run) started this process with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the process group if launched by torchrun; returns (rank, world_size), (0, 1) otherwise."""
    if not launched_by_torchrun():
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str) -> torch.device:
    """The device of this rank: "cuda" becomes cuda:LOCAL_RANK under torchrun."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and launched_by_torchrun():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_parameters(params: Iterable[torch.Tensor], src: int = 0) -> None:
    """Make every rank start from rank `src`'s weights."""
    if not is_distributed():
        return
    for p in params:
        dist.broadcast(p.data, src=src)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace each .grad with its mean over ranks (one flattened all-reduce)."""
    if not is_distributed():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_tensors(tensors: Iterable[torch.Tensor]) -> None:
    """In-place mean over ranks of floating tensors (used to keep normalizer statistics in step)."""
    if not is_distributed():
        return
    for t in tensors:
        if t.is_floating_point():
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= dist.get_world_size()
