"""ABX error rates from item features, with libri-light's bookkeeping.

Items are grouped into *cells* of equal (context, speaker, phone); a cell larger than ``max_size_group``
is cut to that many items, drawn once with the seed. A *task* is three cells A, B, X with A and X of the
same phone and context, B of another phone in the same context and of A's speaker:

* speaker ``within``: X is A's cell itself (every X against every other A), A having at least 2 items;
* speaker ``across``: X is the cell of the same phone and context of another speaker; at most
  ``max_x_across`` such speakers are drawn (with the seed) per A.

A task's error is the share of triplets (a, b, x) where ``d(a, x) > d(b, x)``, ties counting one half
(``d``: normalised DTW of angular frame distances, :mod:`.dtw`). Errors are averaged as libri-light does:
over the contexts (and, across speakers, the X speakers) of each (speaker, phone A, phone B), then over
speakers, then over the (phone A, phone B) pairs. Context ``any`` puts every item in one context (the
ZeroSpeech 2024 phoneme task); ``within`` uses (previous, next) phone pairs (libri-light, ZeroSpeech 2021).

Differences from libri-light, which do not change the expected value: cells are subsampled once (not
again for every task that uses them), and the DTW of a pair is computed once, the items of the
lower-numbered cell on the rows (libri-light puts X's frames on the rows; the two orders differ only in
which of two equal-cost paths the length normalisation takes). Without subsampling the two agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from cpcaudio.errors import UsageError
from cpcaudio.evaluate.abx.dtw import ItemFeatures, block_dtw
from cpcaudio.evaluate.abx.items import ItemCodes
from cpcaudio.progress import Progress, ProgressCallback, report

SPEAKER_MODES = ("within", "across")
CONTEXT_MODES = ("within", "any")
MAX_SIZE_GROUP = 10  # items per (context, speaker, phone) cell, as libri-light's default
MAX_X_ACROSS = 5  # X speakers per A cell in the across mode, as libri-light's default
_SCORE_ELEMENTS = 1 << 23  # triplet comparisons per scoring chunk


@dataclass
class Cells:
    """Cells of equal (context, speaker, phone), sorted by context, speaker, phone.

    Attributes:
        context, speaker, phone: int64 ``(cells,)`` codes.
        size: int64 ``(cells,)`` items in the cell before subsampling.
        members: int64 ``(cells, G)`` item indices, -1 padding (``G``: the largest cell, at most
            ``max_size_group``).
    """

    context: np.ndarray
    speaker: np.ndarray
    phone: np.ndarray
    size: np.ndarray
    members: np.ndarray

    def __len__(self) -> int:
        return int(self.context.shape[0])


def make_cells(codes: ItemCodes, max_size_group: int, rng: np.random.Generator) -> Cells:
    """Group items into cells; cells over ``max_size_group`` items keep a random subset of that size."""
    order = np.lexsort((codes.phone, codes.speaker, codes.context))
    keys = np.stack([codes.context[order], codes.speaker[order], codes.phone[order]], axis=1)  # (items, 3)
    bounds = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    stops = np.concatenate([bounds, [order.shape[0]]]).astype(np.int64)
    width = int(min(max_size_group, (stops - starts).max())) if starts.size else 1
    members = np.full((starts.shape[0], width), -1, dtype=np.int64)
    for row, (start, stop) in enumerate(zip(starts, stops)):
        chosen = order[start:stop]
        if chosen.shape[0] > max_size_group:
            chosen = np.sort(rng.choice(chosen, size=max_size_group, replace=False))
        members[row, : chosen.shape[0]] = chosen
    head = keys[starts] if starts.size else np.zeros((0, 3), dtype=np.int64)
    return Cells(head[:, 0], head[:, 1], head[:, 2], stops - starts, members)


@dataclass
class Tasks:
    """ABX tasks: cell indices of A, B and X, one entry per task."""

    a: np.ndarray
    b: np.ndarray
    x: np.ndarray
    within: bool  # X is A's own cell (speaker mode within)

    def __len__(self) -> int:
        return int(self.a.shape[0])


def _context_speaker_groups(cells: Cells) -> list[tuple[int, int]]:
    """``[start, stop)`` cell ranges of equal (context, speaker) holding at least two phones."""
    change = np.flatnonzero((np.diff(cells.context) != 0) | (np.diff(cells.speaker) != 0)) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    stops = np.concatenate([change, [len(cells)]]).astype(np.int64)
    return [(int(s), int(e)) for s, e in zip(starts, stops) if e - s >= 2]


def within_tasks(cells: Cells) -> Tasks:
    """Speaker-within tasks: for each (context, speaker), every ordered pair of its phones (A, B) with at
    least two A items; X = A."""
    a_list, b_list = [], []
    for start, stop in _context_speaker_groups(cells):
        group = np.arange(start, stop)
        a, b = np.meshgrid(group, group, indexing="ij")
        keep = (a != b) & (cells.size[a] >= 2)
        a_list.append(a[keep])
        b_list.append(b[keep])
    a = np.concatenate(a_list) if a_list else np.zeros(0, dtype=np.int64)
    b = np.concatenate(b_list) if b_list else np.zeros(0, dtype=np.int64)
    return Tasks(a, b, a.copy(), within=True)


def across_tasks(cells: Cells, max_x_across: int, rng: np.random.Generator) -> Tasks:
    """Speaker-across tasks: for each (context, speaker) and ordered phone pair (A, B), X is the cell of
    A's phone and context of another speaker; at most ``max_x_across`` X speakers are drawn per A."""
    others: dict[tuple[int, int], list[int]] = {}
    for cell in range(len(cells)):
        others.setdefault((int(cells.context[cell]), int(cells.phone[cell])), []).append(cell)
    a_list, b_list, x_list = [], [], []
    for start, stop in _context_speaker_groups(cells):
        for a in range(start, stop):
            speaker = cells.speaker[a]
            xs = [c for c in others[(int(cells.context[a]), int(cells.phone[a]))] if cells.speaker[c] != speaker]
            if len(xs) > max_x_across:
                xs = sorted(rng.choice(xs, size=max_x_across, replace=False).tolist())
            bs = [b for b in range(start, stop) if b != a]
            for x in xs:
                a_list.extend([a] * len(bs))
                b_list.extend(bs)
                x_list.extend([x] * len(bs))
    as_array = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
    return Tasks(as_array(a_list), as_array(b_list), as_array(x_list), within=False)


