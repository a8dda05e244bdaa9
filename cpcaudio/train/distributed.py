"""``torch.distributed`` set-up for training launched by ``torchrun``.

cpcaudio has no launcher of its own: ``torchrun --nproc_per_node N -m cpcaudio.cli.main train ...`` (or
any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``)
starts N processes, and :func:`init_distributed` joins them with ``env://`` initialisation: ``nccl`` on
CUDA, ``gloo`` otherwise. A single process (``WORLD_SIZE`` unset or 1) needs no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cpcaudio.devices import DeviceLike, resolve_device
from cpcaudio.errors import UsageError


@dataclass
class DistributedContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 for a single process).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
        device: the device this process trains on.
        owns_process_group: True if :func:`init_distributed` created the process group (and so
            :func:`teardown` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_process_group: bool = False
    control_group: Any = None  # a gloo group for host-side flags (see agree_max), made by open_control_group

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: DeviceLike = None) -> DistributedContext:
    """Join the ``torchrun`` job described by the environment, or describe a single process.

    If a process group already exists (the caller set one up), it is used as is and left alone.

    Args:
        device: requested device (see :func:`cpcaudio.devices.resolve_device`); under several processes
            on CUDA each process takes ``cuda:<LOCAL_RANK>``.

    Returns:
        The :class:`DistributedContext` of this process.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        resolved = resolve_device(device, local_rank)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved, False)
    resolved = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, resolved, False)
    if not dist.is_available():
        raise UsageError("WORLD_SIZE > 1 but this torch build has no torch.distributed support")
    if resolved.type == "mps":
        raise UsageError("multi-process training on MPS is not supported; run one process or use cpu/cuda")
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved, True)


def teardown(context: DistributedContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if context.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place; a no-op for a single process). Returns ``tensor``."""
    if context.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` (picklable plain values; ``[value]`` for one process)."""
    if not context.is_distributed:
        return [value]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value: Any, context: DistributedContext, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every process."""
    if not context.is_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def barrier(context: DistributedContext) -> None:
    """Wait for every process (no-op for one)."""
    if context.is_distributed:
        dist.barrier()


def open_control_group(context: DistributedContext) -> None:
    """Give ``context`` a process group for the small host-side agreements of :func:`agree_max`.

    Under gloo that is the default group; under nccl a gloo group is created, so that agreeing on a flag
    (stop now? save now?) after every step never waits for the GPU. Every rank must call this at the
    same point. No-op for one process or when the group exists.
    """
    if not context.is_distributed or context.control_group is not None:
        return
    context.control_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def agree_max(values: list[int], context: DistributedContext) -> list[int]:
    """The element-wise maximum of ``values`` over all processes (``values`` for one process).

    The values travel as a CPU tensor over the control group (:func:`open_control_group`), so ranks agree
    on a decision taken from host state, such as a signal one of them received.
    """
    if not context.is_distributed:
        return list(values)
    open_control_group(context)
    tensor = torch.tensor(values, dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=context.control_group)
    return [int(v) for v in tensor.tolist()]
