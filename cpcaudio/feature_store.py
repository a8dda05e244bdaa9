"""Temporary re-export shim: moved to :mod:`cpcaudio.extract` (``inputs``, ``labels``, ``request``,
``writer``, ``store``). The lead deletes this module at the merge and rewrites the imports.

One difference: :func:`extract_to_store` here still calls ``progress(done, total)`` as before, for code
not yet moved to :class:`cpcaudio.progress.Progress` events (what ``cpcaudio.extract.extract_to_store``
sends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from cpcaudio.data.audio import AUDIO_EXTENSIONS  # noqa: F401
from cpcaudio.extract.inputs import Source, Utterance, open_source  # noqa: F401
from cpcaudio.extract.labels import encoder_frame_labels as _encoder_frame_labels  # noqa: F401
from cpcaudio.extract.labels import store_frame_labels as _all_frame_labels  # noqa: F401
from cpcaudio.extract.request import file_sha256  # noqa: F401
from cpcaudio.extract.store import STORE_FORMAT, STORE_FORMAT_VERSION, FeatureStore, npy_path  # noqa: F401
from cpcaudio.extract.writer import ExtractionSummary, _extract_batch  # noqa: F401
from cpcaudio.extract.writer import extract_to_store as _extract_to_store

ProgressCallback = Callable[[int, int], None]


def extract_to_store(*args: Any, progress: Optional[ProgressCallback] = None, **kwargs: Any) -> ExtractionSummary:
    """:func:`cpcaudio.extract.extract_to_store` with the old ``progress(done, total)`` callback."""
    events = None if progress is None else (lambda event: progress(event.done, event.total))
    return _extract_to_store(*args, progress=events, **kwargs)
