"""Deterministic train/test splits that keep every speaker on both sides.

Speaker probes (which speaker said this?) need test utterances of speakers seen in training, so corpora
without an official split of that kind get the **within-speaker hold-out rule**:

    For every speaker, order its utterances by the SHA-1 of ``"cpcaudio-split:" + utterance_id``
    (ties by id) and put the first ``round(test_fraction * n)`` in ``test`` (at least 1 when the speaker
    has 2 or more utterances and ``test_fraction > 0``; always at least 1 left in ``train``).

The rule depends only on the ids and the fraction: not on file order, other speakers, the machine or a
seed, so the split is identical wherever and whenever the dataset is prepared (TIMIT: 2 of each
speaker's 10 sentences at the default fraction 0.2).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

from cpcaudio.errors import UsageError

DEFAULT_TEST_FRACTION = 0.2
SPLIT_NAMES: tuple[str, ...] = ("train", "valid", "test")


def within_speaker_split(
    utterance_ids: Sequence[str], speakers: Sequence[str], test_fraction: float = DEFAULT_TEST_FRACTION
) -> list[str]:
    """Split of every utterance (``"train"`` or ``"test"``) by the within-speaker hold-out rule above.

    Args:
        utterance_ids: one id per utterance (unique).
        speakers: the speaker of each utterance.
        test_fraction: share of each speaker's utterances held out, in ``[0, 1)``.

    Returns:
        ``"train"``/``"test"`` per utterance, in input order.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise UsageError(f"test fraction must be in [0, 1), got {test_fraction}")
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for utterance_id, speaker in zip(utterance_ids, speakers):
        by_speaker[speaker].append(utterance_id)
    held_out: set[str] = set()
    for ids in by_speaker.values():
        count = len(ids)
        num_test = int(round(test_fraction * count))
        if test_fraction > 0 and count >= 2:
            num_test = max(num_test, 1)
        num_test = min(num_test, count - 1)
        ordered = sorted(ids, key=lambda u: (hashlib.sha1(f"cpcaudio-split:{u}".encode("utf-8", "surrogateescape")).hexdigest(), u))
        held_out.update(ordered[:num_test])
    return ["test" if u in held_out else "train" for u in utterance_ids]
