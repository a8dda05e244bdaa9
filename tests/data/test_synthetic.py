"""The synthetic corpus: layout, exact phone labels, distinct speakers, determinism, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cpcaudio.data import synthetic, synthetic_voices
from cpcaudio.data.espeak import Espeak
from cpcaudio.data.synthetic import PHONE_SET, SILENCE, generate_corpus, phone_segments, speaker_voices
from cpcaudio.data.synthetic_text import make_sentence, vocabulary
from cpcaudio.errors import DataError, UsageError

NUM_SPEAKERS = 4
MINUTES = 1.0
VOWELS = {"aa", "ae", "ah", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw"}
HOP = 160  # 10 ms frames at 16 kHz


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-minute, 4-speaker corpus (about 4 utterances per speaker)."""
    return generate_corpus(tmp_path_factory.mktemp("synthetic") / "corpus", num_speakers=NUM_SPEAKERS, minutes=MINUTES)


def _meta(corpus: Path) -> dict:
    return json.loads((corpus / "corpus.json").read_text())


def _read_phn(path: Path) -> list[tuple[float, float, str]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(float(start), float(end), phone) for start, end, phone in rows]


def _utterances(corpus: Path) -> list[tuple[dict, np.ndarray, int, list[tuple[float, float, str]]]]:
    """(utterance record, float audio, sample rate, phone segments in seconds) per utterance."""
    items = []
    for item in _meta(corpus)["utterances"]:
        stem = corpus / item["speaker"] / item["id"]
        audio, sample_rate = soundfile.read(f"{stem}.wav", dtype="float32")
        items.append((item, audio, sample_rate, _read_phn(Path(f"{stem}.phn"))))
    return items


def _frame_labels(segments: list[tuple[float, float, str]], num_frames: int, sample_rate: int) -> np.ndarray:
    """Phone of the sample at the centre of each 10 ms frame (librosa's centred frames)."""
    centres = np.arange(num_frames) * HOP
    labels = np.full(num_frames, SILENCE, dtype=object)
    for start, end, phone in segments:
        labels[(centres >= round(start * sample_rate)) & (centres < round(end * sample_rate))] = phone
    return labels


def test_layout_and_metadata(corpus: Path) -> None:
    meta = _meta(corpus)
    assert meta["phone_set"] == list(PHONE_SET) and len(PHONE_SET) == 39 and SILENCE in PHONE_SET
    assert [speaker["speaker"] for speaker in meta["speakers"]] == [f"spk{i:02d}" for i in range(NUM_SPEAKERS)]
    assert len({speaker["espeak_voice"] for speaker in meta["speakers"]}) == NUM_SPEAKERS
    sentences = dict(line.split(" ", 1) for line in (corpus / "sentences.txt").read_text().splitlines())
    assert list(sentences) == [item["id"] for item in meta["utterances"]]
    assert meta["num_utterances"] == len(meta["utterances"]) >= 2 * NUM_SPEAKERS
    lengths: dict[str, list[float]] = {}
    for item in meta["utterances"]:
        info = soundfile.info(str(corpus / item["speaker"] / f"{item['id']}.wav"))
        assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", item["num_samples"])
        lengths.setdefault(item["speaker"], []).append(info.frames / 16000)
    target = MINUTES * 60 / NUM_SPEAKERS
    for speaker in meta["speakers"]:
        durations = lengths[speaker["speaker"]]
        assert abs(sum(durations) - target) <= max(durations) / 2 + 1e-3  # within half an utterance
        assert speaker["seconds"] == pytest.approx(sum(durations), abs=1e-3)
    assert meta["total_seconds"] == pytest.approx(sum(map(sum, lengths.values())), abs=1e-3)


def test_phone_labels_are_contiguous_and_cover_each_file(corpus: Path) -> None:
    seen = set()
    for item, audio, sample_rate, segments in _utterances(corpus):
        assert segments[0][0] == 0.0 and segments[0][2] == SILENCE and segments[-1][2] == SILENCE
        assert round(segments[-1][1] * sample_rate) == audio.size == item["num_samples"]
        for (_, previous_end, _), (start, _, _) in zip(segments, segments[1:]):
            assert start == previous_end
        assert all(end > start and phone in PHONE_SET for start, end, phone in segments)
        seen.update(phone for _, _, phone in segments)
    assert len(seen) >= 30  # one minute of sentences covers most of the phone set


