"""``phone``: one sample per feature frame, labelled with the frame label at the frame's centre; frames with
label -1 (no label) are dropped. The probe's validation part holds out whole utterances."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from cpcaudio.errors import DataError, ResourceError
from cpcaudio.evaluate.problems import FRAME, ProbeInputs, ProbeProblem, frame_problem
from cpcaudio.evaluate.sources import FeatureSource, config_geometry
from cpcaudio.evaluate.tasks.base import ProbeTask
from cpcaudio.evaluate.timing import align_frame_labels

if TYPE_CHECKING:
    import torch

    from cpcaudio.config import CPCConfig

DEFAULT_LABEL_HOP = 160  # samples per frame label of datasets whose meta does not say


def has_frame_labels(dataset: Any) -> bool:
    """Whether ``dataset`` stores frame labels (phone alignments)."""
    return bool(getattr(dataset, "has_frame_labels", dataset.phone_vocabulary is not None))


class PhoneTask(ProbeTask):
    """Frame-level phone classification from a dataset's frame labels."""

    name = "phone"
    summary = "per frame"
    protocols = (FRAME,)
    unsupported_baselines = {
        "raw": "the raw baseline has one frame per sample and is meant for time series; leave it out of "
        "--baselines for the phone task (e.g. mfcc,logmel,random)",
    }

    def utterance_labels(self, dataset: Any, label: Optional[str]) -> tuple[Optional[list[Any]], str]:
        if not has_frame_labels(dataset):
            raise DataError(
                f"dataset {dataset.path} has no frame labels; the phone task needs a dataset prepared with "
                "phone alignments (TIMIT .phn, LibriSpeech phone_labels, TextGrid, synthetic)"
            )
        return None, "phone"

    def supports(self, dataset: Any) -> bool:
        return has_frame_labels(dataset) and bool(dataset.phone_vocabulary)

    def label_names(self, dataset: Any) -> Optional[list[str]]:
        return dataset.phone_vocabulary

    def build_problems(self, source: FeatureSource, inputs: ProbeInputs) -> list[ProbeProblem]:
        dataset = inputs.dataset
        utterances = inputs.utterances
        frames = inputs.utterance_frames(source)
        label_hop = int(dataset.meta.get("label_hop", DEFAULT_LABEL_HOP))
        xs, ys, gs = [], [], []
        for index, utterance_frames in zip(utterances, frames):
            aligned = align_frame_labels(
                dataset.frame_labels(int(index)), label_hop, dataset.sample_rate, source.timing,
                utterance_frames.shape[0],
            )
            keep = aligned >= 0
            xs.append(utterance_frames[keep])
            ys.append(aligned[keep])
            gs.append(np.full(int(keep.sum()), index, dtype=np.int64))
        return [frame_problem(FRAME, xs, ys, gs, inputs.is_train)]

    def check_memory(
        self, dataset: Any, train: np.ndarray, test: np.ndarray, config: CPCConfig,
        max_train_frames: Optional[int], device: torch.device,
    ) -> None:
        """Refuse a phone probe whose cached model frames would not fit in memory.

        Counted: the frames of one feature set (float32, the model's width) held once as computed, once
        stacked, once standardised, plus the optimiser's copy on ``device`` of the training part.
        """
        from cpcaudio.resources import available_memory, format_bytes

        hop_seconds = config_geometry(config).hop_seconds(config.data.sample_rate)
        seconds = float(dataset.lengths[np.concatenate([train, test])].sum()) / dataset.sample_rate
        frames = seconds / hop_seconds
        dim = max(config.context.hidden_dim, config.encoder.hidden_dim)
        train_frames = frames * train.size / max(1, train.size + test.size)
        if max_train_frames is not None:
            train_frames = min(train_frames, max_train_frames)
        needed = int(4 * dim * (3 * frames + train_frames))
        available = available_memory("cpu")
        if available is not None and needed > available:
            raise ResourceError(
                f"the phone probe would hold about {format_bytes(needed)} of features ({frames:.3g} frames x {dim}) "
                f"but {format_bytes(available)} of memory is free; pass --max-train-frames (e.g. 1000000) or probe "
                "a subset of the utterances"
            )
