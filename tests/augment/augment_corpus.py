"""A tiny prepared 16 kHz corpus for the augmentation tests (imported by the test modules of this folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from cpcaudio.data import prepare
from cpcaudio.toy import generated_signal

RATE = 16000
WINDOW = 3200  # 0.2 s: 20 encoder frames, long enough for every effect (pitch needs 2 x 512 samples)


def make_corpus(root: Path) -> Path:
    """2 speakers x 3 utterances of 0.6 s of chirping tones, prepared (split train/test by the folder rule)."""
    source = root / "source"
    rng = np.random.default_rng(0)
    for speaker in ("ann", "bob"):
        (source / speaker).mkdir(parents=True)
        for index in range(3):
            samples = generated_signal(int(0.6 * RATE), rng, RATE)
            soundfile.write(source / speaker / f"{speaker}_{index}.wav", samples, RATE, subtype="PCM_16")
    prepare("folder", source, root / "prepared", workers=1)
    return root / "prepared"
