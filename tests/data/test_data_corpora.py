"""Preparing the real corpora of ../shared/data: counts, durations, speakers, splits, labels vs audio."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile

from helpers import shared_data

from cpcaudio.data import PreparedDataset, prepare
from cpcaudio.data.phones import TIMIT_61_TO_39
from cpcaudio.errors import DataError

VOWELS = {"aa", "ae", "ah", "ao", "aw", "ay", "eh", "ey", "iy", "ow", "oy", "uw", "ih", "er"}


def _corpus(name: str) -> Path:
    return shared_data(name)


def _frame_energy(signal: np.ndarray, hop: int) -> np.ndarray:
    """Mean square of each label frame of a (channels, time) signal. Returns (frames,)."""
    mono = signal.mean(axis=0)
    count = -(-mono.size // hop)
    padded = np.zeros(count * hop, dtype=np.float64)
    padded[: mono.size] = mono
    return (padded.reshape(count, hop) ** 2).mean(axis=1)


def _reference_labels(phn: Path, num_samples: int, units_per_second: int) -> list:
    """The phone covering the centre of every 10 ms frame (16 kHz), by a plain loop in exact arithmetic."""
    segments = [line.split() for line in phn.read_text().splitlines() if line.strip()]
    segments = [(Fraction(a) / units_per_second, Fraction(b) / units_per_second, p) for a, b, p in segments]
    out = []
    for j in range(-(-num_samples // 160)):
        center = Fraction(j * 160 + min((j + 1) * 160, num_samples), 2 * 16000)  # seconds
        out.append(next((p for a, b, p in segments if a <= center < b), None))
    return out


@pytest.fixture(scope="module")
def timit(tmp_path_factory) -> tuple[PreparedDataset, object]:
    source = _corpus("timit_sample")
    result = prepare("timit", source, tmp_path_factory.mktemp("timit") / "ds", workers=2, on_error="skip")
    return PreparedDataset.open(result.path), result


def test_timit_counts_durations_speakers(timit):
    dataset, result = timit
    source = _corpus("timit_sample")
    wavs = sorted(source.glob("*/*.wav"))
    assert len(wavs) == 80
    # One sentence of the sample (dr3-madc0/si1367) has 175 ms of audio after its last label: reported.
    assert [Path(s["file"]).name for s in result.skipped] == ["si1367.wav"]
    assert "labels end at 4.330 s" in result.skipped[0]["problem"]
    report = json.loads((result.path / "report.json").read_text())
    assert report["skipped"] == result.skipped
    assert len(dataset) == 79 and dataset.meta["counts"]["skipped"] == 1
    assert dataset.sample_rate == 16000 and dataset.num_channels == 1 and dataset.label_hop == 160
    assert sorted(dataset.speaker_vocabulary) == sorted({w.parent.name.split("-")[1] for w in wavs})
    expected_samples = sum(soundfile.info(str(w)).frames for w in wavs if w.stem != "si1367" or "madc0" not in str(w))
    assert dataset.total_samples == expected_samples
    assert dataset.phone_vocabulary == sorted(TIMIT_61_TO_39)
    # Within-speaker split: every speaker on both sides, 2 of 10 sentences (2 of 9 for madc0) in test.
    tests = Counter(s for s, split in zip(dataset.speakers, dataset.splits) if split == "test")
    assert tests == {speaker: 2 for speaker in dataset.speaker_vocabulary}
    genders = {dataset.vocabularies["gender"][dataset.utterance_label(i, "gender")] for i in range(len(dataset))}
    assert genders == {"f", "m"}


def test_timit_samples_and_labels_match_the_source(timit):
    dataset, _ = timit
    source = _corpus("timit_sample")
    for index in (0, 17, len(dataset) - 1):
        speaker, sentence = dataset.utterance_ids[index].split("_")
        folder = next(source.glob(f"*-{speaker}"))
        audio, rate = soundfile.read(str(folder / f"{sentence}.wav"), dtype="int16")
        np.testing.assert_array_equal(dataset.read_raw(index)[:, 0], audio)
        labels = dataset.frame_labels(index)
        assert labels.shape == (-(-audio.size // 160),)
        reference = _reference_labels(folder / f"{sentence}.phn", audio.size, 16000)
        stored = [dataset.phone_vocabulary[i] if i >= 0 else None for i in labels]
        assert stored == reference


def test_timit_labels_line_up_with_the_audio(timit):
    dataset, _ = timit
    silence, vowel = [], []
    for index in range(len(dataset)):
        energy = _frame_energy(dataset.signal(index), dataset.label_hop)
        symbols = np.array([dataset.phone_vocabulary[i] if i >= 0 else "" for i in dataset.frame_labels(index)])
        silence.append(energy[symbols == "h#"])
        vowel.append(energy[np.isin(symbols, list(VOWELS))])
    silence_energy, vowel_energy = np.median(np.concatenate(silence)), np.median(np.concatenate(vowel))
    assert silence_energy < 0.01 * vowel_energy  # h# is at least 20 dB quieter than vowels
    # Shifting the labels by a few frames would blur this: the boundary frames matter.
    assert np.concatenate(silence).size > 2000


def test_timit_fold_39_and_strict_failure(tmp_path):
    source = _corpus("timit_sample")
    with pytest.raises(DataError, match=r"si1367\.phn: labels end at .* tolerance of 2 label frames"):
        prepare("timit", source, tmp_path / "strict", workers=1)
    assert not (tmp_path / "strict").exists()  # nothing half-written is left behind
    result = prepare("timit", source, tmp_path / "t39", fold_39=True, limit=12, workers=1)
    dataset = PreparedDataset.open(result.path)
    assert len(dataset.phone_vocabulary) == 39 and "sil" in dataset.phone_vocabulary
    index = dataset.utterance_ids.index("fvmh0_sa1")
    symbols = [dataset.phone_vocabulary[i] for i in dataset.frame_labels(index)[:3]]
    assert symbols == ["sil", "sil", "sil"]  # h# -> sil
    # Generous tolerance keeps si1367 (its tail frames stay unlabelled).
    result = prepare("timit", source, tmp_path / "tolerant", label_tolerance=20, workers=1)
    dataset = PreparedDataset.open(result.path)
    assert len(dataset) == 80
    tail = dataset.frame_labels(dataset.utterance_ids.index("madc0_si1367"))[-10:]
    assert (tail == -1).all()


def test_fsdd_counts_digits_and_official_split(tmp_path):
    source = _corpus("fsdd")
    result = prepare("fsdd", source, tmp_path / "fsdd", workers=2)
    dataset = PreparedDataset.open(result.path)
    files = sorted((source / "recordings").glob("*.wav"))
    assert len(dataset) == len(files) == 3000
    assert dataset.sample_rate == 8000 and dataset.label_hop == 80 and dataset.phone_vocabulary is None
    assert dataset.total_samples == sum(soundfile.info(str(f)).frames for f in files)
    assert len(dataset.speaker_vocabulary) == 6
    digits = dataset.utterance_labels("digit")
    assert Counter(dataset.vocabularies["digit"][d] for d in digits) == {str(d): 300 for d in range(10)}
    for index in (0, 1234, 2999):
        digit, speaker, take = dataset.utterance_ids[index].split("_")
        assert dataset.vocabularies["digit"][digits[index]] == digit and dataset.speakers[index] == speaker
        assert dataset.splits[index] == ("test" if int(take) < 5 else "train")
    assert len(dataset.indices("test")) == 300
    test_speakers = set(np.asarray(dataset.speakers)[dataset.indices("test")])
    assert test_speakers == set(dataset.speaker_vocabulary)


def test_fsdd_resampled_to_16k(tmp_path):
    source = _corpus("fsdd")
    result = prepare("fsdd", source, tmp_path / "fsdd16", sample_rate=16000, limit=20, workers=1)
    dataset = PreparedDataset.open(result.path)
    assert dataset.sample_rate == 16000 and dataset.label_hop == 160
    assert dataset.meta["preparation"]["resampled_to"] == 16000
    for index in range(len(dataset)):
        original, _ = soundfile.read(str(source / "recordings" / f"{dataset.utterance_ids[index]}.wav"))
        assert dataset.lengths[index] == 2 * original.size
    # The resampled signal keeps the original's content: decimating it back gives nearly the same samples.
    original, _ = soundfile.read(str(source / "recordings" / f"{dataset.utterance_ids[0]}.wav"), dtype="float32")
    import soxr

    back = soxr.resample(dataset.signal(0)[0], 16000, 8000)
    error = np.sqrt(np.mean((back - original) ** 2)) / np.sqrt(np.mean(original**2))
    assert error < 0.05


def test_librispeech_labels_splits_and_mismatches(tmp_path):
    source = _corpus("librispeech_cpc")
    result = prepare(
        "librispeech", source, tmp_path / "ls", split_lists={"train": source / "seq_list.txt"}, workers=1
    )
    dataset = PreparedDataset.open(result.path)
    flacs = sorted(source.rglob("*.flac"))
    label_ids = [line.split()[0] for line in (source / "phone_labels.txt").read_text().splitlines() if line.strip()]
    assert len(dataset) == len(flacs) == 9 and len(dataset.speaker_vocabulary) == 6
    assert dataset.total_samples == sum(soundfile.info(str(f)).frames for f in flacs)
    with_audio = {f.stem for f in flacs}
    assert sorted(result.unmatched["labels_without_audio"]) == sorted(set(label_ids) - with_audio)
    assert len(result.unmatched["labels_without_audio"]) == 4
    assert sorted(result.unmatched["audio_without_labels"]) == sorted(with_audio - set(label_ids))
    counts = dataset.meta["counts"]
    assert counts["labels_without_audio"] == 4 and counts["audio_without_labels"] == 7
    assert counts["not_in_split_lists"] == 2
    assert dataset.phone_vocabulary == [str(i) for i in range(41)]
    lines = {line.split()[0]: line.split()[1:] for line in (source / "phone_labels.txt").read_text().splitlines()}
    for utterance_id in ("4051-11218-0044", "2911-12359-0007"):
        index = dataset.utterance_ids.index(utterance_id)
        expected = np.array([int(v) for v in lines[utterance_id]])
        labels = dataset.frame_labels(index)
        assert labels.size == -(-dataset.lengths[index] // 160)
        np.testing.assert_array_equal(labels[: expected.size], expected)
        assert (labels[expected.size :] == -1).all() and labels.size - expected.size <= 2
        # Class 0 is silence: its frames are quieter than the rest.
        energy = _frame_energy(dataset.signal(index), 160)[: expected.size]
        assert np.median(energy[expected == 0]) < 0.1 * np.median(energy[expected != 0])
    unlabelled = dataset.utterance_ids.index(sorted(with_audio - set(label_ids))[0])
    assert (dataset.frame_labels(unlabelled) == -1).all()


def test_festival_phn_in_seconds(tmp_path):
    source = _corpus("tts_festival")
    result = prepare("textgrid", source, tmp_path / "fest", label_ext=".phn", workers=2)
    dataset = PreparedDataset.open(result.path)
    wavs = sorted(source.glob("*/*.wav"))
    assert len(dataset) == len(wavs) == 180 and len(dataset.speaker_vocabulary) == 6
    assert dataset.total_samples == sum(soundfile.info(str(w)).frames for w in wavs)
    lines = [line for w in wavs for line in w.with_suffix(".phn").read_text().splitlines() if line.strip()]
    symbols = {line.split()[2] for line in lines}
    assert dataset.phone_vocabulary == sorted(symbols) and len(symbols) == 40
    for speaker in dataset.speaker_vocabulary:  # 30 sentences each: 6 in test, 24 in train
        splits = Counter(s for sp, s in zip(dataset.speakers, dataset.splits) if sp == speaker)
        assert splits == {"train": 24, "test": 6}
    for index in (7, 100, 179):
        wav = source / f"{dataset.utterance_ids[index]}.wav"
        reference = _reference_labels(wav.with_suffix(".phn"), int(dataset.lengths[index]), 1)
        assert [dataset.phone_vocabulary[i] if i >= 0 else None for i in dataset.frame_labels(index)] == reference
    pause, vowel = [], []
    for index in range(0, len(dataset), 5):
        energy = _frame_energy(dataset.signal(index), 160)
        names = np.array([dataset.phone_vocabulary[i] for i in dataset.frame_labels(index)])
        pause.append(energy[names == "pau"])
        vowel.append(energy[np.isin(names, list(VOWELS))])
    assert np.median(np.concatenate(pause)) < 0.01 * np.median(np.concatenate(vowel))
