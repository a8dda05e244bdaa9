"""CPU fast paths of the model's layers, each with the plain PyTorch formulation as its fallback.

* :func:`linear`: ``F.linear`` for 2-D inputs, routed through oneDNN on x86 CPUs in float32;
* :func:`conv1d`: a convolution with a short input window as one matrix product over framed input;
* :func:`channel_norm`: layer norm over the channels of (batch, channels, time) without transposes.

The modules (``ConvLayerBlock``, ``ChannelNorm``, the heads, the loss) call these functions and never
choose a path themselves. :func:`fast_paths` switches them all off, for tests and benchmarks.

``linear`` in detail:

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
from torch import nn
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


def fast_paths_requested() -> bool:
    """Whether the fast paths are switched on (:func:`fast_paths`), compiled or not. Reformulations in
    plain PyTorch ops (the loss's scoring paths) follow this; the kernels follow :func:`fast_paths_enabled`."""
    return _FAST_PATHS


def fast_paths_enabled() -> bool:
    """Whether the CPU fast paths may run: allowed by :func:`fast_paths` and not inside ``torch.compile``
    (the compiler fuses the plain formulation itself, and cannot lower oneDNN calls on trained weights)."""
    return _FAST_PATHS and not _compiling()


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)
    if is_compiling is None:  # PyTorch < 2.3
        from torch._dynamo import is_compiling
    return bool(is_compiling())


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``x @ weight.T + bias`` by oneDNN (float32 CPU tensors; check :func:`onednn_available` first)."""
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
                    _ONEDNN_STATUS = bool(torch.allclose(onednn_linear(x, weight, bias), expected, atol=1e-4))
            except Exception:  # op missing in this build, or renamed in a later PyTorch: use F.linear
                _ONEDNN_STATUS = False
    return _ONEDNN_STATUS


class _OneDNNLinear(torch.autograd.Function):
    """y = x @ weight.T + bias with oneDNN products in forward and backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight.contiguous(), bias)  # (M, N)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_linear(grad, _transposed(weight), None)  # (M, N) @ (N, K) -> (M, K)
        if ctx.needs_input_grad[1]:
            grad_weight = onednn_linear(grad.t(), _transposed(x), None)  # (N, M) @ (M, K) -> (N, K)
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


class _ThinLinear(torch.autograd.Function):
    """``F.linear`` for an input with very few features (a framed short window: rows (M, K), K <= 32),
    whose weight gradient is computed as ``(x.T @ grad).T``: the BLAS streams the tall (M, N) gradient
    once as the right operand, where ``grad.T @ x`` (autograd's form) walks it transposed, 9x slower
    (paper layer 1: (32768, 512) gradient, 10 taps, 2 threads: 6.9 against 61 ms)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)  # (M, N)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad.mm(weight)  # (M, K)
        if ctx.needs_input_grad[1]:
            grad_weight = x.t().mm(grad).t()  # (N, K)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


def thin_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for 2-D ``x`` (rows, in_features) with few input features, with the
    fast weight gradient of :class:`_ThinLinear` on CPU (plain ``F.linear`` elsewhere and with the fast
    paths off). Returns: (rows, out_features)."""
    if x.dim() == 2 and x.device.type == "cpu" and fast_paths_enabled():
        return _ThinLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


# A conv whose input window (in_channels * kernel_size values) is at most this long runs as one matrix
# product over explicitly framed input on CPU: oneDNN's direct convolution is slow for so few input
# channels (the paper's first layer: 1 channel, kernel 10).
MAX_FRAMED_WINDOW = 32


