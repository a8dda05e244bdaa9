"""Prepare the Free Spoken Digit Dataset (spoken digits 0-9, 6 speakers, 8 kHz).

Get the data:
    git clone https://github.com/Jakobovski/free-spoken-digit-dataset fsdd
    (the recordings are ``fsdd/recordings/{digit}_{speaker}_{take}.wav``; CC BY-SA 4.0).

Run:
    python data_scripts/fsdd.py fsdd/ data/fsdd                    # keep 8 kHz
    python data_scripts/fsdd.py fsdd/ data/fsdd16k --sample-rate 16000  # for a 16 kHz model

Labels: utterance label ``digit``; the official split (takes 0-4 test, 5-49 train) puts every speaker
on both sides, so it serves digit and speaker probes alike.
"""

from __future__ import annotations

import argparse

from cpcaudio.data import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="FSDD folder (or its recordings/)")
    parser.add_argument("out", help="dataset directory to create")
    parser.add_argument("--sample-rate", type=int, default=None, help="resample to this rate (soxr)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    result = prepare("fsdd", args.src, args.out, sample_rate=args.sample_rate, overwrite=args.overwrite)
    print(f"{result.meta['counts']} -> {result.path}")


if __name__ == "__main__":
    main()