def test_silence_is_much_quieter_than_vowels(corpus: Path) -> None:
    energy: dict[str, list[float]] = {"silence": [], "vowel": []}
    for _, audio, sample_rate, segments in _utterances(corpus):
        for start, end, phone in segments:
            piece = audio[round(start * sample_rate) : round(end * sample_rate)].astype(np.float64)
            if phone == SILENCE:
                energy["silence"].append(np.mean(piece**2))
            elif phone in VOWELS:
                energy["vowel"].append(np.mean(piece**2))
    silence_db, vowel_db = (10 * np.log10(np.median(energy[key])) for key in ("silence", "vowel"))
    assert vowel_db - silence_db > 30.0, (silence_db, vowel_db)


def test_labels_line_up_with_the_audio_to_the_frame(corpus: Path) -> None:
    """A frame phone classifier does best with the labels as written, not shifted by 50 ms either way."""
    features, labels, held_out = [], [], []
    for item, audio, sample_rate, segments in _utterances(corpus):
        mfcc = librosa.feature.mfcc(y=audio, sr=sample_rate, n_mfcc=13, n_fft=400, hop_length=HOP)
        frames = np.concatenate([mfcc, librosa.feature.delta(mfcc)]).T  # (frame, 26)
        features.append(frames)
        labels.append(_frame_labels(segments, len(frames), sample_rate))
        held_out.append(np.full(len(frames), int(item["id"].split("_")[1]) % 2 == 1))
    x, test = np.concatenate(features), np.concatenate(held_out)

    def accuracy(shift: int) -> float:
        y = np.concatenate([np.roll(frame_labels, shift) for frame_labels in labels])
        return LinearDiscriminantAnalysis().fit(x[~test], y[~test]).score(x[test], y[test])

    aligned, early, late = accuracy(0), accuracy(-5), accuracy(5)
    majority = max(np.mean(np.concatenate(labels)[test] == phone) for phone in PHONE_SET)
    assert aligned > majority + 0.2, (aligned, majority)
    assert aligned > max(early, late) + 0.05, (aligned, early, late)


def test_speakers_are_distinguishable_across_utterances(corpus: Path) -> None:
    """MFCC mean/std of 1 s chunks: train on even utterances, test on odd ones."""
    features, utterance_of_chunk, odd = [], [], []
    for item, audio, sample_rate, _ in _utterances(corpus):
        mfcc = librosa.feature.mfcc(y=audio, sr=sample_rate, n_mfcc=20, n_fft=400, hop_length=HOP)
        for start in range(0, mfcc.shape[1] - 50, 100):
            chunk = mfcc[:, start : start + 100]
            features.append(np.concatenate([chunk.mean(axis=1), chunk.std(axis=1)]))
            utterance_of_chunk.append(item["id"])
            odd.append(int(item["id"].split("_")[1]) % 2 == 1)
    x, test = np.array(features), np.array(odd)
    y = np.array([utterance.split("_")[0] for utterance in utterance_of_chunk])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    accuracy = probe.fit(x[~test], y[~test]).score(x[test], y[test])
    assert accuracy >= 0.8, accuracy  # chance is 1 / NUM_SPEAKERS

    # control: with the speakers shuffled across utterances the same probe falls towards chance
    utterances = sorted(set(utterance_of_chunk))
    permuted = np.random.default_rng(0).permutation([utterance.split("_")[0] for utterance in utterances])
    shuffled = dict(zip(utterances, permuted))
    y_shuffled = np.array([shuffled[utterance] for utterance in utterance_of_chunk])
    control = probe.fit(x[~test], y_shuffled[~test]).score(x[test], y_shuffled[test])
    assert control < accuracy - 0.3, (control, accuracy)


def test_same_bytes_whatever_the_workers_and_different_for_another_seed(tmp_path: Path) -> None:
    options = {"num_speakers": 3, "minutes": 0.25}
    one = generate_corpus(tmp_path / "one", workers=1, **options)
    two = generate_corpus(tmp_path / "two", workers=3, **options)
    other = generate_corpus(tmp_path / "other", seed=1, **options)
    files = sorted(path.relative_to(one) for path in one.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(two) for path in two.rglob("*") if path.is_file())
    assert len(files) >= 2 + 2 * 3
    for relative in files:
        assert (one / relative).read_bytes() == (two / relative).read_bytes(), relative
    assert (one / "sentences.txt").read_text() != (other / "sentences.txt").read_text()
    assert (one / "spk00" / "spk00_0000.wav").read_bytes() != (other / "spk00" / "spk00_0000.wav").read_bytes()