def _block_keys(rows: np.ndarray, columns: np.ndarray, num_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered cell-pair keys ``low * num_cells + high`` and whether ``rows`` is the high cell."""
    low, high = np.minimum(rows, columns), np.maximum(rows, columns)
    return low * num_cells + high, rows > columns


def cell_distances(
    cells: Cells, keys: np.ndarray, features: ItemFeatures, progress: Optional[ProgressCallback] = None,
    stage: str = "abx",
) -> torch.Tensor:
    """DTW distances of every item pair of each cell pair in ``keys`` (``low * cells + high``).

    Returns:
        float32 ``(len(keys), G, G)`` blocks, rows the low cell's members, columns the high cell's
        (``G``: the width of ``cells.members``; 0 where a member is padding), on the features' device.
    """
    device = features.frames.device
    members = torch.from_numpy(cells.members).to(device)
    low = members[torch.from_numpy(keys // len(cells)).to(device)]  # (U, G)
    high = members[torch.from_numpy(keys % len(cells)).to(device)]  # (U, G)

    def step(done: int, total: int) -> None:
        report(progress, Progress(stage, done, total, unit="block"))

    return block_dtw(features, low, high, progress=step)


def task_errors(
    tasks: Tasks, cells: Cells, blocks: torch.Tensor, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Error and triplet count of every task.

    Args:
        tasks: the tasks; cells: their cells; blocks, keys: :func:`cell_distances` of every cell pair
            the tasks need (sorted ``keys``).

    Returns:
        ``(errors, triplets)``: float64 and int64 ``(tasks,)``.
    """
    device = blocks.device
    num_cells, size = len(cells), cells.members.shape[1]
    errors = np.zeros(len(tasks), dtype=np.float64)
    triplets = np.zeros(len(tasks), dtype=np.int64)
    valid_members = torch.from_numpy(cells.members >= 0).to(device)  # (cells, G)
    not_self = ~torch.eye(size, dtype=torch.bool, device=device)
    chunk = max(1, _SCORE_ELEMENTS // size**3)

    def oriented(rows: np.ndarray, columns: np.ndarray) -> torch.Tensor:
        key, flip = _block_keys(rows, columns, num_cells)
        block = blocks[torch.from_numpy(np.searchsorted(keys, key)).to(device)]  # (T, G, G)
        flip = torch.from_numpy(flip).to(device)[:, None, None]
        return torch.where(flip, block.transpose(1, 2), block)  # rows: X's items

    for start in range(0, len(tasks), chunk):
        part = slice(start, start + chunk)
        a, b, x = tasks.a[part], tasks.b[part], tasks.x[part]
        d_xa = oriented(x, a)[:, :, :, None]  # (T, Gx, Ga, 1)
        d_xb = oriented(x, b)[:, :, None, :]  # (T, Gx, 1, Gb)
        weight = (
            valid_members[torch.from_numpy(x).to(device)][:, :, None, None]
            & valid_members[torch.from_numpy(a).to(device)][:, None, :, None]
            & valid_members[torch.from_numpy(b).to(device)][:, None, None, :]
        )  # (T, Gx, Ga, Gb)
        if tasks.within:
            weight = weight & not_self[None, :, :, None]
        wrong = (d_xa > d_xb).to(torch.float32) + 0.5 * (d_xa == d_xb).to(torch.float32)
        count = weight.sum(dim=(1, 2, 3))
        errors[part] = ((wrong * weight).sum(dim=(1, 2, 3)) / count.clamp_min(1)).double().cpu().numpy()
        triplets[part] = count.cpu().numpy()
    return errors, triplets


def _mean_by(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` per distinct row of ``keys`` ``(n, k)``: ``(distinct keys, means)``."""
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.bincount(inverse, weights=values, minlength=distinct.shape[0])
    counts = np.bincount(inverse, minlength=distinct.shape[0])
    return distinct, sums / counts


def aggregate(tasks: Tasks, cells: Cells, errors: np.ndarray) -> tuple[float, dict[str, int]]:
    """libri-light's average: over contexts (and X speakers) per (speaker, phone A, phone B), then over
    speakers per phone pair, then over phone pairs. Returns the error (NaN without tasks) and counts."""
    if len(tasks) == 0:
        return float("nan"), {"phone_pairs": 0, "speakers": 0}
    speaker, phone_a, phone_b = cells.speaker[tasks.a], cells.phone[tasks.a], cells.phone[tasks.b]
    by_speaker, means = _mean_by(np.stack([speaker, phone_a, phone_b], axis=1), errors)
    pairs, per_pair = _mean_by(by_speaker[:, 1:], means)
    return float(per_pair.mean()), {"phone_pairs": int(pairs.shape[0]), "speakers": int(np.unique(speaker).size)}


def abx_errors(
    features: ItemFeatures,
    codes: ItemCodes,
    speaker_modes: tuple[str, ...] = SPEAKER_MODES,
    max_size_group: int = MAX_SIZE_GROUP,
    max_x_across: int = MAX_X_ACROSS,
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
    stage: str = "abx",
    cpu_threads: Optional[int] = 1,
) -> dict[str, dict[str, Any]]:
    """ABX error of items in each speaker mode, for one context mode (the one ``codes`` were made for).

    Args:
        features: the frames of every item (:class:`~cpcaudio.evaluate.abx.dtw.ItemFeatures`), on the
            device the work runs on.
        codes: phone, context and speaker codes of the same items (:func:`.items.item_codes`).
        speaker_modes: some of ``within``, ``across``.
        max_size_group: items kept per (context, speaker, phone) cell.
        max_x_across: X speakers drawn per A cell in the ``across`` mode.
        seed: seeds the cell subsampling and the X-speaker draws.
        progress: receives :class:`~cpcaudio.progress.Progress` events (blocks of DTW pairs done).
        cpu_threads: torch threads while the DTW runs on the CPU (None: leave as is). One by default: the
            DTW is many small operations, which extra threads slow down (badly on a busy machine).

    Returns:
        ``{speaker_mode: {"error": fraction (NaN without tasks), "items", "cells", "tasks", "triplets",
        "phone_pairs", "speakers"}}``.
    """
    for mode in speaker_modes:
        if mode not in SPEAKER_MODES:
            raise UsageError(f"unknown speaker mode {mode!r}; choose within or across")
    if max_size_group < 2 or max_x_across < 1:
        raise UsageError(f"max_size_group must be >= 2 and max_x_across >= 1, got {max_size_group}, {max_x_across}")
    previous_threads = torch.get_num_threads()
    if features.frames.device.type == "cpu" and cpu_threads is not None:
        torch.set_num_threads(max(1, int(cpu_threads)))
    try:
        return _abx_errors(features, codes, speaker_modes, max_size_group, max_x_across, seed, progress, stage)
    finally:
        torch.set_num_threads(previous_threads)


def _abx_errors(
    features: ItemFeatures, codes: ItemCodes, speaker_modes: tuple[str, ...], max_size_group: int,
    max_x_across: int, seed: int, progress: Optional[ProgressCallback], stage: str,
) -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cells = make_cells(codes, max_size_group, rng)
    built = {mode: within_tasks(cells) if mode == "within" else across_tasks(cells, max_x_across, rng)
             for mode in speaker_modes}
    needed = [_block_keys(t.x, other, len(cells))[0] for t in built.values() for other in (t.a, t.b)]
    keys = np.unique(np.concatenate(needed)) if needed else np.zeros(0, dtype=np.int64)
    blocks = cell_distances(cells, keys, features, progress, stage)
    results = {}
    for mode, tasks in built.items():
        errors, triplets = task_errors(tasks, cells, blocks, keys)
        error, counts = aggregate(tasks, cells, errors)
        results[mode] = {
            "error": error, "items": int(codes.phone.shape[0]), "items_kept": int((cells.members >= 0).sum()),
            "cells": len(cells), "tasks": len(tasks),
            "triplets": int(triplets.sum()), **counts,
        }
    return results
