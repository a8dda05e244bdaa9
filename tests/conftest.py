"""Fixtures shared by every test folder. Plain helper functions are in ``tests/helpers.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import helpers` / `import badfiles` anywhere

from helpers import tiny_config  # noqa: E402


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint of a randomly initialised :func:`helpers.tiny_config` model (seed 0)."""
    import torch

    from cpcaudio.model import CPCModel
    from cpcaudio.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    config = tiny_config()
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny problems run faster on one torch thread, and the test machine is shared; restored afterwards.
    Use it per module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def basic_motions(tmp_path_factory) -> Path:
    """aeon's BasicMotions (6 channels, 100 steps per series), prepared once per session with ``prepare uea``."""
    from cpcaudio.data import prepare

    out = tmp_path_factory.mktemp("uea") / "BasicMotions"
    prepare("uea", "BasicMotions", out)
    return out
