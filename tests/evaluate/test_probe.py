"""Probe runs: metrics, windows, label alignment, baselines, and end-to-end runs on the real TIMIT sample,
FSDD and aeon's BasicMotions / GunPoint (skipped where the data are absent)."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import torch
from helpers import SHARED_DATA, shared_data, tiny_config
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from cpcaudio import CPCConfig, CPCModel
from cpcaudio.cli.main import app
from cpcaudio.errors import DataError, UsageError
from cpcaudio.evaluate import (
    align_frame_labels,
    baselines,
    classification_metrics,
    model_timing,
    run_probe,
    speaker_windows,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- metrics, windows, alignment, baselines ------------------------------------------------------------


def test_classification_metrics_match_hand_counts():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    metrics = classification_metrics(y_true, y_pred, [0, 1, 2, 3], ["a", "b", "c", "d"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert metrics["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["confusion_matrix"][0] == [2, 1, 0, 0]
    assert metrics["labels"] == ["a", "b", "c", "d"]


def test_speaker_windows_cut_consecutive_whole_windows():
    assert speaker_windows(100, 40) == [(0, 40), (40, 80)]
    assert speaker_windows(30, 40) == [(0, 30)]
    assert speaker_windows(80, 40) == [(0, 40), (40, 80)]


def test_speaker_windows_at_several_offsets_start_every_fraction_of_a_window():
    assert speaker_windows(100, 40, offsets=4) == [(s, s + 40) for s in (0, 10, 20, 30, 40, 50, 60)]
    assert speaker_windows(30, 40, offsets=8) == [(0, 30)]  # shorter than a window: one window
    assert speaker_windows(100, 40, offsets=1) == speaker_windows(100, 40)
    with pytest.raises(ValueError, match="offsets"):
        speaker_windows(100, 40, offsets=0)


def test_model_frames_get_the_same_labels_as_the_data_pipeline():
    from cpcaudio.data import frame_labels_for_encoder

    model = CPCModel(CPCConfig())
    labels = np.arange(300) % 7
    frames = model.num_frames(300 * 160)
    mine = align_frame_labels(labels, 160, 16000, model_timing(model), frames)
    theirs = frame_labels_for_encoder(labels, 160, model.encoder.geometry, frames)
    np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(mine, labels[:frames])  # the paper's encoder: frame t <-> label t


def test_mfcc_has_one_frame_per_label_frame_and_matches_librosa():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(16000).astype(np.float32) * 0.1
    features = baselines.mfcc(signal[None], 16000)
    assert features.shape == (1 + 16000 // 160, 39)
    direct = librosa.feature.mfcc(y=signal, sr=16000, n_mfcc=13, n_fft=512, win_length=400, hop_length=160, n_mels=40)
    np.testing.assert_allclose(features[:, :13], direct.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(features[:, 13:26], librosa.feature.delta(direct, mode="nearest").T, rtol=1e-3, atol=1e-3)
    # 8 kHz: still a 10 ms hop; labels of frame t are the label frame holding its centre (t * hop)
    assert baselines.mfcc(signal[None, :8000], 8000).shape == (1 + 8000 // 80, 39)
    timing = baselines.spectral_timing(16000)
    many = np.arange(100000)
    np.testing.assert_array_equal(align_frame_labels(many, 160, 16000, timing, many.size), many)
    assert baselines.log_mel(signal, 16000).shape == (101, 40)
    assert baselines.mfcc(signal[:100], 16000).shape == (1, 39)  # shorter than a window: one frame


def test_random_model_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    first = baselines.random_model(tiny_config(), seed=7)
    assert torch.rand(1) == expected
    second = baselines.random_model(tiny_config(), seed=7)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        torch.testing.assert_close(a, b)


# ---- end to end on real data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from cpcaudio.data import prepare

    root = tmp_path_factory.mktemp("probe_data")
    made = {}
    for name, kind, src, options in (
        ("timit", "timit", SHARED_DATA / "timit_sample", {"on_error": "skip"}),
        ("fsdd", "fsdd", SHARED_DATA / "fsdd", {}),
    ):
        if src.exists():
            prepare(kind, src, root / name, workers=1, **options)
            made[name] = root / name
    for name in ("BasicMotions", "GunPoint"):
        prepare("uea", name, root / name)
        made[name] = root / name
    return made


def by_features(report: dict, protocol: str) -> dict:
    return {r["features"]: r for r in report["results"] if r["protocol"] == protocol}


def test_phone_probe_on_timit_via_the_cli(datasets, tiny_checkpoint, tmp_path):
    shared_data("timit_sample")
    from cpcaudio.data import PreparedDataset

    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["probe", str(datasets["timit"]), "--task", "phone", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
         "--baselines", "mfcc,random", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    rows = by_features(report, "frame")
    assert set(rows) == {"model", "mfcc", "random"}
    mfcc = rows["mfcc"]
    # 61 TIMIT phones: MFCC frames are far above the majority class (silence h#, ~12 %)
    assert mfcc["accuracy"] > mfcc["majority_class_accuracy"] + 0.2, mfcc["accuracy"]
    assert 0.0 < mfcc["macro_f1"] < mfcc["accuracy"] + 0.2
    dataset = PreparedDataset.open(datasets["timit"])
    assert report["split"]["train"] == [dataset.utterance_ids[i] for i in dataset.indices("train")]
    assert report["split"]["test"] == [dataset.utterance_ids[i] for i in dataset.indices("test")]
    # every labelled frame of the test utterances is scored once (MFCC: 1 + n // 160 frames per utterance)
    expected = sum(
        int((align_frame_labels(dataset.frame_labels(i), 160, 16000, baselines.spectral_timing(16000),
                                1 + int(dataset.lengths[i]) // 160) >= 0).sum())
        for i in dataset.indices("test")
    )
    assert mfcc["counts"]["test_samples"] == expected
    assert sum(sum(row) for row in mfcc["confusion_matrix"]) == expected
    for name in ("results.md", "accuracy.png", "confusion_frame.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "results.md").read_text()
    assert "| model |" in table and "| mfcc |" in table and "| random |" in table


def test_stored_features_give_the_same_probe_as_the_checkpoint(datasets, tiny_checkpoint, tmp_path):
    shared_data("timit_sample")
    from cpcaudio.extract import extract_to_store

    subset = list(range(0, 79, 3))
    extract_to_store(tiny_checkpoint, datasets["timit"], tmp_path / "store", device="cpu")
    from_store = run_probe(datasets["timit"], "phone", features=tmp_path / "store", baselines_requested="none",
                           utterances=subset, device="cpu")
    from_checkpoint = run_probe(datasets["timit"], "phone", checkpoint=tiny_checkpoint, baselines_requested=[],
                                utterances=subset, device="cpu")
    stored, direct = from_store["results"][0], from_checkpoint["results"][0]
    assert stored["counts"] == direct["counts"]
    assert stored["accuracy"] == pytest.approx(direct["accuracy"], abs=2e-3)
    assert from_store["model"]["features"] == str(tmp_path / "store")


def test_max_train_frames_subsamples_the_phone_training_frames(datasets, tiny_checkpoint):
    shared_data("timit_sample")
    report = run_probe(datasets["timit"], "phone", checkpoint=tiny_checkpoint, baselines_requested="none",
                       utterances=range(0, 79, 3), max_train_frames=500, device="cpu")
    counts = report["results"][0]["counts"]
    assert counts["train_samples"] == 500 < counts["train_samples_available"]


def test_speaker_probe_on_fsdd_subset(datasets, tmp_path):
    shared_data("fsdd")
    from cpcaudio.data import PreparedDataset

    dataset = PreparedDataset.open(datasets["fsdd"])
    # takes 0-2 (test) and 5-14 (train) of every speaker and digit: 6 speakers x 10 digits x 13 takes
    subset = [i for i, u in enumerate(dataset.utterance_ids) if int(u.split("_")[2]) in (0, 1, 2, *range(5, 15))]
    model = baselines.random_model(tiny_config(data={"window_size": 8000}), seed=1)
    report = run_probe(dataset, "speaker", model=model, baselines_requested="mfcc", utterances=subset,
                       device="cpu", out=tmp_path)
    utterance, window = by_features(report, "utterance"), by_features(report, "window")
    assert utterance["mfcc"]["counts"]["classes"] == 6
    assert utterance["mfcc"]["counts"]["test_samples"] == 6 * 10 * 3
    assert utterance["mfcc"]["accuracy"] > 0.8  # chance: 1/6
    assert window["mfcc"]["accuracy"] > 0.6
    assert set(report["split"]["test"]) == {dataset.utterance_ids[i] for i in subset if dataset.splits[i] == "test"}
    assert len(report["split"]["unused"]) == len(dataset) - len(subset)
    assert (tmp_path / "confusion_window.png").exists()


@pytest.mark.parametrize("name", ["BasicMotions", "GunPoint"])
def test_class_probe_on_uea_sets_with_the_ts2vec_protocol(datasets, name):
    report = run_probe(datasets[name], "class", device="cpu")
    assert report["model"]["random_init"] is True
    for protocol in ("utterance", "utterance-svm"):
        rows = by_features(report, protocol)
        assert set(rows) == {"model", "raw"}
        for row in rows.values():
            assert row["accuracy"] > row["majority_class_accuracy"] + 0.2, (protocol, row["features"], row["accuracy"])
    assert by_features(report, "utterance-svm")["raw"]["probe"] == "svm-rbf"


# ---- failure paths --------------------------------------------------------------------------------------


def test_cli_rejects_bad_requests_with_one_line(datasets, tiny_checkpoint, tmp_path):
    runner = CliRunner()
    base = ["probe", str(datasets["GunPoint"]), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*base, "--task", "words"])
    assert result.exit_code == 2 and "unknown task 'words'" in result.output
    result = runner.invoke(app, [*base, "--task", "class", "--checkpoint", str(tiny_checkpoint), "--features", str(tmp_path)])
    assert result.exit_code == 2 and "not checkpoint and features" in result.output
    result = runner.invoke(app, [*base, "--task", "phone"])
    assert result.exit_code == 3 and "no frame labels" in result.output
    result = runner.invoke(app, [*base, "--task", "class", "--baselines", "mfcc,pitch"])
    assert result.exit_code == 2 and "unknown baseline 'pitch'" in result.output
    assert "Traceback" not in result.output


def test_library_errors_name_the_problem(datasets):
    with pytest.raises(DataError, match="1 class"):
        run_probe(datasets["BasicMotions"], "speaker", device="cpu")  # UEA sets have no speakers
    with pytest.raises(UsageError, match="no utterance label 'digit'"):
        run_probe(datasets["BasicMotions"], "class", label="digit", device="cpu")
