"""Prepare a UEA/UCR time-series classification set (multichannel, possibly variable length).

Get the data:
    Bundled with aeon (``pip install aeon``), no download: BasicMotions, JapaneseVowels, GunPoint,
    ArrowHead, OSULeaf, ACSF1, PickupGestureWiimoteZ, ItalyPowerDemand. Others: download the set's zip
    from https://www.timeseriesclassification.com (e.g. ``Multivariate2018_ts.zip``) and pass the folder
    holding ``<Name>_TRAIN.ts`` and ``<Name>_TEST.ts``.

Run:
    python data_scripts/uea.py BasicMotions data/basicmotions --sample-rate 10
    python data_scripts/uea.py path/to/Epilepsy/ data/epilepsy

Series are stored as float32 with their class as utterance label ``class`` and the set's own
train/test split. ``--sample-rate`` only records the rate (BasicMotions: 10 Hz); nothing is resampled.
"""

from __future__ import annotations

import _common


def main() -> None:
    arguments = _common.parser(
        "uea", __doc__, src_help="bundled set name, folder of .ts files, or one .ts file",
        sample_rate_help="the series' rate, recorded in meta.json (nothing is resampled)",
    )
    _common.run("uea", arguments.parse_args())


if __name__ == "__main__":
    main()
