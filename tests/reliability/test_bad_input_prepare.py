"""Bad input to ``cpcaudio prepare`` of every kind: one clear error line naming the file and the fix, the
data-error exit code, no traceback, and nothing left that opens as a dataset. Driven through the CLI
(typer's CliRunner) on tiny generated corpora; ``docs/reliability.md`` lists the same cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from badfiles import (
    AUDIO_DAMAGE,
    AUDIO_KINDS,
    Damage,
    assert_clean_failure,
    assert_no_complete_dataset,
    make_folder,
    make_librispeech,
    make_textgrid,
    make_timit,
    make_uea,
    read_only_folder,
    tone,
    truncated_flac,
    write_audio,
    write_ts,
)
from cpcaudio.cli.main import app
from cpcaudio.data import PreparedDataset

USAGE, DATA = 2, 3
runner = CliRunner()


def prepare(kind: str, src: Path, out: Path, *options: str):
    return runner.invoke(app, ["prepare", kind, str(src), str(out), "--workers", "1", "-q", *options])


@pytest.fixture
def place(tmp_path: Path) -> Path:
    """A folder whose name has a space: every corpus and output path below it has one."""
    path = tmp_path / "my data"
    path.mkdir()
    return path


# ---- damaged audio, every audio kind ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", AUDIO_DAMAGE, ids=lambda d: d.name)
@pytest.mark.parametrize("kind", list(AUDIO_KINDS))
def test_damaged_audio_file_is_refused_with_one_line(kind: str, damage: Damage, place: Path):
    corpus = AUDIO_KINDS[kind](place / "corpus")
    bad = damage.apply(corpus.victim, corpus.rate)
    out = place / "out"
    result = prepare(kind, corpus.root, out)
    names = [] if damage.name == "non-utf8-name" and kind == "fsdd" else [bad]
    line = assert_clean_failure(result, DATA, damage.message, *names)
    assert "--on-error skip" in line
    assert_no_complete_dataset(out)


@pytest.mark.parametrize("kind", list(AUDIO_KINDS))
def test_on_error_skip_keeps_the_good_files_and_reports_the_bad_one(kind: str, place: Path):
    corpus = AUDIO_KINDS[kind](place / "corpus")
    corpus.victim.write_bytes(b"")
    out = place / "out dir"
    result = prepare(kind, corpus.root, out, "--on-error", "skip")
    assert result.exit_code == 0, result.output
    dataset = PreparedDataset.open(out)
    assert len(dataset) == corpus.num_utterances - 1
    skipped = json.loads((out / "report.json").read_text())["skipped"]
    assert [entry["file"] for entry in skipped] == [str(corpus.victim)]
    assert "empty file (0 bytes)" in skipped[0]["problem"]


@pytest.mark.parametrize("make", [make_folder, make_librispeech], ids=["folder", "librispeech"])
def test_truncated_flac(make, place: Path):
    corpus = make(place / "corpus")
    bad = truncated_flac(corpus.victim)
    out = place / "out"
    assert_clean_failure(prepare(corpus.kind, corpus.root, out), DATA, r"cannot read audio", bad)
    assert_no_complete_dataset(out)


def test_other_sample_rate_is_resampled_when_asked(place: Path):
    corpus = make_folder(place / "corpus")
    corpus.victim.unlink()
    write_audio(corpus.victim, tone(8000, 32000), 32000)
    result = prepare("folder", corpus.root, place / "out", "--sample-rate", "16000")
    assert result.exit_code == 0, result.output
    dataset = PreparedDataset.open(place / "out")
    assert dataset.sample_rate == 16000
    assert int(dataset.lengths[dataset.utterance_ids.index("bert/bert_1")]) == 4000


def test_stereo_is_mixed_down_unless_channels_are_kept(place: Path):
    corpus = make_folder(place / "corpus")
    stereo = tone(4000, channels=2)
    write_audio(corpus.victim, stereo)
    out = place / "mono"
    assert prepare("folder", corpus.root, out).exit_code == 0
    dataset = PreparedDataset.open(out)
    assert dataset.num_channels == 1
    mixed = dataset.read(dataset.utterance_ids.index("bert/bert_1"))[0]
    stored, _ = soundfile.read(corpus.victim, dtype="float32")  # (time, 2), as quantised in the file
    expected = np.clip(np.rint(stored.mean(axis=1) * 32768), -32768, 32767) / 32768
    np.testing.assert_allclose(mixed, expected, atol=1.01 / 32768)
    result = prepare("folder", corpus.root, place / "kept", "--keep-channels")
    assert_clean_failure(result, DATA, r"2 channels, the dataset has 1; pass --mono", corpus.victim)
    assert_no_complete_dataset(place / "kept")


def test_spaces_and_non_utf8_bytes_in_folder_names(tmp_path: Path):
    """Spaces and Latin-1 bytes in the source and output folders are fine; only stored names must be UTF-8."""
    source = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9 corpus"))
    corpus = make_folder(source)
    out = Path(os.fsdecode(os.fsencode(tmp_path) + b"/out \xe9"))
    result = prepare("folder", corpus.root, out)
    assert result.exit_code == 0, result.output
    assert PreparedDataset.open(out).utterance_ids == ["anna/anna_0", "anna/anna_1", "bert/bert_0", "bert/bert_1"]


def test_non_utf8_name_printed_by_the_real_command_without_traceback(tmp_path: Path):
    """The message names the file with a \\xe9 escape also when printed by the installed command."""
    corpus = make_folder(tmp_path / "corpus")
    os.rename(os.fsencode(corpus.victim), os.fsencode(corpus.victim.parent) + b"/bert \xe9.wav")
    command = [sys.executable, "-m", "cpcaudio.cli.main", "prepare", "folder", str(corpus.root), str(tmp_path / "out"),
               "-q", "--workers", "1"]
    process = subprocess.run(command, capture_output=True, env={**os.environ, "LC_ALL": "C.UTF-8"}, timeout=120)
    stderr = process.stderr.decode("utf-8", "replace")
    assert process.returncode == DATA and "Traceback" not in stderr
    assert "bert \\xe9.wav: the file name is not valid UTF-8; rename it" in stderr


# ---- labels ----------------------------------------------------------------------------------------------


def _librispeech_labels(corpus, utterance: str, labels: str) -> None:
    lines = corpus.label_file.read_text().splitlines()
    lines = [f"{utterance} {labels}" if line.split()[0] == utterance else line for line in lines]
    corpus.label_file.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "frames, message",
    [(35, r"35 frame labels for 25 frames of audio"), (15, r"15 frame labels for 25 frames of audio")],
    ids=["longer", "shorter"],
)
def test_librispeech_label_line_longer_or_shorter_than_audio(frames: int, message: str, place: Path):
    corpus = make_librispeech(place / "corpus")
    _librispeech_labels(corpus, "26-495-0001", " ".join(["1"] * frames))
    out = place / "out"
    assert_clean_failure(prepare("librispeech", corpus.root, out), DATA, message, corpus.victim)
    assert_no_complete_dataset(out)


def test_librispeech_unknown_label_class(place: Path):
    corpus = make_librispeech(place / "corpus")
    _librispeech_labels(corpus, "26-495-0001", " ".join(["77"] * 25))
    line = assert_clean_failure(prepare("librispeech", corpus.root, place / "out"), DATA, r"frame label 77 is not a known class")
    assert "--num-classes" in line or "number of classes" in line


def test_librispeech_label_file_problems(place: Path):
    corpus = make_librispeech(place / "corpus")
    text = corpus.label_file.read_text()
    corpus.label_file.write_text(text + text.splitlines()[0] + "\n")  # an utterance twice
    result = prepare("librispeech", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r":5: utterance '19-198-0000' is listed twice", corpus.label_file)
    corpus.label_file.write_bytes(text.encode() + b"19-198-9999 1 \xff 2\n")  # not UTF-8
    result = prepare("librispeech", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r"not UTF-8 text", corpus.label_file)
    corpus.label_file.write_text(text.replace("19-198-0000 1", "19-198-0000 one"))
    result = prepare("librispeech", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r":1: labels of '19-198-0000' must be integers", corpus.label_file)
    assert_no_complete_dataset(place / "out")


def test_label_line_for_a_missing_utterance_is_reported_not_fatal(place: Path):
    """Real label files cover a whole corpus (CPC's LibriSpeech-100 labels): lines without audio are
    counted, printed and listed in report.json, and preparation goes on."""
    corpus = make_librispeech(place / "corpus")
    with open(corpus.label_file, "a") as handle:
        handle.write("1-2-3 " + " ".join(["1"] * 25) + "\n")
    out = place / "out"
    result = runner.invoke(app, ["prepare", "librispeech", str(corpus.root), str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "labels_without_audio: 1 (listed in" in result.output
    assert json.loads((out / "report.json").read_text())["labels_without_audio"] == ["1-2-3"]


@pytest.mark.parametrize("end, message", [(4800, "labels end at 0.300 s"), (3200, "labels end at 0.200 s")],
                         ids=["longer", "shorter"])
def test_timit_phn_longer_or_shorter_than_audio(end: int, message: str, place: Path):
    corpus = make_timit(place / "corpus")
    corpus.label_file.write_text(f"0 1000 h#\n1000 3000 aa\n3000 {end} h#\n")
    line = assert_clean_failure(prepare("timit", corpus.root, place / "out"), DATA, message, corpus.label_file)
    assert "but the audio lasts 0.250 s" in line and "--on-error skip" in line
    assert_no_complete_dataset(place / "out")


def test_timit_unknown_phone_symbol_and_unreadable_phn(place: Path):
    corpus = make_timit(place / "corpus")
    corpus.label_file.write_text("0 1000 h#\n1000 3000 zz\n3000 4000 h#\n")
    result = prepare("timit", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r"unknown phone symbol 'zz' \(segment 2\)", corpus.label_file)
    corpus.label_file.write_bytes(b"0 1000 h#\n1000 3000 a\xffa\n3000 4000 h#\n")
    result = prepare("timit", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r"cannot read label file", corpus.label_file)


def test_textgrid_label_problems(place: Path):
    corpus = make_textgrid(place / "corpus")
    corpus.label_file.write_text("0 0.05 sil\n0.05 0.2 qq\n0.2 0.25 sil\n")
    result = prepare("textgrid", corpus.root, place / "out", "--phone-set", "sil,aa")
    assert_clean_failure(result, DATA, r"phone symbol 'qq' \(segment 2\) is not in the phone set", corpus.label_file)
    corpus.label_file.write_text("0 0.05 sil\n0.05 0.2 aa\n0.2 0.31 sil\n")
    result = prepare("textgrid", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r"labels end at 0.310 s but the audio lasts 0.250 s", corpus.label_file)
    corpus.label_file.unlink()
    grid = corpus.label_file.with_suffix(".TextGrid")
    grid.write_text("this is no TextGrid\n")
    result = prepare("textgrid", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r"cannot read TextGrid", grid)
    phone_set = place / "phones.txt"
    phone_set.write_bytes(b"sil\na\xffa\n")
    grid.unlink()
    result = prepare("textgrid", corpus.root, place / "out", "--phone-set", str(phone_set))
    assert_clean_failure(result, DATA, r"cannot read the phone set", phone_set)
    assert_no_complete_dataset(place / "out")


# ---- split lists, file lists and duplicate ids ----------------------------------------------------------------


def test_split_lists(place: Path):
    corpus = make_librispeech(place / "corpus")
    train, test = corpus.root / "train_split.txt", corpus.root / "test_split.txt"
    train.write_text("19-198-0000\n19-198-0001\n26-495-0000\n")
    test.write_text("26-495-0001\n9-9-9\n")  # one unknown utterance: counted and reported
    out = place / "ok"
    assert prepare("librispeech", corpus.root, out).exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["listed_without_audio"] == ["9-9-9"]
    assert PreparedDataset.open(out).splits.count("test") == 1

    test.write_text("26-495-0001\n19-198-0000\n")  # an utterance in two splits
    result = prepare("librispeech", corpus.root, place / "two")
    assert_clean_failure(result, DATA, r"utterance '19-198-0000' is also in the train split list", test, train)
    train.write_text("1-1-1\n")  # lists of another corpus
    test.write_text("2-2-2\n")
    result = prepare("librispeech", corpus.root, place / "other")
    assert_clean_failure(result, DATA, r"name none of the 4 utterances found", train)
    train.write_bytes(b"19-198-0000\xff\n")
    result = prepare("librispeech", corpus.root, place / "bytes")
    assert_clean_failure(result, DATA, r"cannot read split list", train)
    for name in ("two", "other", "bytes"):
        assert_no_complete_dataset(place / name)


def test_duplicate_utterance_ids(place: Path):
    corpus = make_folder(place / "folder")
    write_audio(corpus.victim.with_suffix(".flac"), tone(4000))  # bert/bert_1.flac and .wav: same id
    result = prepare("folder", corpus.root, place / "out")
    assert_clean_failure(result, DATA, r"utterance id 'bert/bert_1' is also the id of", corpus.victim)

    listing = place / "list.csv"
    listing.write_text("path,id,speaker\nanna/anna_0.wav,x,anna\nbert/bert_0.wav,x,bert\n")
    result = prepare("folder", corpus.root, place / "out", "--file-list", str(listing))
    assert_clean_failure(result, DATA, r"utterance id 'x' is also the id of", corpus.root / "anna" / "anna_0.wav")

    libri = make_librispeech(place / "libri")
    write_audio(libri.root / "26" / "999" / "26-495-0001.flac", tone(4000))  # same id in another folder
    result = prepare("librispeech", libri.root, place / "out")
    assert_clean_failure(result, DATA, r"utterance id '26-495-0001' is also the id of", libri.victim)
    assert_no_complete_dataset(place / "out")


def test_file_list_problems(place: Path):
    corpus = make_folder(place / "corpus")
    listing = place / "list.csv"
    listing.write_text("path\nanna/anna_0.wav\nnobody/nothing.wav\n")
    out = place / "partial"
    assert prepare("folder", corpus.root, out, "--file-list", str(listing)).exit_code == 0
    assert json.loads((out / "report.json").read_text())["listed_without_audio"] == ["nobody/nothing.wav"]
    listing.write_text("path\nnobody/nothing.wav\n")
    result = prepare("folder", corpus.root, place / "none", "--file-list", str(listing))
    assert_clean_failure(result, DATA, r"no usable utterances .*listed_without_audio: 1")
    listing.write_bytes(b"path,id\nanna/anna_0.wav,\xff\n")
    result = prepare("folder", corpus.root, place / "bytes", "--file-list", str(listing))
    assert_clean_failure(result, DATA, r"cannot read file list", listing)
    listing.write_text("file\nanna/anna_0.wav\n")
    result = prepare("folder", corpus.root, place / "header", "--file-list", str(listing))
    assert_clean_failure(result, DATA, r"needs a header row with a 'path' column", listing)


# ---- time series -------------------------------------------------------------------------------------------


def test_uea_bad_files(place: Path):
    pytest.importorskip("aeon.datasets")
    good = make_uea(place / "good")
    assert prepare("uea", good, place / "ok").exit_code == 0
    bad = place / "garbage"
    bad.mkdir()
    (bad / "Tiny_TRAIN.ts").write_text("no header, no data\n")
    (bad / "Tiny_TEST.ts").write_text("no header, no data\n")
    assert_clean_failure(prepare("uea", bad, place / "out"), DATA, r"no series found|cannot read \.ts file")
    nan = place / "nan"
    write_ts(nan / "Tiny_TRAIN.ts", ["1,2,3,4:a", "1,NaN,3,4:b"])
    write_ts(nan / "Tiny_TEST.ts", ["1,2,3,4:a", "1,2,3,4:b"])
    assert_clean_failure(prepare("uea", nan, place / "out"), DATA, r"train-00001: missing \(NaN\) or infinite values")
    binary = place / "binary"
    binary.mkdir()
    (binary / "Tiny_TRAIN.ts").write_bytes(b"\xff\xfe\x00\x01")
    (binary / "Tiny_TEST.ts").write_bytes(b"")
    assert_clean_failure(prepare("uea", binary, place / "out"), DATA, r"cannot read \.ts file", binary / "Tiny_TRAIN.ts")
    assert_clean_failure(prepare("uea", "NoSuchSet", place / "out"), DATA, r"'NoSuchSet' is neither a \.ts file")
    assert_no_complete_dataset(place / "out")


# ---- output directories, all kinds share the code; folder, uea and synthetic shown ----------------------------


def test_existing_output_is_refused_unless_overwrite(place: Path):
    corpus = make_folder(place / "corpus")
    out = place / "out"
    assert prepare("folder", corpus.root, out).exit_code == 0
    before = (out / "signal.bin").read_bytes()
    for kind, src in (("folder", corpus.root), ("synthetic", None)):
        arguments = [str(out)] if src is None else [str(src), str(out)]
        result = runner.invoke(app, ["prepare", kind, *arguments, "-q"])
        assert_clean_failure(result, USAGE, r"is not empty; pass --overwrite", out)
    assert (out / "signal.bin").read_bytes() == before and PreparedDataset.open(out)
    (corpus.victim).unlink()
    assert prepare("folder", corpus.root, out, "--overwrite").exit_code == 0
    assert len(PreparedDataset.open(out)) == 3

    (out / "notes.txt").write_text("mine")  # not a dataset file: never deleted, even with --overwrite
    result = prepare("folder", corpus.root, out, "--overwrite")
    assert_clean_failure(result, USAGE, r"holds 'notes.txt', which is not part of a prepared dataset", out)
    assert (out / "notes.txt").read_text() == "mine"


def test_output_below_a_file_or_a_file(place: Path):
    corpus = make_folder(place / "corpus")
    blocker = place / "a file"
    blocker.write_text("x")
    result = prepare("folder", corpus.root, blocker / "out")
    assert_clean_failure(result, USAGE, r"is a file, not a folder; choose another path", blocker)
    result = prepare("folder", corpus.root, blocker)
    assert_clean_failure(result, USAGE, r"exists and is not a directory|is a file", blocker)
    result = runner.invoke(app, ["prepare", "synthetic", str(blocker / "x" / "y"), "-q"])
    assert_clean_failure(result, USAGE, r"is a file, not a folder", blocker)
    assert blocker.read_text() == "x"


def test_missing_output_parents_are_created(place: Path):
    corpus = make_folder(place / "corpus")
    out = place / "not" / "yet" / "there"
    assert prepare("folder", corpus.root, out).exit_code == 0
    assert len(PreparedDataset.open(out)) == 4


def test_read_only_output_directory(place: Path):
    """Root writes through permission bits, so the folder is made immutable (chattr +i); skipped where
    that is unavailable. A non-root user hits the same check with ordinary permissions."""
    corpus = make_folder(place / "corpus")
    with read_only_folder(place / "locked") as locked:
        result = prepare("folder", corpus.root, locked / "out")
        assert_clean_failure(result, USAGE, r"is read-only; choose a writable path", locked)


def test_rerun_after_an_interrupted_prepare_needs_no_overwrite(place: Path):
    """What a kill leaves (temporary files, no meta.json) is replaced by the next run."""
    corpus = make_folder(place / "corpus")
    out = place / "out"
    out.mkdir()
    (out / ".signal.bin.partial").write_bytes(b"\x00" * 100)
    (out / ".utterances.tsv.partial").write_text("id\n")
    assert_no_complete_dataset(out)
    result = prepare("folder", corpus.root, out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "report.json", "signal.bin", "utterances.tsv"]


def test_bad_prepare_options(place: Path):
    corpus = make_folder(place / "corpus")
    cases = [
        (["--limit", "0"], r"limit must be a positive number"),
        (["--workers", "-2"], r"workers must be >= 0"),
        (["--sample-rate", "-16000"], r"sample"),
        (["--on-error", "ignore"], r"on_error 'ignore' is not one of fail, skip"),
        (["--test-fraction", "1.5"], r"test fraction must be in \[0, 1\)"),
    ]
    for options, message in cases:
        result = prepare("folder", corpus.root, place / "out", *options)
        assert_clean_failure(result, USAGE, message)
    for options, message in ((["--minutes", "-1"], r"minutes must be a number > 0, got -1"),
                             (["--num-speakers", "0"], r"num_speakers must be an integer >= 1, got 0")):
        result = runner.invoke(app, ["prepare", "synthetic", str(place / "out"), "-q", *options])
        assert_clean_failure(result, USAGE, message)
    assert_no_complete_dataset(place / "out")


# ---- round 2 (issue 15): one writer per folder, silent fallbacks, BOMs, logs --------------------------------

_HOLD = """import os, sys, time
from cpcaudio.data import prepare
def hold(event):  # after the first utterance is written, wait for the gate
    while event.done == 1 and not os.path.exists(sys.argv[3]):
        open(sys.argv[3] + ".ready", "w").close()
        time.sleep(0.05)
prepare("folder", sys.argv[1], sys.argv[2], workers=1, progress=hold)
"""


def test_second_prepare_into_the_folder_of_a_running_one_is_refused(place: Path):
    """Two real processes: the second (with or without --overwrite) gets one line naming the folder and
    the first one's pid, and deletes nothing; the first then finishes normally."""
    corpus, out, gate = make_folder(place / "corpus"), place / "out", place / "gate"
    first = subprocess.Popen([sys.executable, "-c", _HOLD, str(corpus.root), str(out), str(gate)], stderr=subprocess.PIPE)
    try:
        while not Path(f"{gate}.ready").exists():
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        assert {".signal.bin.partial", ".lock"} <= set(during := sorted(os.listdir(out))), during
        for extra in ([], ["--overwrite"]):
            second = subprocess.run([sys.executable, "-m", "cpcaudio.cli.main", "prepare", "folder", str(corpus.root),
                                     str(out), "-q", "--workers", "1", *extra], capture_output=True, text=True, timeout=120)
            errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
            assert second.returncode == USAGE and len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
            assert str(out) in errors[0] and f"being written by another prepare (pid {first.pid})" in errors[0]
            assert sorted(os.listdir(out)) == during
        gate.write_text("go")
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    assert len(PreparedDataset.open(out)) == 4 and not (out / ".lock").exists()
    (out / ".lock").write_text("12345\n")  # what a killed prepare leaves: its own file, not foreign content
    assert prepare("folder", corpus.root, out, "--overwrite").exit_code == 0 and not (out / ".lock").exists()


def _round2_case(name: str, place: Path) -> tuple[object, list[str], int, str, list[Path]]:
    """(corpus, options, exit code, message, files named) of one refused input."""
    corpus = (make_textgrid if name in ("phone-set-missing", "negative-start") else make_folder)(place / "corpus")
    if name == "empty-speaker-cell":
        listing = place / "list.csv"
        listing.write_text("path,speaker\nanna/anna_0.wav,anna\nbert/bert_0.wav,\n")
        return corpus, ["--file-list", str(listing)], DATA, r"list.csv:3: the speaker cell of bert/bert_0.wav is empty; fill it in", [listing]
    if name == "phone-set-missing":
        return corpus, ["--phone-set", str(place / "phones.txt")], DATA, r"phone set file .* does not exist; give a file", [place / "phones.txt"]
    if name == "negative-start":
        corpus.label_file.write_text("-0.05 0.05 sil\n0.05 0.2 aa\n0.2 0.25 sil\n")
        return corpus, [], DATA, r":1: segment starts at -0.05, before the audio begins", [corpus.label_file]
    if name == "dangling-link":
        link = corpus.root / "bert" / "gone.wav"
        link.symlink_to(place / "moved away.wav")
        return corpus, [], DATA, r"broken symbolic link \(its target .* does not exist\); fix or remove the link", [link]
    if name == "beyond-full-scale-fail":
        corpus.victim.unlink()
        write_audio(corpus.victim, 8 * tone(4000), subtype="FLOAT")  # peak 1.24
        return corpus, ["--clipping", "fail"], DATA, r"% of its samples \(\d+ of 4000\) beyond full scale \(peak 1\.2", [corpus.victim]
    return corpus, ["--clipping", "loud"], USAGE, r"clipping 'loud' is not one of clip, scale, fail", []


@pytest.mark.parametrize("name", ["empty-speaker-cell", "phone-set-missing", "negative-start", "dangling-link",
                                  "beyond-full-scale-fail", "bad-clipping-option"])
def test_round2_refusals(name: str, place: Path):
    corpus, options, code, message, names = _round2_case(name, place)
    assert_clean_failure(prepare(corpus.kind, corpus.root, place / "out", *options), code, message, *names)
    assert_no_complete_dataset(place / "out")
    if name in ("dangling-link", "beyond-full-scale-fail"):  # per-file problems: --on-error skip reports them
        assert prepare(corpus.kind, corpus.root, place / "out", *options, "--on-error", "skip").exit_code == 0
        skipped = json.loads((place / "out" / "report.json").read_text())["skipped"]
        assert [entry["file"] for entry in skipped] == [str(names[0])]


def test_a_log_has_no_carriage_returns_and_grep_finds_the_error(place: Path):
    """stderr to a file (not a terminal): plain progress lines, then the error line at a line start."""
    corpus = make_folder(place / "corpus")
    corpus.victim.write_bytes(b"")
    command = [sys.executable, "-m", "cpcaudio.cli.main", "prepare", "folder", str(corpus.root), str(place / "out"), "--workers", "1"]
    with open(place / "log", "wb") as log:
        assert subprocess.run(command, stderr=log, stdout=log, timeout=120).returncode == DATA
    text = (place / "log").read_bytes()
    assert b"\r" not in text and text.count(b"\nerror: ") + text.startswith(b"error: ") == 1, text
    grep = subprocess.run(["grep", "^error:", str(place / "log")], capture_output=True, text=True)
    assert grep.returncode == 0 and "empty file (0 bytes)" in grep.stdout and grep.stdout.count("\n") == 1
