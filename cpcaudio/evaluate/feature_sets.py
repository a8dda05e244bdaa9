"""Which feature sets an evaluation scores: the model, one of its layers, the baselines, the seed, the device.

:class:`FeatureSetOptions` is the one description that :func:`cpcaudio.evaluate.abx.run_abx` and
:func:`cpcaudio.evaluate.units_runner.run_units` take (and the CLI's ``--checkpoint``, ``--features``,
``--layer``, ``--baselines``, ``--seed`` and ``--device`` fill)::

    from cpcaudio.evaluate.abx import run_abx
    from cpcaudio.evaluate.feature_sets import FeatureSetOptions

    report = run_abx("data/timit39", FeatureSetOptions(checkpoint="run/best.pt", baselines="mfcc"))

It imports nothing heavy (no torch), so a command can build one before the evaluation loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    import torch

PathLike = Union[str, Path]


@dataclass(frozen=True)
class FeatureSetOptions:
    """The model whose frozen features are scored, and what it is scored next to.

    Attributes:
        checkpoint: a checkpoint written by ``cpcaudio train`` (or a CPC_audio one, see :mod:`cpcaudio.interop`).
        features: instead, a feature store written by ``cpcaudio extract`` from the dataset evaluated.
        model: instead, a :class:`~cpcaudio.CPCModel` in memory. With none of the three the model is the
            default architecture with random weights (``seed``), and the report says so.
        layer: ``context`` (c), ``encoder`` (z), or, where the evaluation allows it, ``all`` (one row
            group per layer); a feature store brings its own.
        baselines: baseline names, comma-separated or a list (``none``: no baseline; None: the
            evaluation's default, MFCC, log-mel and random weights for audio).
        seed: seeds the random-weight model and every draw of the evaluation (subsampling, k-means).
        device: where the models (and ABX's DTW) run: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a
            ``torch.device`` (None: :func:`cpcaudio.devices.resolve_device`'s default).
    """

    checkpoint: Optional[PathLike] = None
    features: Optional[PathLike] = None
    model: Optional["torch.nn.Module"] = None
    layer: str = "context"
    baselines: Optional[Union[str, Sequence[str]]] = None
    seed: int = 0
    device: Optional[Union[str, "torch.device"]] = None

