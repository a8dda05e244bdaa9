"""``prepare`` in blocks (issue 15): the same samples as the whole-file path, memory that does not grow
with file length, samples beyond full scale reported or scaled, symlinked folders followed, BOMs read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from badfiles import make_folder, make_librispeech, make_textgrid, tone, write_audio
from cpcaudio.cli.main import app
from cpcaudio.data import PreparedDataset, prepare
from cpcaudio.data import stream
from cpcaudio.data.audio import convert_signal, read_audio, to_int16
from cpcaudio.data.format import DatasetWriter

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _cli(kind: str, src: Path, out: Path, *options: str):
    return runner.invoke(app, ["prepare", kind, str(src), str(out), "--workers", "1", *options])


def _whole_file(path: Path, rate=None, mono=True) -> np.ndarray:
    """What the whole-file path (read everything, convert, quantise) stores for ``path``."""
    samples, source_rate = read_audio(path)
    return to_int16(convert_signal(samples, source_rate, rate, mono, path))


def _signals(dataset: PreparedDataset) -> dict[str, np.ndarray]:
    return {name: dataset.read_raw(i) for i, name in enumerate(dataset.utterance_ids)}


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 1000 frames and spooling beyond 8 KiB, so that a 2-second file takes every path."""
    monkeypatch.setattr(stream, "BLOCK_FRAMES", 1000)
    monkeypatch.setattr(stream, "SPOOL_BYTES", 8192)


def _corpus(root: Path, rate: int) -> Path:
    noise = np.random.default_rng(1)
    write_audio(root / "a" / "pcm.wav", tone(2 * rate + 17, rate), rate)
    stereo = (0.4 * noise.standard_normal((2 * rate + 5, 2))).astype(np.float32)
    write_audio(root / "a" / "float stereo.wav", stereo, rate, subtype="FLOAT")
    write_audio(root / "b" / "short.flac", tone(3000, rate), rate)
    return root


@pytest.mark.parametrize("workers", [1, 2])
def test_blocks_give_the_whole_file_samples_byte_for_byte(workers: int, small_blocks, monkeypatch, tmp_path: Path):
    corpus = _corpus(tmp_path / "corpus", 16000)
    spooled = []
    append = DatasetWriter._append_spooled
    monkeypatch.setattr(DatasetWriter, "_append_spooled", lambda self, *a: (spooled.append(a[0]), append(self, *a)))
    result = prepare("folder", corpus, tmp_path / "out", workers=workers)
    assert len(spooled) == 2  # the two long files went through spool files, the short one did not
    stored = _signals(PreparedDataset.open(result.path))
    for name, samples in stored.items():
        path = next(corpus.glob(f"{name}.*"))
        assert samples.tobytes() == _whole_file(path).tobytes(), name
    assert sorted(p.name for p in result.path.iterdir()) == ["meta.json", "report.json", "signal.bin", "utterances.tsv"]


def test_resampling_in_blocks_matches_the_whole_file_within_tolerance(small_blocks, tmp_path: Path):
    corpus = _corpus(tmp_path / "corpus", 44100)
    result = prepare("folder", corpus, tmp_path / "out", sample_rate=16000, workers=1)
    for name, samples in _signals(PreparedDataset.open(result.path)).items():
        reference = _whole_file(next(corpus.glob(f"{name}.*")), 16000)
        assert samples.shape == reference.shape, name
        assert np.abs(samples.astype(np.int32) - reference).max() <= 1, name  # soxr's stream: identical here


def test_keep_channels_in_blocks(small_blocks, tmp_path: Path):
    root = tmp_path / "corpus"
    noise = np.random.default_rng(2)
    for name in ("x", "y"):
        write_audio(root / "s" / f"{name}.wav", (0.3 * noise.standard_normal((5000, 2))).astype(np.float32))
    result = prepare("folder", root, tmp_path / "out", mono=False, workers=1)
    for name, samples in _signals(PreparedDataset.open(result.path)).items():
        assert samples.tobytes() == _whole_file(root / f"{name}.wav", mono=False).tobytes()


# ---- samples beyond full scale -------------------------------------------------------------------------


def _loud_corpus(root: Path) -> tuple[Path, np.ndarray]:
    corpus = make_folder(root)
    loud = 8 * tone(4000)  # peak 1.24: a float WAV above full scale
    corpus.victim.unlink()
    write_audio(corpus.victim, loud, subtype="FLOAT")
    return corpus, loud[:, 0]


def test_beyond_full_scale_is_clipped_and_reported(tmp_path: Path):
    corpus, loud = _loud_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    result = _cli("folder", corpus.root, out, "-q")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    beyond = int(np.count_nonzero(np.abs(loud) > 1.0))
    assert len(warnings) == 1 and str(corpus.victim) in warnings[0], result.output
    assert f"{100 * beyond / 4000:.3g}% of its samples" in warnings[0] and "--clipping scale" in warnings[0]
    entry = json.loads((out / "report.json").read_text())["clipped"]
    assert entry == [{"file": str(corpus.victim), "samples_beyond_full_scale": beyond, "samples": 4000,
                      "fraction": round(beyond / 4000, 6), "peak": pytest.approx(float(np.abs(loud).max()), abs=1e-6),
                      "action": "clipped"}]
    dataset = PreparedDataset.open(out)
    assert dataset.meta["counts"]["clipped"] == 1 and dataset.meta["preparation"]["clipping"] == "clip"
    stored = dataset.read_raw(dataset.utterance_ids.index("bert/bert_1"))[:, 0]
    np.testing.assert_array_equal(stored, np.clip(np.rint(loud * 32768), -32768, 32767))


