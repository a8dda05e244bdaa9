"""Dynamic time warping of many item pairs at once, in torch (CPU or GPU).

The cost is libri-light's (``cpc/eval/ABX/dtw.pyx`` of CPC_audio): steps right, down and diagonal, each
cell adding its frame distance, and the total divided by the number of cells on the path. The path is
the one libri-light's backtracking follows (from the last cell, the diagonal predecessor when it is no
worse than the other two, else the left one when no worse than the upper one, else the upper one); its
length is tracked forward here, cell by cell, with the same choices, so no backtracking pass is needed.

The dynamic programme runs along anti-diagonals: every cell of anti-diagonal ``k = i + j`` depends only on
anti-diagonals ``k - 1`` and ``k - 2``, so one vectorised step per anti-diagonal serves a whole batch of
pairs. Pairs are grouped by padded lengths so that padding stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from cpcaudio.evaluate.abx.distances import angular_distances, unit_frames
from cpcaudio.geometry import ceil_div

DEFAULT_MAX_ELEMENTS = 1 << 22  # floats per working tensor of one DTW batch (16 MiB)
MIN_BATCH_PAIRS = 512  # DTW batches smaller than this are merged with the next padded size
MIN_BATCH_BLOCKS = 32  # likewise for the batches of block distance matrices
BLOCK_FLOATS_PER_WORKING = 8  # the distance matrices held at once: this many working tensors' worth


def dtw_batch(
    distances: torch.Tensor, lengths_x: torch.Tensor, lengths_y: torch.Tensor, normalized: bool = True
) -> torch.Tensor:
    """DTW cost of a padded batch of distance matrices.

    Args:
        distances: float ``(batch, n, m)``; entry ``[b, i, j]`` the distance of frame ``i`` of the first
            sequence and frame ``j`` of the second (beyond the lengths: anything finite).
        lengths_x: int ``(batch,)`` valid rows, ``1 <= lengths_x <= n``.
        lengths_y: int ``(batch,)`` valid columns, ``1 <= lengths_y <= m``.
        normalized: divide each cost by the number of cells on its path (libri-light's ABX).

    Returns:
        float32 ``(batch,)`` costs, on the device of ``distances``.
    """
    batch, n, m = distances.shape
    device = distances.device
    diagonals = n + m - 1
    rows = torch.arange(n, device=device)  # (n,)
    columns = torch.arange(diagonals, device=device)[:, None] - rows[None, :]  # (K, n): j = k - i
    inside = (columns >= 0) & (columns < m)
    flat = rows[None, :] * m + columns.clamp(0, m - 1)  # (K, n)
    inf = torch.tensor(float("inf"), device=device)
    skewed = distances.to(torch.float32).reshape(batch, n * m)[:, flat.reshape(-1)].reshape(batch, diagonals, n)
    skewed = torch.where(inside[None], skewed, inf)  # (B, K, n): cell (i, k - i) of anti-diagonal k
    # Column 0 stands for row i = -1 (outside the matrix: infinite cost), so that the cells (i - 1, .) of
    # an anti-diagonal are a slice, not a shifted copy.
    costs = torch.full((batch, diagonals, n + 1), float("inf"), device=device)  # (B, K, 1 + n)
    steps = torch.zeros((batch, diagonals, n + 1), device=device)
    costs[:, 0, 1] = skewed[:, 0, 0]
    steps[:, 0, 1] = 1.0
    for k in range(1, diagonals):
        up = costs[:, k - 1, :-1]  # cell (i - 1, j)
        left = costs[:, k - 1, 1:]  # cell (i, j - 1)
        diagonal = costs[:, k - 2, :-1] if k >= 2 else costs[:, 0, 1:].new_full((batch, n), float("inf"))
        take_diagonal = (diagonal <= left) & (diagonal <= up)
        take_left = (left <= up) & ~take_diagonal
        costs[:, k, 1:] = skewed[:, k] + torch.where(take_diagonal, diagonal, torch.where(take_left, left, up))
        diagonal_steps = steps[:, k - 2, :-1] if k >= 2 else steps[:, 0, 1:]
        side_steps = torch.where(take_left, steps[:, k - 1, 1:], steps[:, k - 1, :-1])
        chosen = torch.where(take_diagonal, diagonal_steps, side_steps)
        steps[:, k, 1:] = chosen + 1.0
    lengths_x = lengths_x.to(device=device, dtype=torch.long)
    last = lengths_x + lengths_y.to(device=device, dtype=torch.long) - 2  # anti-diagonal of the last cell
    index = torch.arange(batch, device=device)
    total = costs[index, last, lengths_x]
    if normalized:
        total = total / steps[index, last, lengths_x]
    return total


@dataclass
class ItemFeatures:
    """The frames of every item, back to back, L2-normalised.

    Attributes:
        frames: float32 ``(total_frames, dim)`` unit vectors (zero frames stay zero).
        zero: bool ``(total_frames,)``, the zero frames.
        starts: int64 ``(items,)`` first row of each item in ``frames``.
        lengths: int64 ``(items,)`` frames of each item (at least 1).
    """

    frames: torch.Tensor
    zero: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], device: Optional[torch.device] = None) -> "ItemFeatures":
        """From one ``(frames, dim)`` array per item (each with at least one frame)."""
        lengths = np.asarray([a.shape[0] for a in arrays], dtype=np.int64)
        if lengths.size and lengths.min() < 1:
            raise ValueError("every item needs at least one frame")
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        stacked = torch.from_numpy(np.concatenate(arrays, axis=0).astype(np.float32, copy=False))
        unit, zero = unit_frames(stacked.to(device) if device is not None else stacked)
        return cls(unit, zero, torch.from_numpy(starts).to(unit.device), torch.from_numpy(lengths).to(unit.device))

    def __len__(self) -> int:
        return int(self.starts.shape[0])


def padded_length(lengths: np.ndarray) -> np.ndarray:
    """Bucket sizes for ``lengths`` (int64 array): exact up to 8, then steps of a quarter of a power of two
    (10, 12, 14, 16, 20, 24, ...), so padding adds at most a quarter."""
    lengths = np.asarray(lengths, dtype=np.int64)
    step = np.where(lengths <= 8, 1, 2 ** np.maximum(np.floor(np.log2(np.maximum(lengths - 1, 1))) - 2, 0))
    step = step.astype(np.int64)
    return ceil_div(lengths, step) * step


def _groups(keys: np.ndarray, min_size: int) -> list[np.ndarray]:
    """Indices grouped by equal ``keys`` (in key order), small neighbouring groups merged until each
    holds at least ``min_size`` entries (fewer, larger batches: padding costs less than a batch)."""
    order = np.argsort(keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[order])) + 1
    merged: list[np.ndarray] = []
    for group in np.split(order, bounds):
        if merged and merged[-1].shape[0] < min_size:
            merged[-1] = np.concatenate([merged[-1], group])
        else:
            merged.append(group)
    return merged


def _side(features: ItemFeatures, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lengths ``(U, G)`` (0 for padding), offsets ``(U, G)`` of each member's frames in its block side,
    and frames ``(U,)`` per block side."""
    valid = members >= 0
    lengths = torch.where(valid, features.lengths[members.clamp_min(0)], torch.zeros_like(members))
    offsets = lengths.cumsum(dim=1) - lengths
    return lengths, offsets, lengths.sum(dim=1)


def _side_rows(
    features: ItemFeatures, members: torch.Tensor, lengths: torch.Tensor, offsets: torch.Tensor, size: int
) -> torch.Tensor:
    """Row of ``features.frames`` of frame ``r < size`` of each block side ``(B, size)`` (padding: a
    valid row, ignored later)."""
    device = members.device
    ends = offsets + lengths  # (B, G)
    position = torch.arange(size, device=device)[None, :].expand(members.shape[0], -1).contiguous()  # (B, size)
    member = torch.searchsorted(ends, position, right=True).clamp_max(members.shape[1] - 1)  # (B, size)
    item = members.gather(1, member).clamp_min(0)
    inside = (position - offsets.gather(1, member)).clamp_min(0)
    inside = torch.minimum(inside, (features.lengths[item] - 1))
    return features.starts[item] + inside


def block_dtw(
    features: ItemFeatures,
    low: torch.Tensor,
    high: torch.Tensor,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    progress: Optional[Callable[[int, int], None]] = None,
) -> torch.Tensor:
    """Normalised DTW cost (angular frame distance) of every item pair of blocks of items.

    Block ``u`` pairs every item of ``low[u]`` (the rows of each DTW) with every item of ``high[u]``.
    The frame distances of a block are computed at once, as one matrix between the frames of its two
    sides, and each pair's DTW reads its part of that matrix.

    Args:
        features: the items' frames.
        low, high: int64 ``(blocks, G)`` item indices, -1 for padding.
        max_elements: floats per working tensor; bounds memory (the distance matrices held at once take
            ``BLOCK_FLOATS_PER_WORKING`` times as much).
        progress: called as ``progress(blocks done, blocks)``.

    Returns:
        float32 ``(blocks, G, G)`` costs, 0 where either item is padding, on the features' device.
    """
    device = features.frames.device
    low, high = low.to(device), high.to(device)
    blocks, size = low.shape
    out = torch.zeros((blocks, size, high.shape[1]), dtype=torch.float32, device=device)
    low_lengths, low_offsets, low_frames = _side(features, low)
    high_lengths, high_offsets, high_frames = _side(features, high)
    padded_low = padded_length(low_frames.cpu().numpy())
    padded_high = padded_length(high_frames.cpu().numpy())
    used = np.cumsum(padded_low * padded_high)  # floats of the distance matrices of blocks 0 .. u
    start = 0
    while start < blocks:  # chunks of blocks whose distance matrices fit max_elements together
        before = int(used[start - 1]) if start else 0
        budget = before + BLOCK_FLOATS_PER_WORKING * max_elements
        stop = max(start + 1, int(np.searchsorted(used, budget, side="right")))
        chunk = np.arange(start, min(stop, blocks))
        _chunk_blocks(
            features, chunk, (low, low_lengths, low_offsets, padded_low),
            (high, high_lengths, high_offsets, padded_high), out, max_elements,
        )
        start = int(chunk[-1]) + 1
        if progress is not None:
            progress(start, blocks)
    return out


def _chunk_blocks(
    features: ItemFeatures, chunk: np.ndarray, low: tuple, high: tuple, out: torch.Tensor, max_elements: int
) -> None:
    """Distances then DTWs of the blocks ``chunk``, written into ``out``."""
    device = features.frames.device
    low_members, low_lengths, low_offsets, low_padded = low
    high_members, high_lengths, high_offsets, high_padded = high
    # 1. One distance matrix per block, blocks of equal padded sizes batched, laid out back to back.
    bases = np.zeros(chunk.shape[0], dtype=np.int64)
    strides = np.zeros(chunk.shape[0], dtype=np.int64)
    groups = _groups(low_padded[chunk] * (int(high_padded.max()) + 1) + high_padded[chunk], MIN_BATCH_BLOCKS)
    total = sum(int(low_padded[chunk[g]].max()) * int(high_padded[chunk[g]].max()) * g.shape[0] for g in groups)
    flat = torch.empty(total, dtype=torch.float32, device=device)
    base = 0
    dim = features.frames.shape[1]
    for group in groups:
        n, m = int(low_padded[chunk[group]].max()), int(high_padded[chunk[group]].max())
        per_block = n * m + (n + m) * (dim + 2)
        for part in np.array_split(group, max(1, ceil_div(group.shape[0] * per_block, max_elements))):
            index = torch.from_numpy(chunk[part]).to(device)
            rows = _side_rows(features, low_members[index], low_lengths[index], low_offsets[index], n)  # (B, n)
            columns = _side_rows(features, high_members[index], high_lengths[index], high_offsets[index], m)
            distances = angular_distances(
                features.frames[rows], features.frames[columns], features.zero[rows], features.zero[columns]
            )  # (B, n, m)
            bases[part] = base + np.arange(part.shape[0]) * n * m
            strides[part] = m
            flat[base : base + distances.numel()] = distances.reshape(-1)
            base += distances.numel()
    # 2. Every item pair of the blocks: its part of the block's matrix, then DTW in padded batches.
    index = torch.from_numpy(chunk).to(device)
    valid = (low_lengths[index][:, :, None] > 0) & (high_lengths[index][:, None, :] > 0)  # (C, G, G)
    block, row, column = valid.nonzero(as_tuple=True)
    length_x = low_lengths[index][block, row]
    length_y = high_lengths[index][block, column]
    start_x = low_offsets[index][block, row]
    start_y = high_offsets[index][block, column]
    pair_base = torch.from_numpy(bases).to(device)[block]
    pair_stride = torch.from_numpy(strides).to(device)[block]
    bucket_x = padded_length(length_x.cpu().numpy())
    bucket_y = padded_length(length_y.cpu().numpy())
    costs = torch.empty(block.shape[0], dtype=torch.float32, device=device)
    for group in _groups(bucket_x * (int(bucket_y.max()) + 1) + bucket_y, MIN_BATCH_PAIRS):
        n, m = int(bucket_x[group].max()), int(bucket_y[group].max())
        step = max(1, max_elements // ((n + m) * n))
        for begin in range(0, group.shape[0], step):
            pick = torch.from_numpy(group[begin : begin + step]).to(device)
            r = torch.minimum(torch.arange(n, device=device)[None, :], (length_x[pick] - 1)[:, None])  # (B, n)
            c = torch.minimum(torch.arange(m, device=device)[None, :], (length_y[pick] - 1)[:, None])  # (B, m)
            where = (
                pair_base[pick][:, None, None]
                + (start_x[pick][:, None, None] + r[:, :, None]) * pair_stride[pick][:, None, None]
                + start_y[pick][:, None, None] + c[:, None, :]
            )  # (B, n, m)
            costs[pick] = dtw_batch(flat[where], length_x[pick], length_y[pick])
    out[index[block], row, column] = costs
