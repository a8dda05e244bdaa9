"""``synthetic``: generate the project's multi-speaker, phone-aligned corpus, then prepare it.

:func:`cpcaudio.data.synthetic.generate_corpus` writes ``<speaker>/<utt>.wav`` with ``<utt>.phn``
(``start_seconds end_seconds phone``) into a scratch folder inside the output directory; it is read
like a ``textgrid`` source (speaker = folder; within-speaker hold-out split, so every speaker has test
utterances for speaker probes) and deleted once the dataset is written.
"""

from __future__ import annotations

from pathlib import Path

from cpcaudio.data.sources import textgrid
from cpcaudio.data.sources.base import SourcePlan
from cpcaudio.data.sources.spec import TEST_FRACTION, SourceKind, SourceOption
from cpcaudio.data.splits import DEFAULT_TEST_FRACTION

DEFAULT_NUM_SPEAKERS = 8
DEFAULT_MINUTES = 10.0
DEFAULT_SEED = 0

SUMMARY = "generate the project's multi-speaker, phone-aligned eSpeak corpus (no SRC: prepare synthetic OUT)"
OPTIONS: tuple[SourceOption, ...] = (
    SourceOption("num_speakers", int, DEFAULT_NUM_SPEAKERS, "Voices (eSpeak variants with their own prosody)."),
    SourceOption("minutes", float, DEFAULT_MINUTES, "Minutes of audio to generate."),
    SourceOption("seed", int, DEFAULT_SEED, "Seed of the sentences, prosody and noise."),
    TEST_FRACTION,
)
"""The options of :func:`discover` that users set (``cpcaudio prepare --help``)."""


def discover(
    src: object,
    *,
    scratch_dir: Path,
    num_speakers: int = DEFAULT_NUM_SPEAKERS,
    minutes: float = DEFAULT_MINUTES,
    seed: int = DEFAULT_SEED,
    sample_rate: int = 16000,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> SourcePlan:
    """Generate the corpus into ``scratch_dir`` and list it.

    Args:
        src: ignored (the corpus is generated).
        scratch_dir: where the generated audio goes (removed by ``prepare`` afterwards).
        num_speakers: voices to use.
        minutes: total audio to generate.
        seed: makes the corpus reproducible.
        sample_rate: rate of the generated audio.
        test_fraction: share of each speaker's utterances held out as ``test``.

    Returns:
        The plan with frame labels.
    """
    from cpcaudio.data.synthetic import generate_corpus

    corpus = Path(
        generate_corpus(scratch_dir, num_speakers=num_speakers, minutes=minutes, seed=seed, sample_rate=sample_rate)
    )
    plan = textgrid.discover(corpus, label_ext=".phn", label_units="seconds", test_fraction=test_fraction)
    plan.kind = "synthetic"
    plan.source = {"num_speakers": num_speakers, "minutes": minutes, "seed": seed}
    return plan


KIND = SourceKind("synthetic", discover, SUMMARY, OPTIONS, source="none", receives=("sample_rate", "scratch_dir"))
