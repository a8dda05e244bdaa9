"""The convolutional encoder: raw signal (batch, channels, time) -> latents (batch, hidden, frames)."""

from __future__ import annotations

import torch
from torch import nn

from cpcaudio.config import EncoderConfig
from cpcaudio.geometry import FrameGeometry, frame_geometry, num_frames
from cpcaudio.model.cpu_kernels import cpu_autocast_enabled, fast_paths_enabled


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


class ChannelNorm(nn.Module):
    """Normalise every time step across channels, with a learned per-channel scale and shift.

    This is CPC_audio's ``ChannelNorm`` (a LayerNorm over the channel axis of a (batch, channels, time)
    tensor): it does not mix time steps or sequences, so it behaves the same in training, evaluation and
    chunked extraction, whatever the batch.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (batch, channels, time). Returns: the same shape, normalised over channels."""
        if fast_paths_enabled() and x.device.type == "cpu" and x.is_contiguous() and not cpu_autocast_enabled():
            return _ChannelNormFunction.apply(x, self.weight, self.bias, self.eps)
        # Elsewhere (GPUs, autocast) the fused layer_norm kernel with channels moved last and back.
        y = nn.functional.layer_norm(x.transpose(1, 2), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.transpose(1, 2)  # (B, C, T)


def make_norm(kind: str, num_channels: int) -> nn.Module:
    """Normalisation layer for a (batch, channels, time) tensor.

    ``batch``: BatchNorm1d (statistics across the batch and time; padded frames count).
    ``channel``: :class:`ChannelNorm`, per time step across channels.
    ``layer``: GroupNorm with one group, across channels and time of each sequence.
    ``none``: identity.
    """
    norms = {
        "batch": lambda: nn.BatchNorm1d(num_channels),
        "channel": lambda: ChannelNorm(num_channels),
        "layer": lambda: nn.GroupNorm(1, num_channels),
        "none": nn.Identity,
    }
    if kind not in norms:
        raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(norms)}")
    return norms[kind]()


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


class ConvLayerBlock(nn.Module):
    """One encoder layer: Conv1d -> normalisation -> ReLU (in place: no norm needs its output)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, norm: str
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.norm = make_norm(norm, out_channels)
        self.activation = nn.ReLU(inplace=True)
        self.framed = in_channels * kernel_size <= MAX_FRAMED_WINDOW

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (batch, in_channels, time). Returns: (batch, out_channels, out_time)."""
        fits = x.shape[-1] + 2 * self.conv.padding[0] >= self.conv.kernel_size[0]  # else conv raises
        if self.framed and fits and x.device.type == "cpu" and fast_paths_enabled():
            y = framed_conv1d(x, self.conv)
        else:
            y = self.conv(x)
        return self.activation(self.norm(y))


class ConvEncoder(nn.Module):
    """Strided 1-D conv stack; for 16 kHz audio the CPC paper's 5 layers give one frame per 10 ms."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.paddings = config.resolved_paddings()
        channels = [config.in_channels] + [config.hidden_dim] * len(config.kernel_sizes)
        self.layers = nn.ModuleList(
            ConvLayerBlock(c_in, c_out, k, s, p, config.normalization)
            for c_in, c_out, k, s, p in zip(
                channels[:-1], channels[1:], config.kernel_sizes, config.strides, self.paddings
            )
        )
        self.geometry: FrameGeometry = frame_geometry(config.kernel_sizes, config.strides, self.paddings)

    def num_frames(self, num_samples: int) -> int:
        """Exact number of output frames for ``num_samples`` input samples."""
        return num_frames(num_samples, self.config.kernel_sizes, self.config.strides, self.paddings)

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames per sequence. Args: lengths (batch,) samples. Returns: (batch,) frames."""
        out = lengths.clone()
        for kernel, stride, padding in zip(self.config.kernel_sizes, self.config.strides, self.paddings):
            out = torch.div(out + 2 * padding - kernel, stride, rounding_mode="floor") + 1
            out = out.clamp(min=0)
        return out

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """Args: signal (batch, channels, time). Returns: latents (batch, hidden_dim, frames)."""
        if signal.dim() != 3 or signal.shape[1] != self.config.in_channels:
            raise ValueError(
                f"encoder expects (batch, {self.config.in_channels}, time), got {tuple(signal.shape)}"
            )
        x = signal
        for layer in self.layers:
            x = layer(x)
        return x
