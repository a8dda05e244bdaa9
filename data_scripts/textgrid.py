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

import _common


def main() -> None:
    args = _common.parser("textgrid", __doc__, src_help="folder of audio files").parse_args()
    _common.run("textgrid", args)


if __name__ == "__main__":
    main()
