"""Prepare LibriSpeech train-clean-100 with the CPC paper's phone labels and splits.

Get the data:
    Audio: https://www.openslr.org/12 -> ``train-clean-100.tar.gz`` (6.3 GB); unpack to
    ``LibriSpeech/train-clean-100/<speaker>/<chapter>/<utt>.flac``.
    Labels and splits: the CPC paper's files, linked from the README of facebookresearch/CPC_audio
    ("LibriSpeech 100h phone labels"): ``converted_aligned_phones.txt`` (one integer per 10 ms, 41
    classes), ``train_split.txt`` and ``test_split.txt`` (one utterance id per line).

Run:
    python data_scripts/librispeech.py LibriSpeech/train-clean-100 data/librispeech100 \\
        --labels converted_aligned_phones.txt --train train_split.txt --test test_split.txt

Utterances with labels but no audio, or audio but no labels, are counted and listed in the dataset's
``report.json`` (audio without labels is kept for CPC training, unlabelled).
"""

from __future__ import annotations

import _common


def main() -> None:
    arguments = _common.parser("librispeech", __doc__, src_help="folder holding the speaker folders")
    arguments.add_argument("--train", help="train_split.txt (= --split-list train=FILE)")
    arguments.add_argument("--test", help="test_split.txt (= --split-list test=FILE)")
    args = arguments.parse_args()
    split_lists = {name: path for name, path in (("train", args.train), ("test", args.test)) if path}
    _common.run("librispeech", args, **({"split_lists": split_lists} if split_lists else {}))


if __name__ == "__main__":
    main()
