"""CPU fast paths. ``linear``: ``F.linear`` for 2-D inputs, routed through oneDNN on x86 CPUs in float32.

On CPUs, PyTorch computes a float32 ``F.linear`` / ``mm`` with the BLAS it was built with (MKL for
the x86 wheels). On CPUs where that BLAS runs a narrower vector path than the hardware has (e.g. MKL's
AVX2 kernels on AMD processors with AVX-512), oneDNN, which PyTorch also ships for its convolutions,
multiplies the same float32 matrices about twice as fast. :func:`linear` computes exactly
``x @ weight.T + bias`` in float32 (only the summation order differs) with oneDNN in the forward and
in both backward products, and falls back to ``F.linear`` everywhere else: other devices and dtypes,
under autocast, in float64 (so exactness tests see plain PyTorch), and wherever the oneDNN op is
missing or fails a one-time self-check against ``torch.mm``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Optional

import torch
from torch.nn import functional as F

_ONEDNN_STATUS: Optional[bool] = None  # None: not checked yet
MIN_ONEDNN_MACS = 2**18  # smaller products: the BLAS call's lower overhead wins (~10 us per oneDNN call)
_FAST_PATHS = True


@contextlib.contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Switch the model's CPU fast paths on or off inside a ``with`` block (default: on).

    Off, every layer runs its plain PyTorch formulation: ``F.linear``, ``conv1d``, ``layer_norm`` over
    transposed activations. Results agree to float rounding either way; benchmarks use this to time
    both in one process, and FLOP counters that only know standard ops see every product.
    """
    global _FAST_PATHS
    previous, _FAST_PATHS = _FAST_PATHS, enabled
    try:
        yield
    finally:
        _FAST_PATHS = previous


def fast_paths_enabled() -> bool:
    """Whether the CPU fast paths may run: allowed by :func:`fast_paths` and not inside ``torch.compile``
    (the compiler fuses the plain formulation itself, and cannot lower oneDNN calls on trained weights)."""
    return _FAST_PATHS and not _compiling()


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if is_compiling is None:  # PyTorch < 2.3
        from torch._dynamo import is_compiling
    return bool(is_compiling())


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def onednn_available() -> bool:
    """Whether this PyTorch has a working oneDNN float32 linear on CPU (checked once, then cached)."""
    global _ONEDNN_STATUS
    if _ONEDNN_STATUS is None:
        _ONEDNN_STATUS = False
        if torch.backends.mkldnn.is_available():
            try:
                generator = torch.Generator().manual_seed(0)
                x = torch.randn(67, 45, generator=generator)
                weight = torch.randn(33, 45, generator=generator)
                bias = torch.randn(33, generator=generator)
                expected = torch.addmm(bias, x, weight.t())
                with torch.no_grad():
                    _ONEDNN_STATUS = bool(torch.allclose(_onednn_linear(x, weight, bias), expected, atol=1e-4))
            except Exception:  # op missing in this build, or renamed in a later PyTorch: use F.linear
                _ONEDNN_STATUS = False
    return _ONEDNN_STATUS


class _OneDNNLinear(torch.autograd.Function):
    """y = x @ weight.T + bias with oneDNN products in forward and backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight.contiguous(), bias)  # (M, N)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad, _transposed(weight), None)  # (M, N) @ (N, K) -> (M, K)
        if ctx.needs_input_grad[1]:
            grad_weight = _onednn_linear(grad.t(), _transposed(x), None)  # (N, M) @ (M, K) -> (N, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


def _transposed(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix.t()`` as oneDNN's weight operand: the transposed view of a dense matrix is fast; a
    strided one (a step's rows of a (B, T, K, C) tensor) is made dense first, because oneDNN re-packs
    a sparse-strided weight on every call (milliseconds), and a row-major copy beats a transposed one."""
    return matrix.t() if matrix.is_contiguous() else matrix.contiguous().t()


def _use_onednn(*tensors: Optional[torch.Tensor]) -> bool:
    present = [t for t in tensors if t is not None]
    return (
        fast_paths_enabled()
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.layout == torch.strided for t in present)
        and torch.backends.mkldnn.enabled
        and not cpu_autocast_enabled()
        and onednn_available()
    )


def cpu_autocast_enabled() -> bool:
    """Whether CPU autocast is on (fast paths written for float32 step aside under it)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # PyTorch < 2.4
        return torch.is_autocast_cpu_enabled()


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x @ weight.T + bias``, as ``F.linear``, through oneDNN where that is faster (see module doc).

    Args:
        x: (rows, in_features); a view with a row stride (e.g. one step of a (B, T, K, C) tensor) is fine.
        weight: (out_features, in_features).
        bias: (out_features,) or None.

    Returns:
        (rows, out_features).
    """
    if x.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"linear expects a 2-D input and weight, got {tuple(x.shape)} and {tuple(weight.shape)}")
    if x.shape[0] * x.shape[1] * weight.shape[0] >= MIN_ONEDNN_MACS and _use_onednn(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
