"""One device resolver for every stage: a user's ``--device`` string in, a usable ``torch.device`` out."""

from __future__ import annotations

from typing import Union

import torch

from cpcaudio.errors import UsageError

DeviceLike = Union[str, torch.device, None]


def best_available_device(local_rank: int = 0) -> torch.device:
    """CUDA (``cuda:<local_rank>``) if present, else MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: DeviceLike, local_rank: int = 0) -> torch.device:
    """``device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) as a ``torch.device`` that exists here.

    ``None`` picks :func:`best_available_device`. A bare ``cuda`` becomes ``cuda:<local_rank>`` (one GPU
    per torchrun process).

    Raises:
        UsageError: the name is malformed, or names a device this machine does not have.
    """
    if device is None:
        return best_available_device(local_rank)
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UsageError(f"unknown device {device!r} ({error}); use cpu, cuda, cuda:N or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
        if resolved.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif resolved.type == "mps":
        if not _mps_available():
            raise UsageError(f"device {device!r} requested but MPS is not available here; use --device cpu")
    elif resolved.type != "cpu":
        raise UsageError(f"unsupported device {device!r}; use cpu, cuda, cuda:N or mps")
    return resolved


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
