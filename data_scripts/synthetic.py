"""Generate and prepare the project's synthetic multi-speaker, phone-aligned speech corpus.

Get the data:
    Nothing to download: the speech is synthesised with the eSpeak NG library shipped by the PyPI
    package ``espeakng-loader`` (a dependency of cpcaudio), deterministically for a seed.

Run:
    python data_scripts/synthetic.py data/synthetic                     # 8 speakers, 10 minutes
    python data_scripts/synthetic.py data/synth60 --minutes 60 --num-speakers 16 --seed 1

Phone labels are the 39 folded TIMIT classes; 20 % of each speaker's utterances are held out as test.
"""

from __future__ import annotations

import _common


def main() -> None:
    _common.run("synthetic", _common.parser("synthetic", __doc__).parse_args())


if __name__ == "__main__":
    main()
