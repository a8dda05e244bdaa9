"""Feature sources of a probe report: the model (a checkpoint, a model in memory, or a feature store) and
the baselines, each giving (frames, dim) arrays for whole utterances and for windows.

The model's features come from a checkpoint or a model in memory (computed here once, whole utterances
in padded batches, with :func:`cpcaudio.extract.extract`), or from a feature store written by
``cpcaudio extract`` (matched to the dataset by utterance id). Baselines (:mod:`.baselines`) run on the
same signals: MFCC, log-mel, the same CPC architecture with random weights and, for time series, the raw
values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np

from cpcaudio.config import CPCConfig
from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate import baselines
from cpcaudio.evaluate.timing import FrameTiming
from cpcaudio.geometry import FrameGeometry, frame_geometry

if TYPE_CHECKING:
    import torch

LAYERS = ("context", "encoder")
MODEL_BATCH_SECONDS = 2.0  # padded seconds per batch of model features: larger batches only fragment the heap

SignalFunction = Callable[[np.ndarray, int], np.ndarray]  # (signal (channels, time), rate) -> (frames, dim)
BatchFunction = Callable[[list[np.ndarray], int], list[np.ndarray]]


class FeatureSource:
    """One row group of a probe report: something that gives frames for utterances and for windows.

    Attributes:
        name: short name in the report (``model``, ``mfcc``, ``logmel``, ``random``, ``raw``).
        description: one line saying what it is.
        timing: where the frames sit in time (for aligning frame labels).
        window_pooling: ``last`` (context features: the last frame summarises the window) or ``mean``.
        utterance_pooling: ``mean``, or ``flatten`` for raw values (resampled to a common length).
    """

    def __init__(
        self,
        name: str,
        description: str,
        compute: Optional[BatchFunction],
        timing: FrameTiming,
        window_pooling: str = "mean",
        utterance_pooling: str = "mean",
    ) -> None:
        """Args:
            compute: ``(signals, sample_rate) -> frames``: (channels, time) float32 signals at the dataset's
                rate to (frames, dim) float32 arrays, one per signal (None for stored features).
        """
        self.name = name
        self.description = description
        self.compute = compute
        self.timing = timing
        self.window_pooling = window_pooling
        self.utterance_pooling = utterance_pooling

    def utterance_frames(self, dataset: Any, indices: Sequence[int]) -> list[np.ndarray]:
        """(frames, dim) float32 of each whole utterance ``indices`` of ``dataset``."""
        assert self.compute is not None
        return self.compute([dataset.signal(int(i)) for i in indices], dataset.sample_rate)

    def window_frames(self, dataset: Any, windows: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        """(frames, dim) of each ``(utterance, start, stop)`` window (samples), each processed alone."""
        assert self.compute is not None
        signals = [dataset.read(int(i), int(start), int(stop - start)) for i, start, stop in windows]
        return self.compute(signals, dataset.sample_rate)


def config_geometry(config: CPCConfig) -> FrameGeometry:
    """Frame geometry of the encoder that ``config`` describes (without building the model)."""
    encoder = config.encoder
    return frame_geometry(encoder.kernel_sizes, encoder.strides, encoder.resolved_paddings())


class StoredFeatures(FeatureSource):
    """Model features read from a feature store written by ``cpcaudio extract`` (matched by utterance id).

    Windows are cut from the stored whole-utterance frames (the frames whose centres fall inside the
    window), so context features there carry the recurrent state from before the window.
    """

    def __init__(self, store: Any, dataset: Any, description: str) -> None:
        config = CPCConfig.from_dict(store.meta["config"])
        super().__init__(
            "model", description, None,
            FrameTiming(config_geometry(config), int(store.meta["sample_rate"])),
            window_pooling="last" if store.layer == "context" else "mean",
        )
        self.store = store
        self.config = config
        self._rows = {utterance_id: row for row, utterance_id in enumerate(store.utterance_ids)}
        self._dataset_ids = dataset.utterance_ids

    def _row(self, index: int) -> int:
        utterance_id = self._dataset_ids[int(index)]
        if utterance_id not in self._rows:
            raise DataError(
                f"feature store {self.store.path} has no features for utterance {utterance_id!r} of the "
                "dataset; extract the features from this dataset ('cpcaudio extract CHECKPOINT DATASET OUT')"
            )
        return self._rows[utterance_id]

    def _frames(self, index: int) -> np.ndarray:
        """The stored (frames, dim) of dataset utterance ``index``; refuses NaN or inf (a diverged model)."""
        row = self._row(index)
        frames = np.asarray(self.store.features(row), dtype=np.float32)
        if not np.isfinite(frames).all():
            raise DataError(
                f"feature store {self.store.path} holds non-finite features (NaN or inf) for utterance "
                f"{self.store.utterance_ids[row]!r}: the model that wrote it (checkpoint "
                f"{self.store.meta.get('checkpoint')}) most likely diverged; extract again with --overwrite from "
                "a checkpoint with finite weights (e.g. an earlier one of the run)"
            )
        return frames

    def utterance_frames(self, dataset: Any, indices: Sequence[int]) -> list[np.ndarray]:
        return [self._frames(i) for i in indices]

    def window_frames(self, dataset: Any, windows: Sequence[tuple[int, int, int]]) -> list[np.ndarray]:
        out = []
        for index, start, stop in windows:
            frames = self._frames(index)
            centers = self.timing.centers(frames.shape[0]) * dataset.sample_rate  # in dataset samples
            out.append(frames[(centers >= start) & (centers < stop)])
        return out


def model_frames(
    model: torch.nn.Module,
    signals: list[np.ndarray],
    sample_rate: int,
    layer: str,
    batch_seconds: float = MODEL_BATCH_SECONDS,
) -> list[np.ndarray]:
    """Frozen model features of whole signals, in padded batches of similar length.

    Args:
        model: a :class:`~cpcaudio.CPCModel`.
        signals: list of (channels, time) float32 signals at ``sample_rate`` (resampled to the model's
            rate; multichannel signals are averaged when the model takes one channel).
        sample_rate: samples per second of ``signals``.
        layer: ``context`` or ``encoder``.
        batch_seconds: signal seconds per padded batch (bounds memory).

    Returns:
        One float32 (frames, dim) array per signal, equal to processing each alone
        (:func:`cpcaudio.extract.extract`).
    """
    from cpcaudio.extract.features import extract

    if model.config.encoder.in_channels == 1:
        signals = [s.mean(axis=0, keepdims=True) if s.shape[0] > 1 else s for s in signals]
    # Longest first, and no batch larger (padded) than the first: every later batch's tensors fit in the
    # memory the first one freed, so the allocator reuses it instead of growing the heap batch after batch.
    order = sorted(range(len(signals)), key=lambda i: -signals[i].shape[-1])
    out: list[Optional[np.ndarray]] = [None] * len(signals)
    cap = 0
    start = 0
    while start < len(order):
        longest = max(signals[order[start]].shape[-1], 1)
        if start == 0:
            cap = max(1, int(batch_seconds * sample_rate // longest)) * longest  # padded samples per batch
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * longest <= cap:
            stop += 1
        chunk = order[start:stop]
        batch = np.zeros((len(chunk), signals[chunk[0]].shape[0], longest), dtype=np.float32)  # (B, C, T)
        for row, i in enumerate(chunk):
            batch[row, :, : signals[i].shape[-1]] = signals[i]
        features = extract(model, batch, sample_rate, layer=layer, lengths=[signals[i].shape[-1] for i in chunk])
        for row, i in enumerate(chunk):
            out[i] = features.frames[row, : int(features.frame_lengths[row])].numpy().copy()
        start += len(chunk)
    return out  # type: ignore[return-value]


def model_timing(model: torch.nn.Module) -> FrameTiming:
    """Frame ``t`` of a CPC encoder is centred on its receptive field, at the model's sample rate (the
    rule of :func:`cpcaudio.data.frame_labels_for_encoder`)."""
    return FrameTiming(model.encoder.geometry, int(model.config.data.sample_rate))


def model_source(model: torch.nn.Module, layer: str, name: str, description: str) -> FeatureSource:
    """A :class:`FeatureSource` for a CPC model's ``layer`` (``context`` or ``encoder``)."""
    return FeatureSource(
        name=name,
        description=description,
        compute=lambda signals, sample_rate: model_frames(model, signals, sample_rate, layer),
        timing=model_timing(model),
        window_pooling="last" if layer == "context" else "mean",
    )


