"""``prepare`` on tiny generated corpora: every bad-input error, skip reports, atomicity, kinds' options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cpcaudio.data import PreparedDataset, prepare
from cpcaudio.data.format import META_FILE
from cpcaudio.errors import DataError, UsageError

RATE = 16000


def _tone(seconds: float, frequency: float = 220.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * frequency * t)
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


def _write(path: Path, samples: np.ndarray, rate: int = RATE, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, rate, subtype=subtype)
    return path


def _phn(path: Path, segments: list[tuple[float, float, str]]) -> None:
    path.write_text("".join(f"{a:.4f} {b:.4f} {p}\n" for a, b, p in segments))


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Two speakers with three 0.5 s utterances each, with ``.phn`` labels in seconds."""
    root = tmp_path / "corpus"
    for speaker, frequency in (("anna", 200.0), ("bert", 300.0)):
        for number in range(3):
            wav = _write(root / speaker / f"{speaker}_{number}.wav", _tone(0.5, frequency + 10 * number))
            _phn(wav.with_suffix(".phn"), [(0.0, 0.1, "sil"), (0.1, 0.4, "aa"), (0.4, 0.5, "sil")])
    return root


def _one_bad_file(corpus: Path, problem: str) -> tuple[Path, str]:
    """Damage one file of the corpus; return it and the message expected."""
    wav = corpus / "bert" / "bert_1.wav"
    if problem == "corrupt":
        wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage" + bytes(100))
        return wav, "cannot read audio"
    if problem == "empty":
        wav.write_bytes(b"")
        return wav, r"empty file \(0 bytes\)"
    if problem == "nan":
        samples = _tone(0.5)
        samples[100] = np.nan
        _write(wav, samples, subtype="FLOAT")
        return wav, "NaN or infinite"
    if problem == "rate":
        _write(wav, _tone(0.5, rate=8000), rate=8000)
        return wav, r"sample rate 8000 Hz differs from the dataset's 16000 Hz.*--sample-rate 16000"
    if problem == "labels-long":
        _phn(wav.with_suffix(".phn"), [(0.0, 0.3, "sil"), (0.3, 0.56, "aa")])
        return wav.with_suffix(".phn"), r"labels end at 0.560 s but the audio lasts 0.500 s"
    if problem == "labels-short":
        _phn(wav.with_suffix(".phn"), [(0.0, 0.3, "sil"), (0.3, 0.45, "aa")])
        return wav.with_suffix(".phn"), r"labels end at 0.450 s but the audio lasts 0.500 s"
    if problem == "symbol":
        _phn(wav.with_suffix(".phn"), [(0.0, 0.3, "sil"), (0.3, 0.5, "xx")])
        return wav.with_suffix(".phn"), r"phone symbol 'xx' \(segment 2\) is not in the phone set"
    if problem == "malformed":
        wav.with_suffix(".phn").write_text("0.0 0.3 sil\n0.3 oops aa\n")
        return wav.with_suffix(".phn"), r":2: start and end must be numbers"
    raise AssertionError(problem)


PROBLEMS = ["corrupt", "empty", "nan", "rate", "labels-long", "labels-short", "symbol", "malformed"]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_input_fails_with_one_line_naming_the_file(corpus, tmp_path, problem):
    bad, message = _one_bad_file(corpus, problem)
    out = tmp_path / "out"
    with pytest.raises(DataError) as error:
        prepare("textgrid", corpus, out, phone_set="sil,aa", workers=1)
    text = str(error.value)
    assert "\n" not in text and str(bad) in text
    assert __import__("re").search(message, text), text
    assert not out.exists()  # fail leaves nothing behind, certainly nothing that opens as a dataset


@pytest.mark.parametrize("problem", ["corrupt", "nan", "labels-long", "symbol"])
def test_skip_records_bad_files_in_the_report(corpus, tmp_path, problem):
    bad, message = _one_bad_file(corpus, problem)
    result = prepare("textgrid", corpus, tmp_path / "out", phone_set="sil,aa", on_error="skip", workers=2)
    dataset = PreparedDataset.open(result.path)
    assert len(dataset) == 5 and "bert/bert_1" not in dataset.utterance_ids
    report = json.loads((result.path / "report.json").read_text())
    assert len(report["skipped"]) == 1 and str(bad) in report["skipped"][0]["problem"]
    assert dataset.meta["counts"]["skipped"] == 1


def test_labels_within_tolerance_are_accepted(corpus, tmp_path):
    wav = corpus / "anna" / "anna_0.wav"
    _phn(wav.with_suffix(".phn"), [(0.0, 0.1, "sil"), (0.1, 0.485, "aa")])  # 15 ms short: within 20 ms
    result = prepare("textgrid", corpus, tmp_path / "out", workers=1)
    dataset = PreparedDataset.open(result.path)
    labels = dataset.frame_labels(dataset.utterance_ids.index("anna/anna_0"))
    assert labels.shape == (50,) and labels[-1] == -1 and labels[-3] == dataset.phone_vocabulary.index("aa")


