"""The data path: prepare source corpora into memory-mapped datasets, sample windows, align labels.

::

    from cpcaudio.data import prepare, PreparedDataset, WindowSampler, frame_labels_for_encoder

    prepare("timit", "TIMIT/", "data/timit", fold_39=True)      # or: cpcaudio prepare timit TIMIT/ data/timit
    dataset = PreparedDataset.open("data/timit")
    sampler = WindowSampler(dataset, window_size=20480, batch_size=8, mode="same-speaker", seed=0)
    batch = next(iter(sampler))                                 # batch.signal: (batch, channels, window)
"""

from __future__ import annotations

from typing import Any

from cpcaudio.data.alignment import NO_LABEL, frame_labels_for_encoder
from cpcaudio.data.dataset import PreparedDataset
from cpcaudio.data.format import FORMAT_VERSION
from cpcaudio.data.info import dataset_summary, format_summary
from cpcaudio.data.prepare import KINDS, PrepareResult, prepare

_TORCH_NAMES = ("WindowBatch", "WindowSampler")  # imported on first use: the sampler needs torch


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        from cpcaudio.data import sampler

        return getattr(sampler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "NO_LABEL",
    "PrepareResult",
    "PreparedDataset",
    "WindowBatch",
    "WindowSampler",
    "dataset_summary",
    "format_summary",
    "frame_labels_for_encoder",
    "prepare",
]
