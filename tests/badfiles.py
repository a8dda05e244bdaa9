"""Tiny generated corpora of every source kind, the ways a file can be bad, and the checks every failure
must pass. Shared by the ``test_bad_input_*`` files and ``test_kill_resume.py`` (not a test module).

Nothing here is recorded audio: every signal is a few hundred milliseconds of generated tones, written
into pytest's ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile

RATE = 16000
SECONDS = 0.25  # 4000 samples, 25 label frames of 10 ms
SPEAKERS = ("anna", "bert")


def tone(num_samples: int, rate: int = RATE, channels: int = 1, frequency: float = 220.0) -> np.ndarray:
    """float32 (time, channels): a sine with a little deterministic noise."""
    t = np.arange(num_samples) / rate
    mono = 0.3 * np.sin(2 * np.pi * frequency * t) + 0.01 * np.sin(2 * np.pi * 3111.0 * t + 1.0)
    return np.stack([mono * (0.5 + 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, rate: int = RATE, subtype: Optional[str] = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if subtype is None:
        subtype = "PCM_16"
    audio_format = "FLAC" if path.suffix == ".flac" else "WAV"
    soundfile.write(os.fsencode(path), samples, rate, subtype=subtype, format=audio_format)  # any file name bytes
    return path


# ---- corpora ---------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """A generated source corpus.

    Attributes:
        kind: the ``prepare`` kind.
        root: the SRC folder.
        victim: the audio file the damage cases change (a file of the second speaker, so the first file
            read still fixes the dataset's rate).
        label_file: the victim's label file (or the corpus label file for librispeech), if any.
        rate: the corpus sample rate.
        num_utterances: utterances prepared when nothing is damaged.
    """

    kind: str
    root: Path
    victim: Path
    label_file: Optional[Path]
    rate: int
    num_utterances: int


def make_folder(root: Path) -> Corpus:
    for number, speaker in enumerate(SPEAKERS):
        for index in range(2):
            write_audio(root / speaker / f"{speaker}_{index}.wav", tone(int(SECONDS * RATE), frequency=200 + 50 * number))
    return Corpus("folder", root, root / "bert" / "bert_1.wav", None, RATE, 4)


def make_librispeech(root: Path) -> Corpus:
    lines = []
    for speaker, chapter in (("19", "198"), ("26", "495")):
        for index in range(2):
            utterance = f"{speaker}-{chapter}-{index:04d}"
            write_audio(root / speaker / chapter / f"{utterance}.flac", tone(int(SECONDS * RATE)))
            lines.append(f"{utterance} " + " ".join(str(1 + (i // 5) % 3) for i in range(int(SECONDS * 100))))
    (root / "phone_labels.txt").write_text("\n".join(lines) + "\n")
    return Corpus("librispeech", root, root / "26" / "495" / "26-495-0001.flac", root / "phone_labels.txt", RATE, 4)


def make_timit(root: Path) -> Corpus:
    samples = int(SECONDS * RATE)
    for folder in ("dr1-fabc0", "dr1-mdef0"):
        for sentence in ("sa1", "sa2"):
            write_audio(root / folder / f"{sentence}.wav", tone(samples))
            (root / folder / f"{sentence}.phn").write_text(f"0 1000 h#\n1000 3000 aa\n3000 {samples} h#\n")
    victim = root / "dr1-mdef0" / "sa2.wav"
    return Corpus("timit", root, victim, victim.with_suffix(".phn"), RATE, 4)


def make_textgrid(root: Path) -> Corpus:
    for speaker in SPEAKERS:
        for index in range(2):
            audio = write_audio(root / speaker / f"u{index}.wav", tone(int(SECONDS * RATE)))
            audio.with_suffix(".phn").write_text(f"0 0.05 sil\n0.05 0.2 aa\n0.2 {SECONDS} sil\n")
    victim = root / "bert" / "u1.wav"
    return Corpus("textgrid", root, victim, victim.with_suffix(".phn"), RATE, 4)


def make_fsdd(root: Path) -> Corpus:
    rate = 8000
    for digit in (0, 1):
        for speaker in ("jack", "theo"):
            for take in (0, 7):
                write_audio(root / "recordings" / f"{digit}_{speaker}_{take}.wav", tone(int(SECONDS * rate), rate), rate)
    return Corpus("fsdd", root, root / "recordings" / "1_theo_7.wav", None, rate, 8)


AUDIO_KINDS: dict[str, Callable[[Path], Corpus]] = {
    "folder": make_folder,
    "librispeech": make_librispeech,
    "timit": make_timit,
    "textgrid": make_textgrid,
    "fsdd": make_fsdd,
}


def write_ts(path: Path, rows: list[str]) -> Path:
    """A univariate UEA ``.ts`` file with classes a/b and the given ``values:class`` rows."""
    header = (
        "@problemName Tiny\n@timeStamps false\n@missing true\n@univariate true\n@equalLength false\n"
        "@classLabel true a b\n@data\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def make_uea(root: Path) -> Path:
    rows = [",".join(str(v) for v in np.round(np.sin(np.arange(12) * (k + 1) * 0.3), 3)) + f":{'ab'[k % 2]}" for k in range(4)]
    write_ts(root / "Tiny_TRAIN.ts", rows)
    write_ts(root / "Tiny_TEST.ts", rows)
    return root


# ---- damage --------------------------------------------------------------------------------------------


def _cut(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _float_wav(victim: Path, bad_value: float) -> Path:
    """Replace the victim by a float WAV (same stem) holding one ``bad_value`` sample."""
    samples = tone(int(SECONDS * RATE))
    samples[len(samples) // 2] = bad_value
    victim.unlink()
    return write_audio(victim.with_suffix(".wav"), samples, RATE, subtype="FLOAT")


def _rename_non_utf8(victim: Path) -> Path:
    """Give the victim a Latin-1 file name (bytes that are not UTF-8), keeping its digits/prefix."""
    raw = os.fsencode(victim)
    renamed = raw[: -len(victim.suffix)] + b"\xe9" + os.fsencode(victim.suffix)
    os.rename(raw, renamed)
    return Path(os.fsdecode(renamed))


@dataclass(frozen=True)
class Damage:
    """One way to spoil the victim file: ``apply(victim, rate) -> the bad file``; the expected message."""

    name: str
    apply: Callable[[Path, int], Path]
    message: str  # regex searched in the error line


AUDIO_DAMAGE = [
    Damage("truncated", lambda v, r: _cut(v, 0.6), r"truncated audio file|cannot read audio"),
    Damage("truncated-header", lambda v, r: _cut(v, 0.004), r"cannot read audio"),
    Damage("zero-bytes", lambda v, r: (v.write_bytes(b""), v)[1], r"empty file \(0 bytes\)"),
    Damage("text-as-audio", lambda v, r: (v.write_text("this is not audio\n" * 40), v)[1], r"cannot read audio"),
    Damage("nan", lambda v, r: _float_wav(v, float("nan")), r"NaN or infinite samples"),
    Damage("inf", lambda v, r: _float_wav(v, float("inf")), r"NaN or infinite samples"),
    Damage("one-sample", lambda v, r: (v.unlink(), write_audio(v, tone(1, r), r))[1], r"only 1 samples"),
    Damage(
        "shorter-than-receptive-field",
        lambda v, r: (v.unlink(), write_audio(v, tone(200, r), r))[1],
        r"only \d+ samples .* shorter than the 465-sample receptive field",
    ),
    Damage(
        "other-sample-rate",
        lambda v, r: (v.unlink(), write_audio(v, tone(int(SECONDS * r * 2), 2 * r), 2 * r))[1],
        r"sample rate \d+ Hz differs from the dataset's \d+ Hz .*pass --sample-rate",
    ),
    Damage("non-utf8-name", lambda v, r: _rename_non_utf8(v), r"not valid UTF-8; rename it|does not follow"),
]


def truncated_flac(victim: Path) -> Path:
    """Replace the victim by a FLAC file cut in half."""
    victim.unlink()
    flac = write_audio(victim.with_suffix(".flac"), tone(int(SECONDS * RATE)))
    return _cut(flac, 0.5)


# ---- what every failure must look like ---------------------------------------------------------------


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_clean_failure(result: Any, exit_code: int, pattern: str, *names: object) -> str:
    """A CLI failure as issue 8 wants it: the given exit code, exactly one ``error:`` line matching
    ``pattern`` and naming every item of ``names`` (files, keys), no traceback. Returns the line."""
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == exit_code, f"exit {result.exit_code}, wanted {exit_code}:\n{output}"
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = error_lines(output)
    assert len(lines) == 1, output
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    for name in names:
        shown = os.fsencode(str(name)).decode("utf-8", "backslashreplace")
        assert shown in lines[0], f"{shown!r} not named in {lines[0]!r}"
    return lines[0]


def assert_no_complete_dataset(out: Path) -> None:
    """After a failed ``prepare``: nothing at ``out`` opens as a dataset (no meta.json, no leftovers)."""
    if out.exists():
        assert not (out / "meta.json").exists(), sorted(os.listdir(out))
        assert not [p for p in out.iterdir() if not p.name.startswith(".")], sorted(os.listdir(out))


def assert_no_complete_store(out: Path) -> None:
    """After a failed ``extract``: no feature store that looks complete."""
    if out.exists():
        assert not (out / "meta.json").exists() and not (out / "features.npy").exists(), sorted(os.listdir(out))


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder nobody may write into, root included (tests run as root, which writes through permission
    bits): ``chmod 555`` for a normal user, the immutable attribute (``chattr +i``) for root. Skips the
    test where neither works."""
    import pytest

    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
    elif shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("cannot make a read-only folder for root here (chattr +i unavailable)")
    try:
        yield path
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o755)


