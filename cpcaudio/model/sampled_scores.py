"""Sampled scores: each row's dot products with its own few candidates from a pool, and their gradients.

``sampled_scores(rows, pool, candidates)[r, j] = rows[r] . pool[candidates[r, j]]``: the entries of the
dense product ``rows @ pool.T`` at M sampled columns per row, computed without the dense product (whose
cost grows with the pool) and without materialising the (R, M, D) tensor of gathered pool rows (whose
memory traffic makes the plain gather-then-multiply slower than the dense product on CPUs). This is
what InfoNCE needs once the pool is much larger than the 1 + N candidates of a prediction
(:mod:`cpcaudio.model.loss` chooses).

Forward and backward are three "gather and combine" kernels that PyTorch already has:

* forward, a sampled dense-dense product: ``torch.sparse.sampled_addmm`` on CPU (the candidates as the
  pattern of a CSR matrix with M entries per row); on other devices (and under ``torch.compile``) the
  pool rows are gathered in bounded chunks and multiplied with ``bmm``; the dense product where the
  pool has fewer rows than a row has candidates (``sampled_addmm`` refuses more entries than columns);
* ``d rows = G @ pool`` with G the sparse (R, P) matrix of score gradients: ``embedding_bag`` over the
  pool with the gradients as per-sample weights;
* ``d pool = G.T @ rows``: the same ``embedding_bag`` over the rows, with the (row, candidate) pairs
  sorted by candidate (one stable sort of R * M integers).

On CPU, a pool larger than the L2 cache is processed in blocks of channels (``POOL_BLOCK_BYTES``): the
candidates of a row are spread uniformly over the pool, so a pool that does not fit in cache is read from
memory once per candidate; a block of channels fits, and the blocks' partial dot products are added.
Candidate lists may repeat a pool row (negatives are drawn with replacement): every entry counts.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch.nn import functional as F

from cpcaudio.geometry import ceil_div
from cpcaudio.model.cpu_kernels import _compiling

POOL_BLOCK_BYTES = 2**21  # channels of a CPU pool are blocked so that one block fits in a 2 MiB L2
MIN_BLOCK_WIDTH = 64  # narrower blocks spend more on the per-pair loop than they save in cache misses
GATHER_CHUNK_BYTES = 2**28  # non-CPU forward: at most this many bytes of gathered pool rows at a time
_SPARSE_FORWARD = True  # tests switch the CPU forward to the device-agnostic gather with this


def channel_blocks(pool_rows: int, dim: int, itemsize: int, budget: int = POOL_BLOCK_BYTES) -> list[slice]:
    """Slices of the channel axis such that ``pool_rows`` x (block width) values fit in ``budget`` bytes.

    Args:
        pool_rows: P, rows of the pool.
        dim: D, channels.
        itemsize: bytes per value.
        budget: bytes one block may take.

    Returns:
        Contiguous slices covering ``range(dim)``, all but the last starting at multiples of 16 channels,
        none narrower than ``MIN_BLOCK_WIDTH`` (so the budget is a target, not a bound, for huge pools);
        one slice of everything when the pool fits.
    """
    blocks = min(ceil_div(pool_rows * dim * itemsize, budget), dim // MIN_BLOCK_WIDTH)
    if blocks <= 1:
        return [slice(0, dim)]
    bounds = [16 * ((index * dim // blocks) // 16) for index in range(blocks)] + [dim]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


def _blocks_of(pool: torch.Tensor) -> list[slice]:
    if pool.device.type != "cpu":
        return [slice(0, pool.shape[1])]
    return channel_blocks(pool.shape[0], pool.shape[1], pool.element_size(), POOL_BLOCK_BYTES)


def _columns(matrix: torch.Tensor, block: slice) -> torch.Tensor:
    """``matrix[:, block]`` as a dense (rows, width) tensor (a view when it is the whole width)."""
    if block.start == 0 and block.stop == matrix.shape[1]:
        return matrix.contiguous()
    return matrix[:, block].contiguous()


def _sparse_forward(rows: torch.Tensor, pool: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(R, M) scores with ``torch.sparse.sampled_addmm`` (CPU), block of channels by block."""
    num_rows, per_row = candidates.shape
    crow = torch.arange(0, num_rows * per_row + 1, per_row, device=candidates.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on sampled_addmm only
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow, candidates.reshape(-1), rows.new_zeros(num_rows * per_row), (num_rows, pool.shape[0]),
            check_invariants=False,
        )
        scores: Optional[torch.Tensor] = None
        for block in _blocks_of(pool):
            partial = torch.sparse.sampled_addmm(
                pattern, _columns(rows, block), _columns(pool, block).t(), beta=0.0
            ).values()  # (R * M,)
            scores = partial if scores is None else scores.add_(partial)
    assert scores is not None
    return scores.view(num_rows, per_row)


