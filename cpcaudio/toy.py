"""A toy CPC training on a generated signal: the quickest proof that the model learns."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from cpcaudio.config import CPCConfig
from cpcaudio.model import CPCModel


def small_config() -> CPCConfig:
    """A CPU-sized model: 64 encoder channels, GRU 64, K = 4, 16 negatives, 1280-sample windows."""
    return CPCConfig.from_dict(
        {
            "encoder": {"hidden_dim": 64},
            "context": {"hidden_dim": 64},
            "predictor": {"num_steps": 4, "num_negatives": 16},
            "data": {"window_size": 1280 * 4, "batch_size": 8},
            "optim": {"learning_rate": 2e-3},
        }
    )


def generated_signal(num_samples: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """A chirping, amplitude-modulated tone whose pitch changes every 50-150 ms (float32, (time,))."""
    out = np.zeros(num_samples, dtype=np.float32)
    position = 0
    phase = 0.0
    while position < num_samples:
        length = int(rng.integers(sample_rate // 20, sample_rate // 6))
        frequency = float(rng.uniform(100.0, 1500.0))
        t = np.arange(min(length, num_samples - position))
        phases = phase + 2 * np.pi * frequency * t / sample_rate
        out[position : position + t.size] = 0.5 * np.sin(phases) * np.hanning(t.size + 2)[1:-1]
        phase = float(phases[-1]) if t.size else phase
        position += t.size
    return out + 0.01 * rng.standard_normal(num_samples).astype(np.float32)


def train_on_generated_signal(steps: int = 60, seed: int = 0) -> Iterator[tuple[int, float, float]]:
    """Train :func:`small_config` on generated windows; yields (step, loss, step-1 accuracy)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = small_config()
    model = CPCModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.optim.learning_rate)
    window = config.data.window_size
    for step in range(1, steps + 1):
        batch = np.stack([generated_signal(window, rng) for _ in range(config.data.batch_size)])
        output = model(torch.from_numpy(batch).unsqueeze(1))
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        yield step, float(output.loss), float(output.step_accuracy[0])
