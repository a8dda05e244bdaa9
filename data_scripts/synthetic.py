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

import argparse

from cpcaudio.data import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="dataset directory to create")
    parser.add_argument("--num-speakers", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    result = prepare(
        "synthetic",
        None,
        args.out,
        num_speakers=args.num_speakers,
        minutes=args.minutes,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"{result.meta['counts']} -> {result.path}")


if __name__ == "__main__":
    main()