def test_other_sample_rate(tmp_path: Path) -> None:
    out = generate_corpus(tmp_path / "c", num_speakers=1, minutes=0.05, sample_rate=8000)
    audio, sample_rate = soundfile.read(out / "spk00" / "spk00_0000.wav", dtype="int16")
    segments = _read_phn(out / "spk00" / "spk00_0000.phn")
    assert sample_rate == 8000 and round(segments[-1][1] * 8000) == audio.size
    assert _meta(out)["sample_rate"] == 8000


def test_rerun_keeps_a_complete_corpus_and_refuses_other_folders(corpus: Path, tmp_path: Path) -> None:
    wav = corpus / "spk00" / "spk00_0000.wav"
    before = wav.stat().st_mtime_ns
    calls: list[tuple[int, int]] = []
    again = generate_corpus(
        corpus, num_speakers=NUM_SPEAKERS, minutes=MINUTES, progress=lambda e: calls.append((e.done, e.total))
    )
    assert again == corpus
    assert wav.stat().st_mtime_ns == before and calls == [(NUM_SPEAKERS, NUM_SPEAKERS)]
    with pytest.raises(UsageError, match="not empty"):
        generate_corpus(corpus, num_speakers=NUM_SPEAKERS, minutes=MINUTES, seed=5)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        generate_corpus(tmp_path, minutes=0.1)
    assert (tmp_path / "notes.txt").read_text() == "mine"

    interrupted = tmp_path / "interrupted"  # a run of the same settings that stopped half-way
    interrupted.mkdir()
    (interrupted / ".generating.json").write_text(json.dumps(synthetic._settings(1, 0.05, 0, 16000)))
    (interrupted / "spk03").mkdir()
    generate_corpus(interrupted, num_speakers=1, minutes=0.05)
    assert sorted(path.name for path in interrupted.iterdir()) == ["corpus.json", "sentences.txt", "spk00"]


@pytest.mark.parametrize(
    "options",
    [
        {"num_speakers": 0}, {"minutes": 0}, {"minutes": float("nan")}, {"sample_rate": 100}, {"workers": 0},
        {"seed": -1},
    ],  # fmt: skip
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, options: dict) -> None:
    with pytest.raises(UsageError, match=next(iter(options))):
        generate_corpus(tmp_path / "c", **options)
    assert not (tmp_path / "c").exists()


def test_missing_espeak_library_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import espeakng_loader

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: str(tmp_path / "libespeak-ng.so"))
    with pytest.raises(DataError, match="espeak-ng library"):
        generate_corpus(tmp_path / "c", minutes=0.1)
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # the package is not installed
    with pytest.raises(DataError, match="pip install espeakng-loader"):
        generate_corpus(tmp_path / "c", minutes=0.1)
    assert not (tmp_path / "c").exists()


def test_phone_segments_from_events() -> None:
    events = [(100, "h"), (300, "'@"), (300, "l"), (500, "_:"), (600, "_"), (700, "_")]
    assert phone_segments(events, 700) == [(0, 100, SILENCE), (100, 300, "hh"), (300, 500, "l"), (500, 700, SILENCE)]
    assert phone_segments([(0, ",oU")], 50) == [(0, 50, "ow")]
    with pytest.raises(DataError, match="'Q~'"):
        phone_segments([(10, "Q~")], 50)


def test_every_voice_loads_and_every_phoneme_of_the_vocabulary_maps() -> None:
    engine = Espeak(seed=0)
    words = vocabulary()
    texts = [" ".join(words[i : i + 15]) + "." for i in range(0, len(words), 15)]
    rng = np.random.default_rng(0)
    texts += [make_sentence(rng) for _ in range(40)]
    phones = set()
    for voice in speaker_voices(len(synthetic_voices._VOICE_POOL)):
        engine.set_voice(voice)
        text_list = texts if voice.speaker in ("spk00", "spk01") else texts[-3:]  # one American, one British
        for text in text_list:
            samples, events = engine.synthesize(text)
            assert samples.dtype == np.int16 and samples.size > 0 and np.abs(samples).max() > 1000
            phones.update(phone for _, _, phone in phone_segments(events, samples.size))
    assert phones == set(PHONE_SET)


def test_speaker_voices_are_balanced_and_distinct() -> None:
    voices = speaker_voices(30, seed=3)
    assert [voice.gender for voice in voices[:8]].count("female") == 4
    assert {voice.accent for voice in voices[:8]} == {"en", "en-us"}
    assert len({(v.espeak_voice, v.rate, v.pitch, v.pitch_range) for v in voices}) == 30
    assert speaker_voices(8, seed=3) == voices[:8] and speaker_voices(8, seed=4) != voices[:8]
