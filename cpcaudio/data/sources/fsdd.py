"""``fsdd``: the Free Spoken Digit Dataset (8 kHz wav files named ``{digit}_{speaker}_{take}.wav``).

Speaker and digit come from the file name; the utterance label ``digit`` is stored. The official split
is kept: takes 0-4 are ``test``, takes 5-49 ``train``, so every speaker has utterances on both sides
(usable for speaker probes as they are). ``src`` is the repository folder or its ``recordings/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from cpcaudio.data.sources.base import SourcePlan, UtteranceItem, find_audio_files
from cpcaudio.data.sources.spec import SourceKind

_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<take>\d+)$")
NUM_TEST_TAKES = 5  # takes 0..4 are the official test set

SUMMARY = "the Free Spoken Digit Dataset ({digit}_{speaker}_{take}.wav), official split"


def discover(src: Path) -> SourcePlan:
    """List the recordings of FSDD.

    Args:
        src: the FSDD folder (holding ``recordings/``) or the recordings folder itself.

    Returns:
        The plan: utterance label ``digit``, official split, no frame labels.
    """
    src = Path(src)
    folder = src / "recordings" if (src / "recordings").is_dir() else src
    plan = SourcePlan(
        kind="fsdd",
        items=[],
        utterance_label_names=("digit",),
        split_rule=f"official FSDD split: takes 0-{NUM_TEST_TAKES - 1} test, the rest train",
    )
    for audio in find_audio_files(folder, (".wav",), plan):
        match = _NAME.match(audio.stem)
        if match is None:
            plan.rejected.append((str(audio), "name does not follow {digit}_{speaker}_{take}.wav"))
            continue
        split = "test" if int(match["take"]) < NUM_TEST_TAKES else "train"
        plan.items.append(
            UtteranceItem(
                utterance_id=audio.stem,
                speaker=match["speaker"],
                split=split,
                audio_path=audio,
                utterance_labels={"digit": match["digit"]},
            )
        )
    return plan


KIND = SourceKind("fsdd", discover, SUMMARY)