def _gather_forward(rows: torch.Tensor, pool: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(R, M) scores by gathering the candidates' pool rows in chunks of at most GATHER_CHUNK_BYTES."""
    num_rows, per_row = candidates.shape
    dim = rows.shape[1]
    out = rows.new_empty(num_rows, per_row)
    chunk = max(1, GATHER_CHUNK_BYTES // max(1, per_row * dim * rows.element_size()))
    for start in range(0, num_rows, chunk):
        stop = min(start + chunk, num_rows)
        gathered = pool.index_select(0, candidates[start:stop].reshape(-1)).view(stop - start, per_row, dim)
        out[start:stop] = torch.bmm(gathered, rows[start:stop].unsqueeze(2)).squeeze(2)  # (r, M)
    return out


def _weighted_sums(
    indices: torch.Tensor, offsets: torch.Tensor, table: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``out[i] = sum_{j in bag i} weights[j] * table[indices[j]]`` (bags start at ``offsets``), by blocks
    of channels of ``table`` on CPU. Returns: (len(offsets), table.shape[1])."""
    blocks = _blocks_of(table)
    parts = [
        F.embedding_bag(indices, _columns(table, block), offsets, mode="sum", per_sample_weights=weights)
        for block in blocks
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class _SampledScores(torch.autograd.Function):
    """scores[r, j] = rows[r] . pool[candidates[r, j]], with the gradients of both operands."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, pool: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows, pool, candidates)
        if candidates.shape[1] > pool.shape[0]:  # more candidates than pool rows: the dense product is smaller
            return torch.mm(rows, pool.t()).gather(1, candidates)  # (R, M)
        if rows.device.type == "cpu" and _SPARSE_FORWARD and not _compiling():
            return _sparse_forward(rows, pool, candidates)
        return _gather_forward(rows, pool, candidates)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        rows, pool, candidates = ctx.saved_tensors
        num_rows, per_row = candidates.shape
        flat = candidates.reshape(-1)  # (R * M,) pool row of every pair
        weights = grad.contiguous().reshape(-1)  # (R * M,) d loss / d score of every pair
        grad_rows = grad_pool = None
        if ctx.needs_input_grad[0]:  # d rows[r] = sum_j g[r, j] pool[c[r, j]]
            bags = torch.arange(0, num_rows * per_row, per_row, device=flat.device)
            grad_rows = _weighted_sums(flat, bags, pool, weights)  # (R, D)
        if ctx.needs_input_grad[1]:  # d pool[p] = sum over pairs (r, j) with c[r, j] = p of g[r, j] rows[r]
            keys = flat.to(torch.int32) if pool.shape[0] < 2**31 else flat  # a narrower radix sort
            sorted_keys, order = torch.sort(keys, stable=True)
            starts = torch.searchsorted(sorted_keys, torch.arange(pool.shape[0], device=flat.device, dtype=keys.dtype))
            pair_rows = torch.div(order, per_row, rounding_mode="floor")  # (R * M,) row of each sorted pair
            sorted_weights = weights.index_select(0, order)  # (R * M,)
            grad_pool = _weighted_sums(pair_rows, starts.to(pair_rows.dtype), rows, sorted_weights)  # (P, D)
        return grad_rows, grad_pool, None


def sampled_scores(rows: torch.Tensor, pool: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Dot products of every row with its own candidates from the pool.

    Args:
        rows: (R, D) floating point.
        pool: (P, D), same dtype and device.
        candidates: (R, M) long indices into the pool's rows (repeats allowed).

    Returns:
        (R, M) with ``[r, j] = rows[r] . pool[candidates[r, j]]``, differentiable in ``rows`` and ``pool``.
    """
    if rows.dim() != 2 or pool.dim() != 2 or candidates.dim() != 2 or candidates.shape[0] != rows.shape[0]:
        raise ValueError(
            f"sampled_scores expects rows (R, D), pool (P, D), candidates (R, M), got "
            f"{tuple(rows.shape)}, {tuple(pool.shape)}, {tuple(candidates.shape)}"
        )
    if candidates.numel() == 0:
        return rows.new_zeros(candidates.shape)
    return _SampledScores.apply(rows.contiguous(), pool.contiguous(), candidates.contiguous())