def test_beyond_full_scale_is_scaled_down_when_asked(tmp_path: Path):
    corpus, loud = _loud_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    result = _cli("folder", corpus.root, out, "--clipping", "scale")
    assert result.exit_code == 0, result.output
    assert "beyond full scale: 1 file(s)" in result.output and "scaled down" in result.output
    [entry] = json.loads((out / "report.json").read_text())["clipped"]
    gain = (32767 / 32768) / float(np.abs(loud).max())
    assert entry["action"] == f"scaled by {gain:.6g}"
    dataset = PreparedDataset.open(out)
    stored = dataset.read_raw(dataset.utterance_ids.index("bert/bert_1"))[:, 0]
    assert int(np.abs(stored.astype(np.int32)).max()) == 32767  # the peak just at full scale, nothing clipped
    np.testing.assert_allclose(stored / 32768, loud * gain, atol=1 / 32768)
    others = dataset.read_raw(dataset.utterance_ids.index("anna/anna_0"))  # files within full scale: untouched
    assert others.tobytes() == _whole_file(corpus.root / "anna" / "anna_0.wav").tobytes()


def test_no_warning_when_nothing_is_beyond_full_scale(tmp_path: Path):
    corpus = make_folder(tmp_path / "corpus")
    result = _cli("folder", corpus.root, tmp_path / "out")
    assert result.exit_code == 0 and not [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert "full scale" not in result.output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["clipped"] == []


# ---- symbolic links -------------------------------------------------------------------------------------


def test_symlinked_speaker_folders_are_followed_once(tmp_path: Path):
    corpus = make_folder(tmp_path / "corpus")
    elsewhere = make_folder(tmp_path / "elsewhere")
    (corpus.root / "carl").symlink_to(elsewhere.root / "anna", target_is_directory=True)
    (corpus.root / "anna" / "loop").symlink_to(corpus.root, target_is_directory=True)  # a link back up
    (corpus.root / "zed").symlink_to(corpus.root / "bert", target_is_directory=True)  # bert, reached twice
    (corpus.root / "anna" / "take.wav").symlink_to(elsewhere.root / "bert" / "bert_0.wav")  # a file link
    dataset = PreparedDataset.open(prepare("folder", corpus.root, tmp_path / "out", workers=1).path)
    assert dataset.utterance_ids == [
        "anna/anna_0", "anna/anna_1", "anna/take", "bert/bert_0", "bert/bert_1", "carl/anna_0", "carl/anna_1"
    ]
    assert dataset.speaker_vocabulary == ["anna", "bert", "carl"]


def test_broken_links_are_listed_with_skip(tmp_path: Path):
    corpus = make_folder(tmp_path / "corpus")
    (corpus.root / "dora").symlink_to(tmp_path / "unmounted disk", target_is_directory=True)
    (corpus.root / "notes.txt").symlink_to(tmp_path / "nowhere.txt")  # not audio: not a corpus file
    result = _cli("folder", corpus.root, tmp_path / "out", "--on-error", "skip")
    assert result.exit_code == 0, result.output
    assert "skipped: 1 file(s)" in result.output and "broken symbolic link" in result.output
    skipped = json.loads((tmp_path / "out" / "report.json").read_text())["skipped"]
    assert [entry["file"] for entry in skipped] == [str(corpus.root / "dora")]


# ---- byte-order marks ----------------------------------------------------------------------------------------


def test_byte_order_marks_are_accepted(tmp_path: Path):
    """Excel's CSV UTF-8 and Windows editors start text files with a BOM: file lists, .phn files, split
    lists, frame label files and phone sets read the same with and without one."""
    place = tmp_path
    folder = make_folder(place / "folder")
    listing = place / "list.csv"
    listing.write_bytes(b"\xef\xbb\xbfpath,speaker\nanna/anna_0.wav,anna\nbert/bert_0.wav,bert\n")
    assert _cli("folder", folder.root, place / "a", "--file-list", str(listing)).exit_code == 0
    assert PreparedDataset.open(place / "a").speakers == ["anna", "bert"]
    textgrid = make_textgrid(place / "textgrid")
    textgrid.label_file.write_bytes(b"\xef\xbb\xbf" + textgrid.label_file.read_bytes())
    (place / "phones.txt").write_bytes(b"\xef\xbb\xbfsil\naa\n")
    assert _cli("textgrid", textgrid.root, place / "b", "--phone-set", str(place / "phones.txt")).exit_code == 0
    assert PreparedDataset.open(place / "b").phone_vocabulary == ["aa", "sil"]
    libri = make_librispeech(place / "libri")
    libri.label_file.write_bytes(b"\xef\xbb\xbf" + libri.label_file.read_bytes())
    (libri.root / "test_split.txt").write_bytes(b"\xef\xbb\xbf26-495-0001\n")
    assert _cli("librispeech", libri.root, place / "c").exit_code == 0
    assert PreparedDataset.open(place / "c").splits.count("test") == 1


# ---- the memory benchmark, at tiny size ------------------------------------------------------------------------


def test_memory_benchmark_tiny(tmp_path: Path):
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "prepare_memory.py"), "--tiny", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    record = json.loads(completed.stdout.strip().splitlines()[-1])
    assert record["benchmark"] == "prepare_memory" and [f["seconds_of_audio"] for f in record["files"]] == [10.0, 60.0]
    assert all(f["under_target"] and f["peak_rss_mb"] > 0 for f in record["files"]), record
    assert not os.listdir(tmp_path)
