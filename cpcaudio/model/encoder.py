"""The convolutional encoder: raw signal (batch, channels, time) -> latents (batch, hidden, frames)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from cpcaudio.config import EncoderConfig
from cpcaudio.geometry import FrameGeometry, frame_geometry, num_frames
from cpcaudio.model.cpu_kernels import channel_norm, conv1d


class ChannelNorm(nn.Module):
    """Normalise every time step across channels, with a learned per-channel scale and shift.

    A LayerNorm over the channel axis of a (batch, channels, time) tensor: it does not mix time steps or
    sequences, so it behaves the same in training, evaluation and chunked extraction, whatever the batch.
    ``unbiased=True`` divides the variance by ``channels - 1`` instead of ``channels``: that is exactly
    CPC_audio's ``ChannelNorm`` (computed as the biased norm with a rescaled ``eps`` and scale, which is
    the same function).
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, unbiased: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.unbiased = unbiased
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (batch, channels, time). Returns: the same shape, normalised over channels."""
        if not self.unbiased:
            return channel_norm(x, self.weight, self.bias, self.eps)
        # (x - m) / sqrt(v * C / (C - 1) + eps) = sqrt(r) * (x - m) / sqrt(v + eps * r), r = (C - 1) / C
        channels = self.weight.shape[0]
        shrink = (channels - 1) / channels
        return channel_norm(x, self.weight * shrink**0.5, self.bias, self.eps * shrink)


def make_norm(kind: str, num_channels: int) -> nn.Module:
    """Normalisation layer for a (batch, channels, time) tensor.

    ``batch``: BatchNorm1d (statistics across the batch and time; padded frames count).
    ``channel``: :class:`ChannelNorm`, per time step across channels.
    ``channel-unbiased``: the same with the unbiased variance (CPC_audio's ``layerNorm``).
    ``layer``: GroupNorm with one group, across channels and time of each sequence.
    ``none``: identity.
    """
    norms = {
        "batch": lambda: nn.BatchNorm1d(num_channels),
        "channel": lambda: ChannelNorm(num_channels),
        "channel-unbiased": lambda: ChannelNorm(num_channels, unbiased=True),
        "layer": lambda: nn.GroupNorm(1, num_channels),
        "none": nn.Identity,
    }
    if kind not in norms:
        raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(norms)}")
    return norms[kind]()


class ConvLayerBlock(nn.Module):
    """One encoder layer: Conv1d -> normalisation -> ReLU (in place: no norm needs its output)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, norm: str
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.norm = make_norm(norm, out_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (batch, in_channels, time). Returns: (batch, out_channels, out_time)."""
        return self.activation(self.norm(conv1d(x, self.conv)))


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
        return num_frames(lengths.long(), self.config.kernel_sizes, self.config.strides, self.paddings)

    def forward(
        self, signal: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Encode a padded batch.

        Args:
            signal: (batch, channels, time).
            lengths: (batch,) valid samples per sequence, or None when every sample is valid.

        Returns:
            latents (batch, hidden_dim, frames) and their valid frames per sequence (batch,), or None
            when ``lengths`` is None (as torchaudio's ``ConvLayerBlock`` does).
        """
        if signal.dim() != 3 or signal.shape[1] != self.config.in_channels:
            raise ValueError(
                f"encoder expects (batch, {self.config.in_channels}, time), got {tuple(signal.shape)}"
            )
        x = signal
        for layer in self.layers:
            x = layer(x)
        if lengths is None:
            return x, None
        frame_lengths = self.frame_lengths(lengths.to(x.device)).clamp(max=x.shape[-1])
        return x, frame_lengths
