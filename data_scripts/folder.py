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

import argparse

from cpcaudio.data import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder of audio files")
    parser.add_argument("out", help="dataset directory to create")
    parser.add_argument("--sample-rate", type=int, default=None, help="resample to this rate (soxr)")
    parser.add_argument("--keep-channels", action="store_true", help="keep channels instead of mixing down")
    parser.add_argument("--speaker-pattern", default=None, help="regex with (?P<speaker>...)")
    parser.add_argument("--file-list", default=None, help="CSV/TSV with a path column")
    parser.add_argument("--on-error", default="fail", choices=["fail", "skip"])
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    options = {"speaker_pattern": args.speaker_pattern, "file_list": args.file_list}
    result = prepare(
        "folder",
        args.src,
        args.out,
        sample_rate=args.sample_rate,
        mono=not args.keep_channels,
        on_error=args.on_error,
        overwrite=args.overwrite,
        **{k: v for k, v in options.items() if v is not None},
    )
    print(f"{result.meta['counts']} -> {result.path} (skipped {len(result.skipped)})")


if __name__ == "__main__":
    main()
