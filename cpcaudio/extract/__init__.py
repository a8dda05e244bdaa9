"""The extract stage: a trained model plus audio in, frozen features out.

::

    from cpcaudio.extract import extract, extract_to_store, FeatureStore

    features = extract(model, signal, 16000)                      # one signal or a padded batch, any length
    extract_to_store("run/best.pt", "data/timit", "features/timit")  # a whole corpus, resumably
    store = FeatureStore.open("features/timit")                   # memory-mapped reader

Modules, in the order data flows through them: ``inputs`` (what to extract from), ``resampling``,
``chunks`` (chunk planning), ``features`` (``extract()``), ``streaming`` (``StreamingExtractor``),
``blocks`` (long files streamed block by block), ``finite`` (refusing NaN/inf weights and features),
``labels`` (frame labels of the store), ``request`` (what an extraction is, resume decisions),
``writer`` (``extract_to_store``), ``rows`` (rows written without a memory map), ``store`` (layout and
reader).
"""

from __future__ import annotations

from cpcaudio.extract.chunks import DEFAULT_CHUNK_SECONDS, WHOLE, Chunk, chunk_frames_for, plan_chunks
from cpcaudio.extract.features import LAYERS, Features, encode_padded, extract
from cpcaudio.extract.inputs import Source, Utterance, open_source
from cpcaudio.extract.labels import encoder_frame_labels, store_frame_labels
from cpcaudio.extract.request import file_sha256
from cpcaudio.extract.resampling import resample, resampled_length
from cpcaudio.extract.store import STORE_FORMAT, STORE_FORMAT_VERSION, FeatureStore, npy_path
from cpcaudio.extract.streaming import RunningStatistics, StreamingExtractor, stream_frames
from cpcaudio.extract.writer import ExtractionSummary, extract_to_store

__all__ = [
    "RunningStatistics",
    "StreamingExtractor",
    "stream_frames",
    "DEFAULT_CHUNK_SECONDS",
    "LAYERS",
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "WHOLE",
    "Chunk",
    "ExtractionSummary",
    "FeatureStore",
    "Features",
    "Source",
    "Utterance",
    "chunk_frames_for",
    "encode_padded",
    "encoder_frame_labels",
    "extract",
    "extract_to_store",
    "file_sha256",
    "npy_path",
    "open_source",
    "plan_chunks",
    "resample",
    "resampled_length",
    "store_frame_labels",
]
