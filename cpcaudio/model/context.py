"""The autoregressive context network: latents z_<=t -> context c_t."""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from cpcaudio.config import ContextConfig

RecurrentState = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]


class ContextNetwork(nn.Module):
    """A unidirectional GRU (or LSTM): c_t depends only on z_1..z_t, so trailing padding is harmless."""

    def __init__(self, input_dim: int, config: ContextConfig) -> None:
        super().__init__()
        self.config = config
        cell = {"gru": nn.GRU, "lstm": nn.LSTM}[config.kind]
        self.rnn = cell(input_dim, config.hidden_dim, num_layers=config.num_layers, batch_first=True)

    def forward(
        self, latents: torch.Tensor, state: Optional[RecurrentState] = None
    ) -> tuple[torch.Tensor, RecurrentState]:
        """Args:
            latents: (batch, frames, input_dim).
            state: the recurrent state returned by a previous call (chunked processing), or None.

        Returns:
            context (batch, frames, hidden_dim) and the state after the last frame.
        """
        context, new_state = self.rnn(latents, state)
        return context, new_state
