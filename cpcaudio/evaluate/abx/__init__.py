"""ABX discriminability of frame features (libri-light / ZeroSpeech protocol).

The pieces, in the order data flows through them:

* :mod:`.items`: item lists (phone occurrences with context and speaker) from a prepared dataset's
  alignments or a libri-light ``.item`` file, and the frames of each item;
* :mod:`.distances`: the angular distance of L2-normalised frames;
* :mod:`.dtw`: batched, length-normalised DTW in torch (CPU or GPU);
* :mod:`.scoring`: cells, tasks, subsampling and libri-light's averaging;
* :mod:`.inputs`: the corpus and the feature sets (model layers, MFCC, log-mel, random weights);
* :mod:`.runner`: :func:`run_abx`, which runs all of it (:class:`AbxSettings`: modes, subsampling,
  slicing); :mod:`.report` writes the report.
"""

from __future__ import annotations

from cpcaudio.evaluate.abx.items import ItemList, item_codes, items_from_dataset, read_item_file, write_item_file
from cpcaudio.evaluate.abx.runner import AbxSettings, run_abx, score_item_frames, slice_items

__all__ = [
    "AbxSettings", "ItemList", "item_codes", "items_from_dataset", "read_item_file", "run_abx", "score_item_frames",
    "slice_items", "write_item_file",
]
