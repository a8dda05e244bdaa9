"""Helpers every test folder shares (``import helpers``; tests/conftest.py puts this folder on the path).

Only plain functions live here; fixtures are in ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

from cpcaudio.config import CPCConfig
from cpcaudio.toy import generated_signal  # noqa: F401  (re-exported: a chirping test signal)

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"

# The tests were written against the paper's training settings (same-speaker batches, negatives from the
# whole batch, Adam at 2e-4 without warm-up or clipping); the tiny configs keep them, so that a change of
# the learn-fast defaults (cpcaudio.config) does not change what those tests train. The defaults
# themselves are tested where they matter (tests/model/test_model.py, tests/model/test_loss.py).
PAPER_TRAINING: dict[str, dict[str, Any]] = {
    "predictor": {"negative_sampling": "batch"},
    "optim": {"learning_rate": 2e-4, "warmup_steps": 0, "grad_clip": 0.0},
    "data": {"sampler": "same-speaker"},
}

TINY_SECTIONS: dict[str, dict[str, Any]] = {
    "encoder": {"hidden_dim": 32},
    "context": {"hidden_dim": 32},
    "predictor": {"num_steps": 3, "num_negatives": 8, **PAPER_TRAINING["predictor"]},
    "optim": dict(PAPER_TRAINING["optim"]),
    "data": dict(PAPER_TRAINING["data"]),
}


def merge_sections(base: dict[str, dict[str, Any]], **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``base`` with each section of ``sections`` updated key by key (new sections added)."""
    merged = {name: dict(values) for name, values in base.items()}
    for name, values in sections.items():
        merged[name] = {**merged.get(name, {}), **values}
    return merged


def tiny_config(base: Optional[dict[str, dict[str, Any]]] = None, **sections: dict[str, Any]) -> CPCConfig:
    """A seconds-sized model config: ``base`` (default :data:`TINY_SECTIONS`) with ``sections`` merged in."""
    return CPCConfig.from_dict(merge_sections(TINY_SECTIONS if base is None else base, **sections))


def shared_data(name: str) -> Path:
    """``../shared/data/<name>``, or skip the test with the reason when it is absent (a user's clone)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real test data {name} not found at ../shared/data/{name}")
    return path