def test_failure_in_existing_empty_directory_leaves_no_meta(corpus, tmp_path):
    _one_bad_file(corpus, "corrupt")
    out = tmp_path / "existing"
    out.mkdir()
    with pytest.raises(DataError):
        prepare("textgrid", corpus, out, workers=1)
    assert out.is_dir() and not (out / META_FILE).exists()
    assert list(out.iterdir()) == []


def test_rate_mismatch_is_resampled_when_asked(corpus, tmp_path):
    _one_bad_file(corpus, "rate")
    result = prepare("textgrid", corpus, tmp_path / "out", sample_rate=RATE, workers=1)
    dataset = PreparedDataset.open(result.path)
    assert len(dataset) == 6 and dataset.lengths[dataset.utterance_ids.index("bert/bert_1")] == RATE // 2


def test_written_samples_and_labels(corpus, tmp_path):
    result = prepare("textgrid", corpus, tmp_path / "out", workers=1)
    dataset = PreparedDataset.open(result.path)
    assert dataset.phone_vocabulary == ["aa", "sil"]  # open set, stored sorted
    for index, utterance_id in enumerate(dataset.utterance_ids):
        source, _ = soundfile.read(str(corpus / f"{utterance_id}.wav"), dtype="int16")
        np.testing.assert_array_equal(dataset.read_raw(index)[:, 0], source)
        np.testing.assert_allclose(dataset.signal(index)[0], source / 32768.0)
        expected = np.array([1] * 10 + [0] * 30 + [1] * 10)  # sil 0-0.1 s, aa 0.1-0.4 s, sil
        np.testing.assert_array_equal(dataset.frame_labels(index), expected)
    window = dataset.read(3, start=100, length=50)
    np.testing.assert_array_equal(window, dataset.signal(3)[:, 100:150])
    assert dataset.splits.count("test") == 2  # round(0.2 * 3) = 1 per speaker


def test_output_directory_rules(corpus, tmp_path):
    out = tmp_path / "out"
    prepare("textgrid", corpus, out, workers=1)
    with pytest.raises(UsageError, match="not empty; pass --overwrite"):
        prepare("textgrid", corpus, out, workers=1)
    result = prepare("textgrid", corpus, out, workers=1, overwrite=True, limit=2)
    assert len(PreparedDataset.open(result.path)) == 2
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="notes.txt"):
        prepare("textgrid", corpus, out, workers=1, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / META_FILE).exists()
    with pytest.raises(UsageError, match="inside the source corpus"):
        prepare("textgrid", corpus, corpus / "prepared", workers=1)
    assert not (corpus / "prepared").exists()


def test_unknown_kind_and_option(corpus, tmp_path):
    with pytest.raises(UsageError, match="unknown source kind 'wav'"):
        prepare("wav", corpus, tmp_path / "a")
    with pytest.raises(UsageError, match="'fold_39' does not apply to the folder kind"):
        prepare("folder", corpus, tmp_path / "a", fold_39=True)
    with pytest.raises(UsageError, match="on_error"):
        prepare("folder", corpus, tmp_path / "a", on_error="ignore")


