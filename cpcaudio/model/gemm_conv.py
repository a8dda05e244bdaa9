"""A strided 1-D convolution on time-major activations as one matrix product (the encoder's CPU path).

oneDNN's direct convolution reaches about 40% of the same machine's matrix-multiply rate on the
paper's second layer (512 -> 512 channels, kernel 8, stride 4) and needs a layout reorder of its input
and output every call. On activations stored time-major, (batch, time, channels), the same sums are
one large matrix product and no reorder:

* **blocks** (the layers with many input channels): with ``m = ceil(k / s)``, pad the time axis so that
  it holds ``n = T + m - 1`` whole blocks of ``s`` samples and view it, without a copy, as
  ``(batch * n, s * in)``. One product with the ``m`` kernel slices side by side, ``(s * in, m * out)``,
  gives every block's contribution to each of the ``m`` outputs it feeds; output ``t`` is the sum of
  slice ``j``'s product at block ``t + j``, ``j < m`` (``m`` shifted views added). A kernel that is not
  a multiple of the stride is padded with zero taps (exact; a little extra work).
* **frames** (a short input window, e.g. the first layer's 1 channel x 10 samples): frame the padded
  input explicitly (``unfold``; ``k / s`` times the input, small here) and multiply once by the
  ``(in * k, out)`` weight. The blocks method would write an ``m``-times larger product instead.

:func:`choose_method` picks whichever writes fewer extra values. Both give exactly the sums of
``nn.Conv1d`` in another order (float rounding differs). The products run through
:func:`cpcaudio.model.cpu_kernels.linear` (oneDNN on x86 CPUs in float32, else ``F.linear``).

Where oneDNN runs (CPU, float32) a blocks layer on time-major input is faster still as oneDNN's own
convolution over that memory read as a channels-last image (:class:`_OnednnNwcConv`: no reorder, which
its channels-first convolution makes of the input gradient); its kernel gradient stays the blocks
method's single product.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import torch
from torch import nn
from torch.nn import functional as F

from cpcaudio.geometry import conv_output_length
from cpcaudio.model.cpu_kernels import linear, onednn_available, onednn_linear, thin_linear

Method = Literal["blocks", "frames"]
SHORT_WINDOW = 32  # in * k at most: a framed product runs through F.linear (see _frames_conv)


def choose_method(in_channels: int, out_channels: int, kernel: int, stride: int) -> Method:
    """``frames`` when framing copies fewer values than the blocks method's extra outputs, else ``blocks``.

    Per output frame, framing writes ``in * k`` values; the blocks method writes ``(m - 1) * out`` more
    products than the output holds (none when the kernel fits in one stride).
    """
    taps_per_block = -(-kernel // stride)  # m
    return "frames" if in_channels * kernel < (taps_per_block - 1) * out_channels else "blocks"


def _onednn_product(a: torch.Tensor) -> bool:
    """Whether a product with the left operand ``a`` runs through oneDNN (CPU, float32, oneDNN usable)."""
    return a.device.type == "cpu" and a.dtype == torch.float32 and onednn_available() and torch.backends.mkldnn.enabled


def _matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for 2-D operands; through oneDNN on CPU in float32 where it is available (``b`` given
    to it transposed: oneDNN's linear multiplies by its weight's transpose)."""
    if _onednn_product(a):
        return onednn_linear(a, b.t(), None)
    return torch.mm(a, b)


def _matmul_transposed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2-D operands, ``b`` dense. oneDNN's linear takes ``b`` as its (out, in) weight as
    it is, with no copy; a transposed view of a transposed copy (``_matmul(a, b.t().contiguous())``) ran
    paper layer 2's input gradient, (8200, 1024) @ (1024, 2048), in 115 instead of 104 ms (2 threads,
    medians of 7, the product alone)."""
    if _onednn_product(a):
        return onednn_linear(a, b, None)
    return torch.mm(a, b.t())


def _kernel_matrix(weight: torch.Tensor, taps: int, stride: int) -> torch.Tensor:
    """(Cout, Cin, k) -> (s * Cin, m * Cout): row (i, c), column (j, o) holds tap j*s + i (zero past k)."""
    out_channels, in_channels, kernel = weight.shape
    if taps * stride > kernel:
        weight = F.pad(weight, (0, taps * stride - kernel))  # zero taps: (Cout, Cin, m*s)
    weight = weight.reshape(out_channels, in_channels, taps, stride).permute(3, 1, 2, 0)  # (s, Cin, m, Cout)
    return weight.reshape(stride * in_channels, taps * out_channels)


def _padded_rows(x: torch.Tensor, stride: int, padding: int, blocks: int, used: int) -> torch.Tensor:
    """(B, L, Cin) time-major, any strides -> its zero-padded copy as (B*n, s*Cin) rows of n blocks."""
    batch, _, in_channels = x.shape
    padded = x.new_empty(batch, blocks * stride, in_channels)  # (B, n*s, Cin), time-major and dense
    padded[:, :padding] = 0
    padded[:, padding : padding + used] = x[:, :used]
    padded[:, padding + used :] = 0
    return padded.view(batch * blocks, stride * in_channels)


def _grad_products(grad: torch.Tensor, blocks: int, taps: int) -> torch.Tensor:
    """(B, T, Cout) output gradient, any strides -> (B*n, m*Cout): block q's slice j holds grad[q - j]
    (zero outside), the gradient of the blocks product's output written once, without zero-filled copies."""
    batch, frames, out_channels = grad.shape
    grad_products = grad.new_empty(batch, blocks, taps, out_channels)  # (B, n, m, Cout)
    for j in range(taps):
        grad_products[:, :j, j] = 0
        grad_products[:, j : j + frames, j] = grad
        grad_products[:, j + frames :, j] = 0
    return grad_products.view(batch * blocks, taps * out_channels)


