"""The frame distance of ABX: the angle between L2-normalised frames, divided by pi (0 = same direction,
1/2 = orthogonal, 1 = opposite), as in libri-light / ZeroSpeech (``acos(a . b) / pi``).

A zero frame has no direction: libri-light puts it at distance 1 from every other frame and 0 from
another zero frame (its ``normalize_with_singularity``); so do we.
"""

from __future__ import annotations

import math

import torch


def unit_frames(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalise frames.

    Args:
        frames: ``(..., dim)`` float tensor.

    Returns:
        ``(unit, zero)``: float32 ``(..., dim)`` unit vectors (zero frames stay zero) and bool ``(...,)``
        marking the zero frames.
    """
    frames = frames.to(torch.float32)
    norm = frames.norm(dim=-1, keepdim=True)  # (..., 1)
    zero = norm.squeeze(-1) == 0
    return frames / norm.clamp_min(torch.finfo(torch.float32).tiny), zero


def angular_distances(
    a: torch.Tensor, b: torch.Tensor, a_zero: torch.Tensor, b_zero: torch.Tensor
) -> torch.Tensor:
    """Angular distance between every frame of ``a`` and every frame of ``b``, batch by batch.

    Args:
        a: ``(batch, n, dim)`` unit frames (:func:`unit_frames`).
        b: ``(batch, m, dim)`` unit frames.
        a_zero: bool ``(batch, n)``; b_zero: bool ``(batch, m)``: which frames were zero.

    Returns:
        float32 ``(batch, n, m)`` distances in ``[0, 1]``.
    """
    cosine = torch.bmm(a, b.transpose(1, 2)).clamp_(-1.0, 1.0)  # (B, n, m)
    distance = torch.acos(cosine).div_(math.pi)
    either = a_zero[:, :, None] | b_zero[:, None, :]  # (B, n, m)
    if bool(either.any()):
        both = a_zero[:, :, None] & b_zero[:, None, :]
        distance = torch.where(either, (~both).to(distance.dtype), distance)
    return distance