def test_truncated_dataset_is_refused(corpus, tmp_path):
    result = prepare("textgrid", corpus, tmp_path / "out", workers=1)
    signal = result.path / "signal.bin"
    signal.write_bytes(signal.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        PreparedDataset.open(result.path)
    (result.path / META_FILE).unlink()
    with pytest.raises(DataError, match="not a prepared dataset"):
        PreparedDataset.open(result.path)


def test_folder_kind_channels_file_list_and_speaker_pattern(tmp_path):
    root = tmp_path / "stereo"
    for name in ("a_spk1_0", "b_spk1_1", "c_spk2_0"):
        _write(root / f"{name}.flac", _tone(0.25, channels=2))
    result = prepare("folder", root, tmp_path / "kept", mono=False, speaker_pattern=r"_(?P<speaker>spk\d)_", workers=1)
    dataset = PreparedDataset.open(result.path)
    assert dataset.num_channels == 2 and dataset.speaker_vocabulary == ["spk1", "spk2"]
    signal = dataset.signal(0)
    np.testing.assert_allclose(signal[1], 2 * signal[0], atol=2 / 32768)  # channel 2 is twice channel 1
    mono = PreparedDataset.open(prepare("folder", root, tmp_path / "mono", workers=1).path)
    np.testing.assert_allclose(mono.signal(0)[0], signal.mean(axis=0), atol=1 / 32768)
    (root / "list.csv").write_text(
        "path,speaker,split,mood\na_spk1_0.flac,x,train,happy\nc_spk2_0.flac,y,test,sad\ngone.wav,z,train,sad\n"
    )
    result = prepare("folder", root, tmp_path / "listed", file_list=root / "list.csv", workers=1)
    dataset = PreparedDataset.open(result.path)
    assert dataset.utterance_ids == ["a_spk1_0", "c_spk2_0"] and dataset.speakers == ["x", "y"]
    assert dataset.splits == ["train", "test"] and dataset.vocabularies["mood"] == ["happy", "sad"]
    assert dataset.utterance_label(1, "mood") == 1
    assert result.unmatched["listed_without_audio"] == ["gone.wav"]


def test_textgrid_files_from_praat(corpus, tmp_path):
    from praatio import textgrid

    for wav in corpus.rglob("*.wav"):
        wav.with_suffix(".phn").unlink()
        grid = textgrid.Textgrid()
        tier = textgrid.IntervalTier("phones", [(0.1, 0.4, "AA1")], 0.0, 0.5)
        grid.addTier(tier)
        grid.save(str(wav.with_suffix(".TextGrid")), format="short_textgrid", includeBlankSpaces=True)
    result = prepare("textgrid", corpus, tmp_path / "out", workers=1)
    dataset = PreparedDataset.open(result.path)
    assert dataset.phone_vocabulary == ["AA1", "sil"]  # empty intervals become "sil"
    np.testing.assert_array_equal(dataset.frame_labels(0), [1] * 10 + [0] * 30 + [1] * 10)


def test_timit_layout_unknown_symbol_and_full_corpus_split(tmp_path):
    root = tmp_path / "TIMIT"
    for split, speaker in (("TRAIN", "FABC0"), ("TEST", "MDEF0")):
        wav = _write(root / split / "DR1" / speaker / "SA1.WAV", _tone(0.2))
        wav.with_name("SA1.PHN").write_text("0 800 h#\n800 2400 aa\n2400 3200 h#\n")
    result = prepare("timit", root, tmp_path / "full", workers=1)
    dataset = PreparedDataset.open(result.path)
    assert sorted(dataset.utterance_ids) == ["fabc0_sa1", "mdef0_sa1"]
    assert dict(zip(dataset.speakers, dataset.splits)) == {"fabc0": "train", "mdef0": "test"}
    assert dataset.meta["source"]["options"]["split"] == "official"
    (root / "TEST" / "DR1" / "MDEF0" / "SA1.PHN").write_text("0 800 h#\n800 3200 xx\n")
    with pytest.raises(DataError, match=r"SA1\.PHN: unknown phone symbol 'xx'"):
        prepare("timit", root, tmp_path / "bad", workers=1)


def test_synthetic_kind_prepares_the_generated_corpus(tmp_path, monkeypatch):
    import cpcaudio.data.synthetic as synthetic

    calls = {}

    def fake_generate(out_dir, *, num_speakers, minutes, seed, sample_rate):
        calls.update(num_speakers=num_speakers, minutes=minutes, seed=seed, sample_rate=sample_rate)
        for s in range(num_speakers):
            for u in range(3):
                wav = _write(Path(out_dir) / f"spk{s:02d}" / f"spk{s:02d}_{u:04d}.wav", _tone(0.3, 150 + 50 * s))
                _phn(wav.with_suffix(".phn"), [(0.0, 0.1, "sil"), (0.1, 0.3, "iy")])
        return Path(out_dir)

    monkeypatch.setattr(synthetic, "generate_corpus", fake_generate)
    result = prepare("synthetic", None, tmp_path / "syn", num_speakers=3, minutes=0.1, seed=4, workers=1)
    assert calls == {"num_speakers": 3, "minutes": 0.1, "seed": 4, "sample_rate": 16000}
    dataset = PreparedDataset.open(result.path)
    assert len(dataset) == 9 and len(dataset.speaker_vocabulary) == 3
    for speaker in dataset.speaker_vocabulary:  # every speaker has a held-out utterance
        assert {s for sp, s in zip(dataset.speakers, dataset.splits) if sp == speaker} == {"train", "test"}
    assert sorted(p.name for p in result.path.iterdir()) == [
        "frame_labels.bin", "meta.json", "report.json", "signal.bin", "utterances.tsv"
    ]  # the generated source audio is gone


def test_synthetic_kind_end_to_end(tmp_path):
    result = prepare("synthetic", None, tmp_path / "syn", num_speakers=2, minutes=0.2, seed=0)
    dataset = PreparedDataset.open(result.path)
    assert len(dataset.speaker_vocabulary) == 2 and dataset.sample_rate == 16000
    assert set(dataset.splits) == {"train", "test"}
    silence, speech = [], []
    for index in range(len(dataset)):
        labels = dataset.frame_labels(index)
        assert labels.size == -(-dataset.lengths[index] // 160) and (labels >= 0).all()
        mono = dataset.signal(index)[0]
        energy = np.array([np.mean(mono[j * 160 : (j + 1) * 160] ** 2) for j in range(labels.size)])
        is_silence = labels == dataset.phone_vocabulary.index("sil")
        silence.append(energy[is_silence])
        speech.append(energy[~is_silence])
    assert np.median(np.concatenate(silence)) < 0.1 * np.median(np.concatenate(speech))
