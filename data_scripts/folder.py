"""Prepare any folder of audio files (wav, flac, ogg, mp3) for CPC training, without labels.

Get the data:
    Your own recordings, e.g. ``recordings/<speaker>/<anything>.flac``. Speakers are the folder names,
    or come from ``--speaker-pattern`` (a regex with ``(?P<speaker>...)`` on the relative path), or
    from ``--file-list``: a CSV/TSV with a header and a ``path`` column (optional ``speaker``,
    ``split``, ``id``; other columns become utterance labels for probes).

Run:
    python data_scripts/folder.py recordings/ data/mine --sample-rate 16000
    python data_scripts/folder.py recordings/ data/mine --file-list recordings/list.csv

Files at other rates are resampled with soxr when ``--sample-rate`` is given (otherwise all must share
one rate); stereo is mixed down unless ``--keep-channels``.
"""

from __future__ import annotations

import _common


def main() -> None:
    args = _common.parser("folder", __doc__, src_help="folder of audio files").parse_args()
    _common.run("folder", args)


if __name__ == "__main__":
    main()
