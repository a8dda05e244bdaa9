"""Temporary re-export shim: moved to :mod:`cpcaudio.extract.features` (and ``chunks``, ``resampling``).

The lead deletes this module at the merge and rewrites the imports.
"""

from __future__ import annotations

from cpcaudio.extract.chunks import DEFAULT_CHUNK_SECONDS, WHOLE, Chunk, chunk_frames_for, plan_chunks  # noqa: F401
from cpcaudio.extract.features import (  # noqa: F401
    LAYERS,
    Features,
    Lengths,
    Signal,
    _extract_chunked,
    _prepare_input,
    _zero_beyond,
    encode_padded,
    extract,
)
from cpcaudio.extract.resampling import resample, resampled_length  # noqa: F401