def tiny_run_sections(rate: int) -> dict[str, dict[str, object]]:
    """The config sections of a two-step training run of a tiny model on ``rate`` Hz audio."""
    return {
        "encoder": {"hidden_dim": 16},
        "context": {"hidden_dim": 16},
        "predictor": {"num_steps": 2, "num_negatives": 4},
        "data": {"sample_rate": rate, "window_size": 1600, "batch_size": 2, "sampler": "uniform"},
        "train": {"max_steps": 2, "validate_every": 2, "validation_batches": 1, "log_every": 1},
    }


def write_two_speaker_tones(source: Path, rate: int) -> Path:
    """Two speakers (anna, bert) with three 0.4 s tones each under ``source``, as WAV files at ``rate``."""
    for number, speaker in enumerate(("anna", "bert")):
        for index in range(3):
            samples = tone(int(0.4 * rate), rate, frequency=300 + 90 * number + 40 * index)
            write_audio(source / speaker / f"{speaker}_{index}.wav", samples, rate)
    return source


def prepare_two_speaker_tones(root: Path, rate: int) -> Path:
    """:func:`write_two_speaker_tones` under ``root/source``, prepared (folder kind) into ``root/dataset``."""
    from cpcaudio.data import prepare

    write_two_speaker_tones(root / "source", rate)
    prepare("folder", root / "source", root / "dataset", workers=1)
    return root / "dataset"