# ---- baselines ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalBaseline:
    """A baseline computed from each signal alone (``random``, the untrained model, is built apart)."""

    description: str
    function: SignalFunction  # (signal (channels, time), sample_rate) -> (frames, dim) float32
    timing: Callable[[int], FrameTiming]  # sample_rate -> where its frames sit
    utterance_pooling: str = "mean"


SIGNAL_BASELINES: dict[str, SignalBaseline] = {
    "mfcc": SignalBaseline(
        "MFCC: 13 + deltas + delta-deltas, 25 ms window, 10 ms hop", baselines.mfcc, baselines.spectral_timing
    ),
    "logmel": SignalBaseline(
        f"log-mel: {baselines.NUM_MELS} bands, 25 ms window, 10 ms hop", baselines.log_mel, baselines.spectral_timing
    ),
    "raw": SignalBaseline(
        "raw values (utterance level: the series resampled to a common length, flattened)",
        baselines.raw_values, baselines.raw_timing, utterance_pooling="flatten",
    ),
}
BASELINES = ("mfcc", "logmel", "random", "raw")  # every name --baselines takes, in report order
AUDIO_BASELINES = ("mfcc", "logmel", "random")  # the default for audio
TIMESERIES_BASELINES = ("raw", "random")  # the default for time series


def baseline_source(name: str, sample_rate: int) -> FeatureSource:
    """A :class:`FeatureSource` for ``mfcc``, ``logmel`` or ``raw`` at the dataset's ``sample_rate``."""
    if name not in SIGNAL_BASELINES:
        raise UsageError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    baseline = SIGNAL_BASELINES[name]
    function = baseline.function
    return FeatureSource(
        name, baseline.description,
        lambda signals, rate: [function(signal, rate) for signal in signals],
        baseline.timing(sample_rate), utterance_pooling=baseline.utterance_pooling,
    )


