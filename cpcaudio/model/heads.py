"""Prediction heads W_k: context c_t -> predicted latents for z_{t+1} .. z_{t+K}."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from cpcaudio.config import PredictorConfig
from cpcaudio.model.cpu_kernels import linear


class PredictionHeads(nn.Module):
    """K heads, one per prediction step.

    ``linear`` heads are K independent linear maps (the CPC paper's W_k), stored as one fused
    ``Linear(context_dim, K * latent_dim)`` so that all steps are one matrix product. ``mlp`` heads add one
    hidden layer with ReLU per step (also fused across steps: a grouped 1x1 convolution).
    """

    def __init__(self, context_dim: int, latent_dim: int, config: PredictorConfig) -> None:
        super().__init__()
        self.num_steps = config.num_steps
        self.latent_dim = latent_dim
        self.kind = config.head
        if config.head == "linear":
            self.projection = nn.Linear(context_dim, config.num_steps * latent_dim)
        else:
            hidden = config.head_hidden_dim
            self.hidden = nn.Linear(context_dim, config.num_steps * hidden)
            # One independent (hidden -> latent_dim) map per step, as a grouped 1x1 conv.
            self.output = nn.Conv1d(
                config.num_steps * hidden, config.num_steps * latent_dim, 1, groups=config.num_steps
            )

    def linear_maps(self) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """For ``linear`` heads, the fused weight (K * C, H) (rows k*C .. (k+1)*C - 1 are W_k) and bias
        (K * C,) or None, with which the loss may score through the context; None for ``mlp`` heads."""
        if self.kind != "linear":
            return None
        return self.projection.weight, self.projection.bias

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """Args: context (batch, frames, context_dim). Returns: predictions (batch, frames, K, latent_dim),
        where ``[:, t, k - 1]`` predicts z_{t+k}."""
        batch, frames, _ = context.shape
        rows = context.reshape(batch * frames, -1)  # (B*T, H)
        if self.kind == "linear":
            out = linear(rows, self.projection.weight, self.projection.bias)  # (B*T, K*C)
        else:
            hidden = torch.relu(linear(rows, self.hidden.weight, self.hidden.bias))  # (B*T, K*Hh)
            out = self.output(hidden.unsqueeze(-1))  # (B*T, K*C, 1)
        return out.reshape(batch, frames, self.num_steps, self.latent_dim)  # (B, T, K, C)
