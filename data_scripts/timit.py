"""Prepare TIMIT (full corpus or the NLTK sample) with its hand-labelled phones.

Get the data:
    Full corpus: LDC93S1 from the Linguistic Data Consortium (https://catalog.ldc.upenn.edu/LDC93S1,
    licence required). Unpack it so that ``TIMIT/TRAIN/DR1/FVMH0/SA1.WAV`` and ``SA1.PHN`` exist
    (NIST SPHERE headers are fine; libsndfile reads them).
    Sample: the free 10 % sample distributed with NLTK: ``python -m nltk.downloader timit`` puts it in
    ``~/nltk_data/corpora/timit`` (layout ``dr1-fvmh0/sa1.wav``).

Run:
    python data_scripts/timit.py TIMIT/ data/timit            # 61 phones
    python data_scripts/timit.py TIMIT/ data/timit39 --fold-39  # Lee & Hon's 39 classes

Split: the full corpus keeps its official TRAIN/TEST split (disjoint speakers); the NLTK sample, which
has none, holds out 2 of each speaker's 10 sentences (chosen by a hash of the id) so that speaker probes
see every speaker in train and test. ``--within-speaker`` asks for that rule on the full corpus too.
The NLTK sample's ``dr3-madc0/si1367`` has 175 ms of audio after its last label; it is reported and
left out by ``--on-error skip`` (the default of this script).
"""

from __future__ import annotations

import _common


def main() -> None:
    arguments = _common.parser(
        "timit", __doc__, src_help="TIMIT root (TRAIN/TEST) or the NLTK sample folder", on_error="skip"
    )
    arguments.add_argument(
        "--within-speaker", action="store_true", help="within-speaker split on the full corpus (--split within-speaker)"
    )
    args = arguments.parse_args()
    _common.run("timit", args, **({"split": "within-speaker"} if args.within_speaker else {}))


if __name__ == "__main__":
    main()