# ---- the model under test ----------------------------------------------------------------------------------


def is_audio(dataset: Any) -> bool:
    """Whether ``dataset`` holds audio (its ``signal_kind``; else: one channel at 4 kHz or more)."""
    kind = dataset.meta.get("signal_kind")
    if kind is not None:
        return str(kind) == "audio"
    return dataset.num_channels == 1 and dataset.sample_rate >= 4000


def default_model_config(dataset: Any) -> CPCConfig:
    """The config of the random-weight model used when neither a checkpoint nor features are given.

    Audio: the default :class:`CPCConfig` (16 kHz; other rates are resampled). Time series: the default
    context network on a 3-layer, stride-1 encoder (kernel 3) over the dataset's channels at its own
    rate, so that series of a hundred steps still give one frame per step.
    """
    if is_audio(dataset):
        return CPCConfig()
    return CPCConfig.from_dict(
        {
            "encoder": {"in_channels": int(dataset.num_channels), "kernel_sizes": [3, 3, 3], "strides": [1, 1, 1]},
            "data": {"sample_rate": int(dataset.sample_rate)},
        }
    )


PathLike = Union[str, Path]


def resolve_model_source(
    dataset: Any,
    checkpoint: Optional[PathLike],
    features: Optional[PathLike],
    model: Optional[torch.nn.Module],
    layer: str,
    seed: int,
    device: torch.device,
) -> tuple[FeatureSource, CPCConfig, dict[str, Any]]:
    """The 'model' feature source, its config, and the report's model record.

    At most one of ``checkpoint``, ``features`` (a feature store of ``dataset``) and ``model`` may be
    given; with none, the model is :func:`default_model_config` with random weights drawn from ``seed``.

    Raises:
        UsageError: more than one given, or a store of a layer the probe does not take.
    """
    candidates = (("checkpoint", checkpoint), ("features", features), ("model", model))
    given = [name for name, value in candidates if value is not None]
    if len(given) > 1:
        raise UsageError(f"give one of a checkpoint, a feature store or a model, not {' and '.join(given)}")
    record: dict[str, Any] = {"checkpoint": None, "features": None, "random_init": False, "layer": layer}
    if features is not None:
        from cpcaudio.extract import FeatureStore

        store = FeatureStore.open(features)
        if store.layer not in LAYERS:
            raise UsageError(
                f"feature store {features} holds layer {store.layer!r}; the probe takes context or encoder features"
            )
        layer = store.layer
        description = f"features from store {features} ({layer}; checkpoint {store.meta.get('checkpoint')})"
        source = StoredFeatures(store, dataset, description)
        record.update(features=str(features), checkpoint=store.meta.get("checkpoint"), layer=layer)
        return source, source.config, {**record, "description": description}
    if checkpoint is not None:
        from cpcaudio.extract.request import load_checkpoint_model

        model = load_checkpoint_model(checkpoint, device)  # one line for bad files and non-finite weights
        description = f"CPC checkpoint {checkpoint}, {layer} features"
        record["checkpoint"] = str(checkpoint)
    elif model is not None:
        from cpcaudio.extract.finite import check_finite_weights

        check_finite_weights(model)
        model = model.to(device).eval()
        description = f"CPC model given by the caller, {layer} features"
    else:
        model = baselines.random_model(default_model_config(dataset), seed).to(device)
        description = f"CPC default config with RANDOM weights (seed {seed}; no checkpoint given), {layer} features"
        record["random_init"] = True
    return model_source(model, layer, "model", description), model.config, {**record, "description": description}


def baseline_sources(
    names: Sequence[str], sample_rate: int, config: CPCConfig, model_record: dict[str, Any], seed: int,
    device: torch.device,
) -> list[FeatureSource]:
    """The feature sources of baselines ``names`` next to the model described by ``model_record``.

    ``random`` is the model's architecture (``config``) with weights drawn from ``seed``; it is left out
    when the model itself has random weights (it is then the random baseline).
    """
    layer = model_record["layer"]
    sources = []
    for name in names:
        if name != "random":
            sources.append(baseline_source(name, sample_rate))
        elif not model_record["random_init"]:
            random_weights = baselines.random_model(config, seed).to(device)
            description = f"same architecture, random weights (seed {seed}), {layer} features"
            sources.append(model_source(random_weights, layer, "random", description))
    return sources