def framed_conv1d(signal: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(signal)`` computed as a batched matrix product over the framed, padded signal.

    The same sums as the convolution, in another order: frames of ``kernel_size`` samples every
    ``stride`` (``unfold``, a small copy for a short window), then (out, in*k + 1) @ (in*k + 1, frames)
    per sequence (``bmm``), the bias folded in as a row of ones.

    Args:
        signal: (batch, in_channels, time).
        conv: the layer whose weight (out, in, k), bias, stride and padding are used.

    Returns:
        (batch, out_channels, frames), exactly the shape ``conv(signal)`` has.
    """
    (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
    batch = signal.shape[0]
    padded = nn.functional.pad(signal, (padding, padding))  # (B, Cin, L + 2p)
    frames = padded.unfold(2, kernel, stride)  # (B, Cin, T, k) view
    frames = frames.permute(0, 1, 3, 2).reshape(batch, -1, frames.shape[2])  # (B, Cin*k, T)
    weight = conv.weight.reshape(conv.out_channels, -1)  # (Cout, Cin*k)
    if conv.bias is not None:
        frames = torch.cat([frames, frames.new_ones(batch, 1, frames.shape[2])], dim=1)  # (B, Cin*k+1, T)
        weight = torch.cat([weight, conv.bias.unsqueeze(1)], dim=1)  # (Cout, Cin*k+1)
    # bmm against the expanded weight, not matmul: matmul folds the batch into the rows and transposes.
    return torch.bmm(weight.unsqueeze(0).expand(batch, -1, -1), frames)  # (B, Cout, T)


def conv1d(signal: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv(signal)``, as :func:`framed_conv1d` on CPU when the layer's input window is short.

    Args: signal (batch, in_channels, time). Returns: (batch, out_channels, frames).
    """
    (kernel,), (padding,) = conv.kernel_size, conv.padding
    framed = conv.in_channels * kernel <= MAX_FRAMED_WINDOW
    fits = signal.shape[-1] + 2 * padding >= kernel  # else conv raises its own error
    if framed and fits and signal.device.type == "cpu" and fast_paths_enabled():
        return framed_conv1d(signal, conv)
    return conv(signal)


class _ChannelNormFunction(torch.autograd.Function):
    """Layer norm over dim 1 of a contiguous (batch, channels, time) tensor, without transposing it.

    ``layer_norm`` wants the normalised axis last, which for (B, C, T) activations costs a transposed
    copy in and out of every norm in both passes, and leaves the next convolution a strided input to
    copy again. Here every pass streams along time: the channel reductions are means over dim 1 and
    small (1, C) @ (C, T) products, and backward recomputes the normalised input instead of storing it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        # Two passes (mean, then the mean square of the centred input): as exact as Welford's
        # var_mean, which is ten times slower over a strided axis.
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, T)
        y = x - mean  # (B, C, T), centred; becomes the output in place
        inverse_std = torch.rsqrt(y.square().mean(dim=1, keepdim=True) + eps)  # (B, 1, T)
        y.mul_(inverse_std).mul_(weight.view(1, -1, 1)).add_(bias.view(1, -1, 1))
        ctx.save_for_backward(x, weight, mean, inverse_std)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, inverse_std = ctx.saved_tensors
        channels = x.shape[1]
        grad = grad.contiguous()
        x_hat = torch.addcmul(-mean * inverse_std, x, inverse_std)  # (B, C, T)
        grad_x_hat = grad * x_hat  # (B, C, T); reused below as the buffer of grad_x
        grad_weight = grad_x_hat.sum(dim=(0, 2)) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(dim=(0, 2)) if ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d x = inverse_std * (w g - mean_c(w g) - x_hat * mean_c(w g x_hat)), means over channels.
            row = weight.view(1, 1, channels) / channels  # (1, 1, C)
            mean_wg = torch.matmul(row, grad)  # (B, 1, T)
            mean_wg_x_hat = torch.matmul(row, grad_x_hat)  # (B, 1, T)
            grad_x = torch.mul(grad, weight.view(1, -1, 1), out=grad_x_hat)
            grad_x.sub_(mean_wg).addcmul_(x_hat, mean_wg_x_hat, value=-1.0).mul_(inverse_std)
        return grad_x, grad_weight, grad_bias, None


def channel_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """Layer norm over dim 1 of (batch, channels, time), per time step, with a per-channel affine.

    On CPU in float32 the transpose-free :class:`_ChannelNormFunction`; elsewhere (GPUs, autocast) the
    fused ``layer_norm`` kernel with channels moved last and back. Returns: the shape of ``x``.
    """
    if fast_paths_enabled() and x.device.type == "cpu" and x.is_contiguous() and not cpu_autocast_enabled():
        return _ChannelNormFunction.apply(x, weight, bias, eps)
    y = F.layer_norm(x.transpose(1, 2), weight.shape, weight, bias, eps)  # weight.shape: constant when traced (ONNX)
    return y.transpose(1, 2)  # (B, C, T)
