"""A generated test signal: a chirping, amplitude-modulated tone (for tests and benchmarks)."""

from __future__ import annotations

import numpy as np


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
