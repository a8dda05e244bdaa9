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

TINY_SECTIONS: dict[str, dict[str, Any]] = {
    "encoder": {"hidden_dim": 32},
    "context": {"hidden_dim": 32},
    "predictor": {"num_steps": 3, "num_negatives": 8},
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
