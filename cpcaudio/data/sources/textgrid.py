"""``textgrid``: audio files with phone alignments beside them (or in a mirrored labels folder).

Label files share the audio file's stem and are looked up with the extensions ``label_ext`` (default
``.TextGrid``, ``.phn``, ``.lab``, first found wins):

- Praat TextGrid (e.g. Montreal Forced Aligner output), read with praatio: the tier ``tier`` (default:
  ``phones``, or the only tier whose name contains ``phone``); empty intervals become ``sil``;
- text files with one ``start end phone`` segment per line, times in ``label_units``: ``seconds``
  (default; festival, Audacity), ``samples`` (TIMIT-style) or ``htk`` (100 ns).

The phone set is open (every symbol found, stored sorted) unless ``phone_set`` fixes it (a file with one
symbol per line, or a comma-separated list of two or more symbols: a value without a comma must name an
existing file); then any other symbol is an error naming the file.
Speakers and splits follow the ``folder`` rules (parent folder name or ``speaker_pattern``;
within-speaker hold-out of ``test_fraction``). Audio without a label file is kept with no labels (-1)
and counted as ``audio_without_labels``; label files without audio are counted as
``labels_without_audio``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

from cpcaudio.data.labels import SEGMENT_UNITS
from cpcaudio.data.sources import base
from cpcaudio.data.sources.base import LabelSource, SourcePlan, UtteranceItem, utterance_id_from_path
from cpcaudio.data.sources.spec import SPEAKER_PATTERN, TEST_FRACTION, SourceKind, SourceOption
from cpcaudio.data.splits import DEFAULT_TEST_FRACTION
from cpcaudio.errors import DataError, UsageError

DEFAULT_LABEL_EXTENSIONS: tuple[str, ...] = (".TextGrid", ".phn", ".lab")

SUMMARY = "audio with phone alignments: Praat/MFA TextGrids or 'start end phone' files"
OPTIONS: tuple[SourceOption, ...] = (
    SourceOption(
        "label_ext", str, None,
        "Label file extensions in order of preference, e.g. .TextGrid,.phn,.lab (default: those three).",
    ),
    SourceOption("label_units", str, "seconds", "Times in text label files: seconds, samples or htk."),
    SourceOption("tier", str, None, "TextGrid tier with the phones (default: phones, or the one phone tier)."),
    SourceOption("labels_dir", Path, None, "Folder mirroring SRC that holds the label files."),
    SourceOption(
        "phone_set", str, None, "Fixed phone set: a file (one symbol per line) or a comma-separated list."
    ),
    SPEAKER_PATTERN,
    TEST_FRACTION,
)
"""The options of :func:`discover` that users set (``cpcaudio prepare --help``)."""


def discover(
    src: Path,
    *,
    label_ext: Union[str, Sequence[str], None] = None,
    label_units: str = "seconds",
    tier: Optional[str] = None,
    labels_dir: Optional[Path] = None,
    phone_set: Union[Path, str, Sequence[str], None] = None,
    speaker_pattern: Optional[str] = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> SourcePlan:
    """List audio files and their alignment files.

    Args:
        src: folder of audio files (searched recursively).
        label_ext: label file extension(s) to look for, in order of preference.
        label_units: time unit of text label files: ``seconds``, ``samples`` or ``htk``.
        tier: TextGrid tier holding the phones.
        labels_dir: folder mirroring ``src``'s layout that holds the label files (default: beside the audio).
        phone_set: fixed phone set: a file (one symbol per line), a comma-separated string or a list.
        speaker_pattern: regex with a named group ``speaker`` (default: parent folder name).
        test_fraction: share of each speaker's utterances held out as ``test``.

    Returns:
        The plan with frame labels.
    """
    src = Path(src)
    if label_units not in SEGMENT_UNITS:
        raise UsageError(f"label units {label_units!r} is not one of {', '.join(SEGMENT_UNITS)}")
    extensions = _extensions(label_ext)
    base.compile_speaker_pattern(speaker_pattern)  # a bad pattern is refused before anything is read
    label_root = Path(labels_dir) if labels_dir is not None else src
    vocabulary = _phone_set(phone_set)
    plan = SourcePlan(
        kind="textgrid",
        items=[],
        has_frame_labels=True,
        phone_vocabulary=vocabulary,
        source={
            "label_ext": list(extensions),
            "label_units": label_units,
            "tier": tier,
            "labels_dir": str(labels_dir) if labels_dir else None,
            "speaker_pattern": speaker_pattern,
        },
    )
    used_labels: set[Path] = set()
    without_labels = []
    for audio, relative, speaker in base.audio_files_by_speaker(plan, src, speaker_pattern):
        label_path = _find_label(label_root / relative.parent, audio.stem, extensions)
        utterance_id = utterance_id_from_path(relative)
        if label_path is None:
            without_labels.append(utterance_id)
            labels = None
        else:
            used_labels.add(label_path.resolve())
            labels = LabelSource(path=label_path, units=label_units, tier=tier)
        plan.items.append(UtteranceItem(utterance_id, speaker, "", audio_path=audio, labels=labels))
    lowered = {e.lower() for e in extensions}
    orphans = [
        p.relative_to(label_root).as_posix()
        for p in base.walk_files(label_root)[0]
        if p.suffix.lower() in lowered and p.resolve() not in used_labels
    ]
    plan.unmatched["audio_without_labels"] = without_labels
    plan.unmatched["labels_without_audio"] = orphans
    base.assign_missing_splits(plan, test_fraction)
    return plan


def _extensions(label_ext: Union[str, Sequence[str], None]) -> tuple[str, ...]:
    if label_ext is None:
        return DEFAULT_LABEL_EXTENSIONS
    values = [label_ext] if isinstance(label_ext, str) else list(label_ext)
    values = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return tuple(v if v.startswith(".") else f".{v}" for v in values)


def _find_label(folder: Path, stem: str, extensions: tuple[str, ...]) -> Optional[Path]:
    for extension in extensions:
        for candidate in (folder / f"{stem}{extension}", folder / f"{stem}{extension.lower()}"):
            if candidate.is_file():
                return candidate
    return None


def _phone_set(phone_set: Union[Path, str, Sequence[str], None]) -> Optional[list[str]]:
    if phone_set is None:
        return None
    if isinstance(phone_set, Path) or (isinstance(phone_set, str) and "," not in phone_set):
        # a file, since a list of one symbol would be no phone set: refuse a file that is not there
        if not Path(phone_set).is_file():
            problem = "is a folder" if Path(phone_set).is_dir() else "does not exist"
            raise DataError(
                f"phone set file {phone_set} {problem}; give a file with one symbol per line, or the symbols "
                "separated by commas (e.g. --phone-set sil,aa,iy)"
            )
        try:
            lines = Path(phone_set).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(
                f"{phone_set}: cannot read the phone set ({error}); give a UTF-8 file, one symbol per line"
            ) from None
        symbols = [line.split()[0] for line in lines if line.strip()]
    elif isinstance(phone_set, str):
        symbols = [s.strip() for s in phone_set.split(",") if s.strip()]
    else:
        symbols = [str(s) for s in phone_set]
    if not symbols:
        raise DataError(f"phone set {phone_set!r} is empty")
    return sorted(set(symbols))


KIND = SourceKind("textgrid", discover, SUMMARY, OPTIONS)
