"""Prepare audio with phone alignments: Montreal Forced Aligner TextGrids, or ``start end phone`` files.

Get the data:
    Any corpus aligned with MFA (https://montreal-forced-aligner.readthedocs.io): run
    ``mfa align CORPUS english_us_arpa english_us_arpa ALIGNED`` and pass ``CORPUS`` with
    ``--labels-dir ALIGNED`` (TextGrids mirror the corpus layout, tier ``phones``).
    Festival/TTS corpora with ``<utt>.phn`` files in seconds beside ``<utt>.wav`` (one folder per voice)
    work as they are, e.g. a folder ``tts_festival/<voice>/<voice>_000.wav`` + ``.phn``.

Run:
    python data_scripts/textgrid.py tts_festival/ data/festival --label-ext .phn
    python data_scripts/textgrid.py CORPUS/ data/mycorpus --labels-dir ALIGNED/ --label-ext .TextGrid

Speakers are the folder names (or ``--speaker-pattern``); 20 % of each speaker's utterances are held
out as test (by a hash of the id), so speaker probes see every speaker on both sides.
"""

from __future__ import annotations

import argparse

from cpcaudio.data import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="folder of audio files")
    parser.add_argument("out", help="dataset directory to create")
    parser.add_argument("--label-ext", default=None, help="label extensions, e.g. .TextGrid or .phn")
    parser.add_argument("--label-units", default="seconds", help="text label times: seconds, samples or htk")
    parser.add_argument("--labels-dir", default=None, help="folder mirroring src with the label files")
    parser.add_argument("--tier", default=None, help="TextGrid tier with the phones (default: phones)")
    parser.add_argument("--speaker-pattern", default=None, help="regex with (?P<speaker>...)")
    parser.add_argument("--sample-rate", type=int, default=None, help="resample to this rate (soxr)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    options = {
        "label_ext": args.label_ext,
        "labels_dir": args.labels_dir,
        "tier": args.tier,
        "speaker_pattern": args.speaker_pattern,
    }
    result = prepare(
        "textgrid",
        args.src,
        args.out,
        sample_rate=args.sample_rate,
        overwrite=args.overwrite,
        label_units=args.label_units,
        **{k: v for k, v in options.items() if v is not None},
    )
    print(f"{result.meta['counts']} -> {result.path}")


if __name__ == "__main__":
    main()
