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

import _common


def main() -> None:
    args = _common.parser("fsdd", __doc__, src_help="FSDD folder (or its recordings/)").parse_args()
    _common.run("fsdd", args)


if __name__ == "__main__":
    main()
