"""Batched DTW against a plain double loop written as libri-light's Cython kernel reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpcaudio.evaluate.abx.distances import angular_distances, unit_frames
from cpcaudio.evaluate.abx.dtw import ItemFeatures, block_dtw, dtw_batch, padded_length


def naive_dtw(distances: np.ndarray) -> float:
    """Cost / path length, the path found by backtracking (diagonal, then left, then up on ties)."""
    n, m = distances.shape
    cost = np.zeros((n, m), dtype=np.float32)
    cost[0, 0] = distances[0, 0]
    for i in range(1, n):
        cost[i, 0] = distances[i, 0] + cost[i - 1, 0]
    for j in range(1, m):
        cost[0, j] = distances[0, j] + cost[0, j - 1]
    for i in range(1, n):
        for j in range(1, m):
            cost[i, j] = distances[i, j] + min(cost[i - 1, j], cost[i - 1, j - 1], cost[i, j - 1])
    i, j, steps = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diagonal = cost[i - 1, j], cost[i, j - 1], cost[i - 1, j - 1]
        if diagonal <= left and diagonal <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        steps += 1
    steps += i + j  # along the first row or column to the origin
    return float(cost[n - 1, m - 1] / steps)


@pytest.mark.parametrize("discrete", [False, True])
def test_dtw_batch_equals_the_double_loop(discrete: bool) -> None:
    rng = np.random.default_rng(0)
    batch, n, m = 300, 9, 14
    if discrete:  # one-hot units: distances 0 or 1/2, ties everywhere
        distances = (rng.integers(0, 2, (batch, n, m)) * 0.5).astype(np.float32)
    else:
        distances = rng.random((batch, n, m)).astype(np.float32)
    lengths_x = rng.integers(1, n + 1, batch)
    lengths_y = rng.integers(1, m + 1, batch)
    got = dtw_batch(torch.from_numpy(distances), torch.from_numpy(lengths_x), torch.from_numpy(lengths_y)).numpy()
    expected = [naive_dtw(distances[b, : lengths_x[b], : lengths_y[b]]) for b in range(batch)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # the padding beyond the lengths must not matter
    noisy = distances + 10.0 * (np.arange(n)[None, :, None] >= lengths_x[:, None, None])
    again = dtw_batch(torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(lengths_x), torch.from_numpy(lengths_y))
    np.testing.assert_array_equal(again.numpy(), got)


def test_unnormalised_cost_of_a_hand_example() -> None:
    distances = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 1.0]]])
    total = dtw_batch(distances, torch.tensor([2]), torch.tensor([3]), normalized=False)
    assert total.item() == pytest.approx(1.0)  # (0,0) -> (1,1) -> (1,2)
    assert dtw_batch(distances, torch.tensor([2]), torch.tensor([3])).item() == pytest.approx(1.0 / 3)


def test_angular_distance_and_zero_frames() -> None:
    frames = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    unit, zero = unit_frames(frames)
    d = angular_distances(unit[None], unit[None], zero[None], zero[None])[0]
    assert d[0, 1].item() == pytest.approx(0.5)
    assert d[0, 2].item() == pytest.approx(1.0)
    assert d[0, 0].item() == pytest.approx(0.0, abs=1e-3)
    assert d[3, 0].item() == 1.0 and d[3, 4].item() == 0.0  # libri-light's singularity rule


def test_block_dtw_equals_per_pair_dtw() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.normal(size=(int(rng.integers(1, 30)), 5)).astype(np.float32) for _ in range(40)]
    arrays[3][1] = 0.0  # one zero frame
    features = ItemFeatures.from_arrays(arrays)
    low = torch.tensor([[0, 1, 2, -1], [5, -1, -1, -1], [7, 8, 9, 10]])
    high = torch.tensor([[3, 4, -1, -1], [5, 6, 11, 12], [13, 14, 15, 16]])
    got = block_dtw(features, low, high, max_elements=4096).numpy()  # small: several chunks and batches
    for u in range(low.shape[0]):
        for a in range(low.shape[1]):
            for b in range(high.shape[1]):
                i, j = int(low[u, a]), int(high[u, b])
                if i < 0 or j < 0:
                    assert got[u, a, b] == 0.0
                    continue
                x, xz = unit_frames(torch.from_numpy(arrays[i]))
                y, yz = unit_frames(torch.from_numpy(arrays[j]))
                distances = angular_distances(x[None], y[None], xz[None], yz[None])[0].numpy()
                # acos near 1 turns the rounding of a dot product (~1e-7) into ~1e-4 (an item with itself)
                assert got[u, a, b] == pytest.approx(naive_dtw(distances), abs=3e-4)


def test_padded_lengths_bound_the_padding() -> None:
    lengths = np.arange(1, 500)
    padded = padded_length(lengths)
    assert (padded >= lengths).all() and (padded[:8] == lengths[:8]).all()
    assert (padded <= np.ceil(lengths * 1.25) + 1).all()
    assert len(np.unique(padded)) < 60  # few distinct batch shapes