def _grad_products_transposed(grad: torch.Tensor, blocks: int, taps: int) -> torch.Tensor:
    """:func:`_grad_products` transposed, (m*Cout, B*n), written directly: the weight gradient's product
    takes it as its dense left operand (a transposed view would be copied a second time)."""
    batch, frames, out_channels = grad.shape
    grad_products = grad.new_empty(taps, out_channels, batch, blocks)  # (m, Cout, B, n)
    source = grad.permute(2, 0, 1)  # (Cout, B, T) view
    for j in range(taps):
        grad_products[j, :, :, :j] = 0
        grad_products[j, :, :, j : j + frames] = source
        grad_products[j, :, :, j + frames :] = 0
    return grad_products.view(taps * out_channels, batch * blocks)


def _weight_grad(grad_products_t: torch.Tensor, rows: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """(m*Cout, B*n) transposed product gradient and (B*n, s*Cin) rows -> the (Cout, Cin, k) kernel
    gradient, one product."""
    taps = -(-kernel // stride)
    out_channels, in_channels = grad_products_t.shape[0] // taps, rows.shape[1] // stride
    grad_matrix = _matmul(grad_products_t, rows)  # (m*Cout, s*Cin)
    grad_weight = grad_matrix.view(taps, out_channels, stride, in_channels).permute(1, 3, 0, 2)
    return grad_weight.reshape(out_channels, in_channels, taps * stride)[:, :, :kernel]


class _BlocksConv(torch.autograd.Function):
    """The blocks method (module docstring) with a backward that writes each gradient once: the
    padding and the shifted sums are done in place instead of through autograd's zero-filled copies."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int,
        frames: int, channels_first: bool,
    ) -> torch.Tensor:
        if channels_first:
            x = x.transpose(1, 2)  # (B, L, Cin) view of (B, Cin, L)
        batch, length, in_channels = x.shape
        out_channels, _, kernel = weight.shape
        taps = -(-kernel // stride)  # m kernel slices of `stride` taps each
        blocks = frames + taps - 1
        used = min(length, blocks * stride - padding)  # input steps any output reads
        rows = _padded_rows(x, stride, padding, blocks, used)  # (B*n, s*Cin)
        matrix = _kernel_matrix(weight, taps, stride)  # (s*Cin, m*Cout)
        products = _matmul(rows, matrix).view(batch, blocks, taps, out_channels)  # (B, n, m, Cout)
        out = products[:, :frames, 0].clone() if taps == 1 else torch.add(products[:, :frames, 0], products[:, 1 : frames + 1, 1])
        for j in range(2, taps):
            out.add_(products[:, j : j + frames, j])
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(rows, matrix)
        ctx.shape = (batch, length, in_channels, out_channels, kernel, stride, padding, frames, taps, blocks, used)
        ctx.has_bias = bias is not None
        ctx.channels_first = channels_first
        return out  # (B, T, Cout)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        rows, matrix = ctx.saved_tensors
        batch, length, in_channels, out_channels, kernel, stride, padding, frames, taps, blocks, used = ctx.shape
        grad_products = _grad_products(grad, blocks, taps)  # (B*n, m*Cout)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_rows = _matmul_transposed(grad_products, matrix)  # (B*n, s*Cin)
            grad_x = grad_rows.view(batch, blocks * stride, in_channels)[:, padding : padding + used]
            if used < length:
                grad_x = F.pad(grad_x, (0, 0, 0, length - used))
            if ctx.channels_first:  # dense in the input's own layout: the layer below reads it fast
                grad_x = grad_x.transpose(1, 2).contiguous()
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_grad(grad_products.t(), rows, kernel, stride)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 1))
        return grad_x, grad_weight, grad_bias, None, None, None, None


class _OnednnNwcConv(torch.autograd.Function):
    """oneDNN's own convolution on the time-major activations, read in place as a channels-last
    (batch, in, 1, time) image: no layout reorder of the input, the output or the input gradient (the
    channels-first backward reorders its input gradient out of oneDNN's blocked layout, a copy the size
    of the input). The kernel gradient is the blocks method's single product over the padded input
    (oneDNN's channels-last weight gradient measured about 3x slower than that)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int,
        frames: int,
    ) -> torch.Tensor:
        image = _channels_last_image(x)  # (B, Cin, 1, L) view of (B, L, Cin)
        out = F.conv2d(image, weight.unsqueeze(2), bias, (1, stride), (0, padding))  # (B, Cout, 1, T)
        kernel = weight.shape[2]
        taps = -(-kernel // stride)
        blocks = frames + taps - 1
        used = min(x.shape[1], blocks * stride - padding)
        rows = _padded_rows(x, stride, padding, blocks, used) if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(image, weight, rows)  # the input only for its shape and layout: no copy kept
        ctx.geometry = (stride, padding, blocks, taps)
        ctx.has_bias = bias is not None
        out = _time_major(out)  # (B, T, Cout), a view of the convolution's output
        # Returned as a tensor of its own over the same memory, not as a view: autograd forbids in-place
        # ops (the next ReLU) on a view created inside a custom Function.
        return out.new_empty(0).set_(out.untyped_storage(), out.storage_offset(), out.shape, out.stride())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        image, weight, rows = ctx.saved_tensors
        stride, padding, blocks, taps = ctx.geometry
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_image = torch.ops.aten.convolution_backward(
                _channels_last_image(grad), image, weight.unsqueeze(2), None,
                [1, stride], [0, padding], [1, 1], False, [0, 0], 1, [True, False, False],
            )[0]  # (B, Cin, 1, L), channels-last
            grad_x = _time_major(grad_image)
        if ctx.needs_input_grad[1]:
            grad_products_t = _grad_products_transposed(grad, blocks, taps)  # (m*Cout, B*n)
            grad_weight = _weight_grad(grad_products_t, rows, weight.shape[2], stride)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 1))
        return grad_x, grad_weight, grad_bias, None, None, None


def _channels_last_image(x: torch.Tensor) -> torch.Tensor:
    """(B, L, C) -> the (B, C, 1, L) channels-last image over the same memory (a copy only if x is not dense)."""
    image = x.transpose(1, 2).unsqueeze(2)
    if image.is_contiguous(memory_format=torch.channels_last):
        return image
    return image.contiguous(memory_format=torch.channels_last)


def _time_major(image: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, T) channels-last -> the dense (B, T, C) over the same memory."""
    out = image.squeeze(2).transpose(1, 2)
    return out if out.is_contiguous() else out.contiguous()


def _frames_conv(x: torch.Tensor, conv: nn.Conv1d, frames: int) -> torch.Tensor:
    (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
    batch, _, in_channels = x.shape
    padded = F.pad(x, (0, 0, padding, padding))  # (B, L + 2p, Cin)
    windows = padded.unfold(1, kernel, stride)[:, :frames]  # (B, T, Cin, k) view
    rows = windows.reshape(batch * frames, in_channels * kernel)  # (B*T, Cin*k): the framing copy
    weight = conv.weight.reshape(conv.out_channels, in_channels * kernel)  # columns (c, tap)
    # A window this short is a thin product: the BLAS's own kernels handle its weight gradient without
    # the copy oneDNN makes of the transposed gradient, fastest as (rows.T @ grad).T (thin_linear).
    product = thin_linear if in_channels * kernel <= SHORT_WINDOW else linear
    return product(rows, weight, conv.bias).view(batch, frames, conv.out_channels)  # (B, T, Cout)


def gemm_conv1d(x: torch.Tensor, conv: nn.Conv1d, channels_first: bool = False) -> torch.Tensor:
    """``conv`` applied to time-major activations, as one matrix product (see the module docstring).

    Args:
        x: (batch, time, in_channels), time-major; any strides. With ``channels_first``, x is
            (batch, in_channels, time) instead (the first time-major layer after channels-first ones:
            its padding copy transposes, and its input gradient comes back in that layout).
        conv: a ``nn.Conv1d`` with integer padding, dilation 1 and groups 1.

    Returns:
        (batch, frames, out_channels), contiguous: ``conv(x.transpose(1, 2)).transpose(1, 2)``.
    """
    if conv.groups != 1 or conv.dilation != (1,) or not isinstance(conv.padding, tuple):
        raise ValueError("gemm_conv1d supports integer padding, dilation 1 and groups 1 only")
    (kernel,), (stride,), (padding,) = conv.kernel_size, conv.stride, conv.padding
    if channels_first and choose_method(conv.in_channels, conv.out_channels, kernel, stride) == "frames":
        x, channels_first = x.transpose(1, 2), False
    frames = int(conv_output_length(x.shape[2 if channels_first else 1], kernel, stride, padding))
    if frames < 1:
        raise ValueError(
            f"a convolution of kernel {kernel} needs at least {kernel - 2 * padding} input steps, got {frames}"
        )
    if choose_method(conv.in_channels, conv.out_channels, kernel, stride) == "frames":
        return _frames_conv(x, conv, frames)
    if not channels_first and _onednn_product(x):
        return _OnednnNwcConv.apply(x, conv.weight, conv.bias, stride, padding, frames)
    return _BlocksConv.apply(x, conv.weight, conv.bias, stride, padding, frames, channels_first)
