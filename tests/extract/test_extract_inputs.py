"""Input discovery of ``cpcaudio extract``: one list of audio extensions, shared with ``prepare``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from cpcaudio.data.audio import AUDIO_EXTENSIONS
from cpcaudio.data.sources.base import find_audio_files
from cpcaudio.extract import open_source

# soundfile picks the container from the extension, except for these
FORMATS = {
    ".opus": ("OGG", "OPUS"),
    ".aif": ("AIFF", "PCM_16"),
    ".sph": ("NIST", "PCM_16"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


def test_a_folder_yields_every_listed_extension_as_prepare_sees_it(tmp_path: Path):
    rng = np.random.default_rng(0)
    for number, extension in enumerate(AUDIO_EXTENSIONS):
        path = tmp_path / f"u{number}{extension.upper() if number % 2 else extension}"
        audio_format, subtype = FORMATS.get(extension, (None, None))
        soundfile.write(path, 0.1 * rng.standard_normal(800 + number), 8000, format=audio_format, subtype=subtype)
    (tmp_path / "notes.txt").write_text("not audio\n")
    source = open_source(tmp_path)
    assert source.kind == "folder"
    assert [Path(f).name for f in source.files] == sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".txt")
    assert len(source.utterances) == len(AUDIO_EXTENSIONS)
    assert all(u.sample_rate == 8000 and u.num_channels == 1 and u.num_samples > 0 for u in source.utterances)
    assert sorted(source.files) == sorted(find_audio_files(tmp_path))  # the same list as prepare's folders
    signal = source.read(0)
    assert signal.shape == (1, source.utterances[0].num_samples) and signal.dtype == np.float32
