"""The convolutional encoder: raw signal (batch, channels, time) -> latents (batch, hidden, frames)."""

from __future__ import annotations

import torch
from torch import nn

from cpcaudio.config import EncoderConfig
from cpcaudio.geometry import FrameGeometry, frame_geometry, num_frames


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
        # layer_norm over the last axis is a fused kernel; move channels last and back.
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


class ConvLayerBlock(nn.Module):
    """One encoder layer: Conv1d -> normalisation -> ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, norm: str
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.norm = make_norm(norm, out_channels)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (batch, in_channels, time). Returns: (batch, out_channels, out_time)."""
        return self.activation(self.norm(self.conv(x)))


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
