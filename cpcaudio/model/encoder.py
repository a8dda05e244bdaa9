"""The convolutional encoder: raw signal (batch, channels, time) -> latents (batch, hidden, frames)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from cpcaudio.config import EncoderConfig
from cpcaudio.geometry import FrameGeometry, frame_geometry, num_frames
from cpcaudio.model.cpu_kernels import channel_norm, conv1d, cpu_autocast_enabled, fast_paths_enabled
from cpcaudio.model.gemm_conv import gemm_conv1d


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
        weight, bias, eps = self._affine()
        return channel_norm(x, weight, bias, eps)

    def forward_time_major(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (batch, time, channels). Returns: the same shape, normalised over channels."""
        weight, bias, eps = self._affine()
        return nn.functional.layer_norm(x, weight.shape, weight, bias, eps)

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(scale, shift, eps) of the biased norm that computes this one. Unbiased:
        (x - m) / sqrt(v * C / (C - 1) + eps) = sqrt(r) * (x - m) / sqrt(v + eps * r), r = (C - 1) / C."""
        if not self.unbiased:
            return self.weight, self.bias, self.eps
        channels = self.weight.shape[0]
        shrink = (channels - 1) / channels
        return self.weight * shrink**0.5, self.bias, self.eps * shrink


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

    def forward_time_major(self, x: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        """The same layer on time-major activations, the convolution as one matrix product
        (:func:`~cpcaudio.model.gemm_conv.gemm_conv1d`). Args: x (batch, time, in_channels), or
        (batch, in_channels, time) with ``channels_first``. Returns: (batch, out_time, out_channels)."""
        y = gemm_conv1d(x, self.conv, channels_first)  # (B, T, C), contiguous
        if isinstance(self.norm, nn.BatchNorm1d):  # statistics over (batch, time) as on (B, C, T)
            # ReLU on the norm's own (rows, C) output, not on a view of it: an in-place op on a view
            # makes autograd rebuild the base in backward (as_strided copies and zero fills).
            return self.activation(self.norm(y.view(-1, y.shape[-1]))).view_as(y)
        if isinstance(self.norm, ChannelNorm):
            y = self.norm.forward_time_major(y)
        return self.activation(y)


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
        if self.runs_time_major(signal):
            x = self.forward_time_major(signal).transpose(1, 2)  # (B, C, T), a view of time-major latents
        else:
            x = signal
            for layer in self.layers:
                x = layer(x)
        if lengths is None:
            return x, None
        frame_lengths = self.frame_lengths(lengths.to(x.device)).clamp(max=x.shape[-1])
        return x, frame_lengths

    def runs_time_major(self, signal: torch.Tensor) -> bool:
        """Whether :meth:`forward` takes the time-major path for ``signal``: on CPU in float32 with the
        fast paths on (:func:`~cpcaudio.model.cpu_kernels.fast_paths`) and outside autocast, for every
        normalisation with a time-major form (all but ``layer``), with or without gradients. Without
        (extraction, probes, validation) 1.3-1.6x faster than oneDNN's convolutions on the paper model;
        with gradients (training), with the wide layers as oneDNN convolutions over time-major
        memory and the first layer's thin weight gradient, the paper-config step (batch norm) measured
        0.574 against 0.603 s on (batch, channels, time) (docs/performance.md, round 7), the channel
        norms 8-11% faster already in round 4. GPUs always keep (batch, channels, time) (cuDNN's
        convolutions are fast)."""
        if not (
            signal.device.type == "cpu"
            and signal.dtype == torch.float32
            and fast_paths_enabled()
            and not cpu_autocast_enabled()
        ):
            return False
        return self.config.normalization in TIME_MAJOR_NORMS

    def forward_time_major(
        self, signal: torch.Tensor, valid_steps: Optional[list[torch.Tensor]] = None
    ) -> torch.Tensor:
        """Encode with every layer on time-major activations (see :meth:`ConvLayerBlock.forward_time_major`).

        Args:
            signal: (batch, channels, time).
            valid_steps: None, or per layer (batch,) valid output steps: each layer's output is zeroed
                beyond them (a padded batch encoded as each sequence alone, see
                :func:`cpcaudio.extract.features.encode_padded`).

        Returns:
            latents (batch, frames, hidden_dim), contiguous.
        """
        x, channels_first = signal, True  # (B, Cin, L); the first layer transposes it in its padding copy
        for index, layer in enumerate(self.layers):
            # Every layer runs time-major, the first too: with a short input window (one channel, kernel
            # 10) its framed product on (B, T, Cin * k) rows gives time-major output directly, and the
            # norm and ReLU of its wide output (512 x 3200 frames per second) are one fused pass each
            # instead of channel_norm's separate passes and a transposing copy into layer 2 (extraction
            # of 60 s, paper model, 2 threads: 1.37 -> 1.18 s).
            x, channels_first = layer.forward_time_major(x, channels_first=channels_first), False  # (B, T, C)
            if valid_steps is not None:
                keep = torch.arange(x.shape[1], device=x.device).view(1, -1, 1) < valid_steps[index].view(-1, 1, 1)
                x = torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))
        return x


TIME_MAJOR_NORMS = ("batch", "channel", "channel-unbiased", "none")  # the norms ConvLayerBlock runs time-major
