"""Channel groups with their own encoder and context network (``utterance.views = channels``).

A multichannel signal (e.g. a 6-axis IMU: accelerometer on channels 0-2, gyroscope on 3-5) is split into
the groups of ``utterance.channel_groups``; each group has its own conv encoder and its own recurrent
context network, ``encoder.hidden_dim / G`` and ``context.hidden_dim / G`` wide for G groups (channels in
no group are not read). Their outputs are concatenated along the feature axis in group order, so the
model's z and c keep the config's widths: extraction, streaming, feature stores and ONNX export see an
ordinary encoder and context network, and a layer's features are every group's side by side. CPC's
InfoNCE runs on that joint stream (the heads read every group's context and predict every group's
latents); the utterance loss contrasts the groups' pooled contexts (:mod:`cpcaudio.model.utterance`).

:class:`GroupedEncoder` is a :class:`~cpcaudio.model.encoder.ConvEncoder` whose layer i runs every
group's layer i on that group's slice of the channels, so code that walks ``encoder.layers`` (the
padded-batch extraction) works unchanged. :class:`GroupedContext` holds one
:class:`~cpcaudio.model.context.ContextNetwork` per group; its recurrent state is the tuple of theirs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import nn

from cpcaudio.config import CPCConfig, EncoderConfig
from cpcaudio.errors import ConfigError
from cpcaudio.geometry import frame_geometry
from cpcaudio.model.context import ContextNetwork, RecurrentState
from cpcaudio.model.encoder import ConvEncoder, ConvLayerBlock


def uses_channel_groups(config: CPCConfig) -> bool:
    """Whether the model has one encoder and context network per channel group."""
    return config.utterance.loss != "none" and config.utterance.views == "channels"


def build_encoder(config: CPCConfig) -> ConvEncoder:
    """The model's encoder: a :class:`GroupedEncoder` with channel groups, else a plain ConvEncoder."""
    if uses_channel_groups(config):
        return GroupedEncoder(config.encoder, config.utterance.channel_groups)
    return ConvEncoder(config.encoder)


def build_context_network(config: CPCConfig) -> nn.Module:
    """The model's context network: a :class:`GroupedContext` with channel groups, else a ContextNetwork."""
    if uses_channel_groups(config):
        return GroupedContext(config.encoder.hidden_dim, config, len(config.utterance.channel_groups))
    return ContextNetwork(config.encoder.hidden_dim, config.context)


class GroupedLayer(nn.Module):
    """One encoder layer of every group: (batch, channels in, time) -> (batch, G * width, time out).

    Args:
        blocks: group g's layer, in group order.
        channel_groups: the input channels of each group (the first layer), or None: the input is the
            previous layer's output, split into G equal slices.
    """

    def __init__(self, blocks: list[ConvLayerBlock], channel_groups: Optional[tuple[tuple[int, ...], ...]]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.channel_groups = channel_groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x (batch, channels, time). Returns: (batch, G * width, out_time), groups side by side."""
        if self.channel_groups is not None:
            parts = [x[:, list(group)] for group in self.channel_groups]  # (B, |group|, T) each
        else:
            parts = x.chunk(len(self.blocks), dim=1)  # (B, width, T) each
        return torch.cat([block(part) for block, part in zip(self.blocks, parts)], dim=1)


class GroupedEncoder(ConvEncoder):
    """One conv encoder per channel group, ``config.hidden_dim / G`` channels each, outputs concatenated.

    Same kernels, strides and paddings for every group, hence the same frames; ``num_frames`` and
    ``frame_lengths`` are ConvEncoder's.

    Raises:
        ConfigError: a group names a channel the input does not have (``encoder.in_channels``).
    """

    def __init__(self, config: EncoderConfig, channel_groups: tuple[tuple[int, ...], ...]) -> None:
        nn.Module.__init__(self)  # ConvEncoder's attributes, with grouped layers instead of its own
        highest = max(channel for group in channel_groups for channel in group)
        if highest >= config.in_channels:
            raise ConfigError(
                f"utterance.channel_groups names channel {highest} but the signal has encoder.in_channels="
                f"{config.in_channels}; use channel indices below {config.in_channels}"
            )
        self.config = config
        self.channel_groups = tuple(tuple(group) for group in channel_groups)
        self.paddings = config.resolved_paddings()
        width = config.hidden_dim // len(self.channel_groups)
        layers = []
        for number, (kernel, stride, padding) in enumerate(zip(config.kernel_sizes, config.strides, self.paddings)):
            blocks = [
                ConvLayerBlock(
                    len(group) if number == 0 else width, width, kernel, stride, padding, config.normalization
                )
                for group in self.channel_groups
            ]
            layers.append(GroupedLayer(blocks, self.channel_groups if number == 0 else None))
        self.layers = nn.ModuleList(layers)
        self.geometry = frame_geometry(config.kernel_sizes, config.strides, self.paddings)

    def runs_time_major(self, signal: torch.Tensor) -> bool:
        """Never: the grouped layers run on (batch, channels, time) (see ConvEncoder.runs_time_major)."""
        return False

    def forward(
        self, signal: torch.Tensor, lengths: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Args: signal (batch, in_channels, time); lengths (batch,) valid samples or None.
        Returns: latents (batch, hidden_dim, frames), groups side by side, and valid frames (batch,) or None."""
        if signal.dim() != 3 or signal.shape[1] != self.config.in_channels:
            raise ValueError(f"encoder expects (batch, {self.config.in_channels}, time), got {tuple(signal.shape)}")
        x = signal
        for layer in self.layers:
            x = layer(x)  # (B, hidden_dim, frames of the layer)
        if lengths is None:
            return x, None
        return x, self.frame_lengths(lengths.to(x.device)).clamp(max=x.shape[-1])


class GroupedContext(nn.Module):
    """One recurrent context network per group, each reading its group's slice of z.

    Args:
        input_dim: width of z (every group's latents side by side; G equal slices).
        config: the model's config (``context.hidden_dim`` is the total width, G equal slices).
        num_groups: G.
    """

    def __init__(self, input_dim: int, config: CPCConfig, num_groups: int) -> None:
        super().__init__()
        self.config = config.context
        group_config = replace(config.context, hidden_dim=config.context.hidden_dim // num_groups)
        self.networks = nn.ModuleList(ContextNetwork(input_dim // num_groups, group_config) for _ in range(num_groups))

    def forward(
        self, latents: torch.Tensor, state: Optional[tuple[RecurrentState, ...]] = None
    ) -> tuple[torch.Tensor, tuple[RecurrentState, ...]]:
        """Args:
            latents: (batch, frames, input_dim), the groups' z side by side.
            state: the tuple of per-group states returned by a previous call (chunked processing), or None.

        Returns:
            context (batch, frames, context.hidden_dim), the groups' c side by side, and the new states.
        """
        parts = latents.chunk(len(self.networks), dim=-1)  # (B, T, input_dim / G) each
        states = state if state is not None else (None,) * len(self.networks)
        outputs = [network(part, part_state) for network, part, part_state in zip(self.networks, parts, states)]
        return torch.cat([context for context, _ in outputs], dim=-1), tuple(new for _, new in outputs)
