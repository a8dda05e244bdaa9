"""Prediction heads W_k: context c_t -> predicted latents for z_{t+1} .. z_{t+K}."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from cpcaudio.config import PredictorConfig
from cpcaudio.errors import ConfigError
from cpcaudio.model.cpu_kernels import linear


class PredictionHeads(nn.Module):
    """K heads, one per prediction step.

    ``linear`` heads are K independent linear maps (the CPC paper's W_k), stored as one fused
    ``Linear(context_dim, K * latent_dim)`` so that all steps are one matrix product. ``mlp`` heads add one
    hidden layer with ReLU per step (also fused across steps: a grouped 1x1 convolution). ``transformer``
    heads are CPC_audio's default prediction network, one causal transformer layer per step
    (:class:`TransformerHeads`).

    Args:
        context_dim: H, the width of c. latent_dim: C, the width of z.
        config: the predictor section.
        window_frames: frames of a training window (``transformer`` heads size their relative positions
            by it; the other kinds ignore it).
    """

    def __init__(
        self, context_dim: int, latent_dim: int, config: PredictorConfig, window_frames: Optional[int] = None
    ) -> None:
        super().__init__()
        self.num_steps = config.num_steps
        self.latent_dim = latent_dim
        self.kind = config.head
        if config.head == "linear":
            self.projection = nn.Linear(context_dim, config.num_steps * latent_dim)
        elif config.head == "transformer":
            if window_frames is None:
                raise TypeError("transformer heads need window_frames, the frames of a training window")
            self.transformer = TransformerHeads(context_dim, latent_dim, config, window_frames)
        else:
            hidden = config.head_hidden_dim
            self.hidden = nn.Linear(context_dim, config.num_steps * hidden)
            # One independent (hidden -> latent_dim) map per step, as a grouped 1x1 conv.
            self.output = nn.Conv1d(
                config.num_steps * hidden, config.num_steps * latent_dim, 1, groups=config.num_steps
            )

    def linear_maps(self) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """For ``linear`` heads, the fused weight (K * C, H) (rows k*C .. (k+1)*C - 1 are W_k) and bias
        (K * C,) or None, with which the loss may score through the context; None for the other kinds."""
        if self.kind != "linear":
            return None
        return self.projection.weight, self.projection.bias

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """Args: context (batch, frames, context_dim). Returns: predictions (batch, frames, K, latent_dim),
        where ``[:, t, k - 1]`` predicts z_{t+k}."""
        if self.kind == "transformer":
            return self.transformer(context)
        batch, frames, _ = context.shape
        rows = context.reshape(batch * frames, -1)  # (B*T, H)
        if self.kind == "linear":
            out = linear(rows, self.projection.weight, self.projection.bias)  # (B*T, K*C)
        else:
            hidden = torch.relu(linear(rows, self.hidden.weight, self.hidden.bias))  # (B*T, K*Hh)
            out = self.output(hidden.unsqueeze(-1))  # (B*T, K*C, 1)
        return out.reshape(batch, frames, self.num_steps, self.latent_dim)  # (B, T, K, C)


class TransformerHeads(nn.Module):
    """CPC_audio's ``transformer`` prediction network: K independent one-layer causal transformers.

    Per step k, on x = c_{<=t} (width C; CPC_audio requires H == C, and where H != C cpcaudio first maps c
    to width C with one bias-free linear map per step, P_k):

        a_t = W_o MultiHead(x)_t     h heads of width d = C / h; head scores for position t and j <= t:
                                     (q_t . k_j + q_t . r_{t-j}) / sqrt(d), softmax over j, dropout, times v_j
        y_t = LayerNorm(x_t + a_t)
        p_t = LayerNorm(y_t + W_2 dropout(relu(W_1 y_t + b_1)) + b_2) / C

    * Causal: position t attends to positions j <= t only (CPC_audio's triangular mask), so the prediction
      from c_t never depends on c_{t+1..}.
    * r_delta: a learned relative-position vector per distance delta = t - j, shared by the heads (CPC_audio's
      ``Krelpos``, whose column S-1-delta is r_delta); D = window_frames - K of them (CPC_audio's
      ``sizeInputSeq - nPredicts``: the distances that positions with a target use). Longer distances,
      which only positions without a target (or longer inputs than a training window) reach, use r_{D-1}.
    * q, k, v and W_o have no bias (as CPC_audio's); dropout (``predictor.head_dropout``, CPC_audio 0.1)
      on the attention weights and the feed-forward hidden layer, in training only. Layer norms: eps 1e-5.
    * The final 1/C makes the dot-product score p . z of the loss CPC_audio's score, the channel mean
      ``mean_c(LayerNorm(...) * z)``, so the same parameters give the same loss.
    * Initialised as CPC_audio's ``nn.Linear`` layers: weights and biases uniform in +-1/sqrt(fan_in);
      r uniform in +-1/sqrt(d); layer norms 1 and 0.

    The K layers are fused: every parameter has a leading step dimension and each product is one batched
    matrix product over the steps.
    """

    def __init__(self, context_dim: int, latent_dim: int, config: PredictorConfig, window_frames: int) -> None:
        super().__init__()
        steps, dim, heads = config.num_steps, latent_dim, config.head_attention_heads
        if dim % heads:
            raise ConfigError(
                f"predictor.head_attention_heads={heads} must divide encoder.hidden_dim={dim} (the width of "
                "the transformer heads); choose a divisor, e.g. 8 for 256 or 512"
            )
        self.num_steps, self.latent_dim, self.num_heads = steps, dim, heads
        self.head_dim = dim // heads
        self.dropout = config.head_dropout
        self.num_distances = max(1, window_frames - steps)
        width, hidden = context_dim, config.head_feedforward_dim

        def weight(out_features: int, in_features: int) -> nn.Parameter:
            return _uniform((steps, out_features, in_features), in_features)

        self.input_weight = weight(dim, width) if width != dim else None  # P_k (cpcaudio's; CPC_audio: H == C)
        self.attention_in = weight(3 * dim, dim)  # rows [W_q; W_k; W_v] per step
        self.attention_out = weight(dim, dim)  # W_o
        self.relative_positions = _uniform((steps, self.num_distances, self.head_dim), self.head_dim)  # r_delta
        self.norm1_weight = nn.Parameter(torch.ones(steps, dim))
        self.norm1_bias = nn.Parameter(torch.zeros(steps, dim))
        self.feedforward_in = weight(hidden, dim)  # W_1
        self.feedforward_in_bias = _uniform((steps, hidden), dim)
        self.feedforward_out = weight(dim, hidden)  # W_2
        self.feedforward_out_bias = _uniform((steps, dim), hidden)
        self.norm2_weight = nn.Parameter(torch.ones(steps, dim))
        self.norm2_bias = nn.Parameter(torch.zeros(steps, dim))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """Args: context (batch, frames, context_dim). Returns: predictions (batch, frames, K, latent_dim)
        (a permuted view of a (K, batch, frames, latent_dim) tensor), ``[:, t, k - 1]`` predicting z_{t+k}."""
        batch, frames, width = context.shape
        steps, dim, heads, head_dim = self.num_steps, self.latent_dim, self.num_heads, self.head_dim
        x = context.reshape(1, batch * frames, width).expand(steps, -1, -1)  # (K, B*T, H)
        if self.input_weight is not None:
            x = _step_linear(x, self.input_weight)  # (K, B*T, C)
        qkv = _step_linear(x, self.attention_in)  # (K, B*T, 3C)
        qkv = qkv.view(steps, batch, frames, 3, heads, head_dim).permute(3, 0, 1, 4, 2, 5)  # (3, K, B, h, T, d)
        query, key, value = qkv.unbind(0)  # each (K, B, h, T, d)
        scores = query @ key.transpose(-1, -2)  # (K, B, h, T, T): q_t . k_j
        table = self.relative_positions.view(steps, 1, 1, self.num_distances, head_dim)  # (K, 1, 1, D, d)
        by_distance = query @ table.transpose(-1, -2)  # (K, B, h, T, D): q_t . r_delta
        t = torch.arange(frames, device=context.device)
        distance = (t.view(-1, 1) - t.view(1, -1)).clamp(0, self.num_distances - 1)  # (T, T): t - j
        scores = scores + by_distance.gather(-1, distance.expand(steps, batch, heads, frames, frames))
        future = t.view(1, -1) > t.view(-1, 1)  # (T, T): j > t
        scores = (scores / math.sqrt(head_dim)).masked_fill(future, float("-inf"))
        weights = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)  # (K, B, h, T, T)
        attended = (weights @ value).permute(0, 1, 3, 2, 4).reshape(steps, batch * frames, dim)  # (K, B*T, C)
        y = _step_layer_norm(x + _step_linear(attended, self.attention_out), self.norm1_weight, self.norm1_bias)
        hidden = torch.relu(_step_linear(y, self.feedforward_in, self.feedforward_in_bias))  # (K, B*T, F)
        hidden = F.dropout(hidden, self.dropout, self.training)
        out = y + _step_linear(hidden, self.feedforward_out, self.feedforward_out_bias)  # (K, B*T, C)
        predictions = _step_layer_norm(out, self.norm2_weight, self.norm2_bias) / dim
        return predictions.view(steps, batch, frames, dim).permute(1, 2, 0, 3)  # (B, T, K, C)


def _uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
    """A parameter drawn uniformly in +-1/sqrt(fan_in) (``nn.Linear``'s initialisation)."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))


def _step_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One linear map per step: x (K, rows, in), weight (K, out, in), bias (K, out) or None -> (K, rows, out)."""
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def _step_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Layer norm over the last dimension with one affine map per step: x (K, rows, C), weight/bias (K, C)."""
    normed = F.layer_norm(x, x.shape[-1:], eps=1e-5)
    return torch.addcmul(bias.unsqueeze(1), normed, weight.unsqueeze(1))
