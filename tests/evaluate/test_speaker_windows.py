"""The speaker task's two window protocols: ``window`` (the last context frame of each window, CPC_audio's
protocol) and ``window-mean`` (the mean over the window's frames, SUPERB's pooling); for features that the
window protocol already averages, ``window-mean`` is the same problem, fitted once and reported under both.
Training utterances give windows at ``TRAIN_WINDOW_OFFSETS`` offsets a window apart, test utterances
consecutive ones (or every 1/N window with ``test_window_offsets``); the penalty's validation part holds out
whole utterances."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile
from helpers import tiny_config

from cpcaudio.errors import UsageError
from cpcaudio.evaluate import baselines, model_source, run_probe
from cpcaudio.evaluate.problems import TRAIN_WINDOW_OFFSETS, WINDOW, WINDOW_MEAN, ProbeInputs
from cpcaudio.evaluate.sources import baseline_source
from cpcaudio.evaluate.tasks import SpeakerTask
from cpcaudio.extract.features import extract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 16000
WINDOW_SAMPLES = 4000  # 0.25 s: a 1.1 s utterance gives 4 test windows (the remainder dropped)
TRAIN_WINDOWS = 28  # training windows of a 1.1 s (17600-sample) utterance: starts 0, 500, ..., 13500
SPEAKERS = ("anna", "bert", "cleo")


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """A prepared folder corpus: 3 'speakers' (a pitch each, with noise), 5 utterances of 1.1 s each."""
    from cpcaudio.data import PreparedDataset, prepare

    root = tmp_path_factory.mktemp("speaker_windows")
    rng = np.random.default_rng(0)
    for number, speaker in enumerate(SPEAKERS):
        for index in range(5):
            t = np.arange(int(1.1 * RATE)) / RATE
            pitch = 150.0 * (number + 1) * (1 + 0.02 * index)
            signal = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.05 * rng.standard_normal(t.size)
            path = root / "src" / speaker / f"{speaker}_{index}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, signal.astype(np.float32), RATE, subtype="PCM_16")
    prepare("folder", root / "src", root / "data", workers=1)
    return PreparedDataset.open(root / "data")


def inputs_of(dataset) -> ProbeInputs:
    return ProbeInputs(
        dataset, np.asarray(dataset.indices("train")), np.asarray(dataset.indices("test")),
        list(dataset.speakers), window_samples=WINDOW_SAMPLES,
    )


def train_windows(dataset) -> list[np.ndarray]:
    """(channels, samples) of every window of the training utterances, in the probe's order: one every
    1/8 window (500 samples), written out here rather than taken from the code under test."""
    windows = []
    for index in dataset.indices("train"):
        for start in range(0, int(dataset.lengths[index]) - WINDOW_SAMPLES + 1, 500):
            windows.append(dataset.read(int(index), start, WINDOW_SAMPLES))
    return windows


def test_training_windows_start_every_eighth_window_and_test_windows_are_consecutive(tones):
    assert TRAIN_WINDOW_OFFSETS == 8
    assert set(int(n) for n in tones.lengths) == {17600}
    model = baselines.random_model(tiny_config(data={"window_size": WINDOW_SAMPLES}), seed=3)
    problems = by_protocol(SpeakerTask().build_problems(model_source(model, "context", "model", "t"), inputs_of(tones)))
    train, test = tones.indices("train"), tones.indices("test")
    for name in ("window", "window-mean"):
        problem = problems[name]
        assert problem.train_x.shape[0] == TRAIN_WINDOWS * len(train) == len(train_windows(tones))
        assert problem.test_x.shape[0] == 4 * len(test)
        # every training window is tagged with its utterance, so validation can hold whole utterances out
        np.testing.assert_array_equal(problem.train_groups, np.repeat(np.asarray(train), TRAIN_WINDOWS))
        assert problem.protocol.by_utterance


def test_test_windows_at_several_offsets_start_every_fraction_of_a_window_and_are_each_scored(tones):
    model = baselines.random_model(tiny_config(data={"window_size": WINDOW_SAMPLES}), seed=3)
    inputs = replace(inputs_of(tones), test_window_offsets=4)
    source = model_source(model, "context", "model", "t")
    problems = by_protocol(SpeakerTask().build_problems(source, inputs))
    consecutive = by_protocol(SpeakerTask().build_problems(source, inputs_of(tones)))["window"]
    test = tones.indices("test")
    # 17600-sample utterances, 4000-sample windows every 1000 samples: starts 0, 1000, ..., 13000
    starts = range(0, 17600 - WINDOW_SAMPLES + 1, 1000)
    assert len(starts) == 14
    frames = [
        extract(model, tones.read(int(i), start, WINDOW_SAMPLES), RATE, layer="context").frames.numpy()
        for i in test for start in starts
    ]
    window, window_mean = problems["window"], problems["window-mean"]
    np.testing.assert_allclose(window.test_x, np.stack([f[-1] for f in frames]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(window_mean.test_x, np.stack([f.mean(axis=0) for f in frames]), rtol=1e-5, atol=1e-6)
    # each utterance's label, once per window: the consecutive protocol has 4 windows per utterance
    np.testing.assert_array_equal(window.test_y, np.repeat(consecutive.test_y[::4], 14))
    np.testing.assert_array_equal(consecutive.test_y, np.repeat(consecutive.test_y[::4], 4))
    assert window.train_x.shape[0] == TRAIN_WINDOWS * len(tones.indices("train"))  # training side unchanged


def test_run_probe_records_how_test_windows_were_cut_and_refuses_a_bad_spacing(tones):
    model = baselines.random_model(tiny_config(data={"window_size": WINDOW_SAMPLES}), seed=3)
    report = run_probe(tones, "speaker", model=model, baselines_requested="mfcc", device="cpu", test_window_offsets=2)
    rows = {(r["features"], r["protocol"]): r for r in report["results"]}
    # starts 0, 2000, ..., 12000: 7 windows per test utterance, for the model and the baseline alike
    for features in ("model", "mfcc"):
        assert rows[(features, "window")]["counts"]["test_samples"] == 7 * len(tones.indices("test"))
    assert "every 1/2 window (overlapping, each scored) on test utterances" in report["protocols"]["window"]
    default = run_probe(tones, "speaker", model=model, baselines_requested="none", device="cpu")
    assert "consecutive on test utterances" in default["protocols"]["window"]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(UsageError, match="test_window_offsets"):
            run_probe(tones, "speaker", model=model, baselines_requested="none", device="cpu", test_window_offsets=bad)


def by_protocol(problems) -> dict:
    return {problem.protocol.name: problem for problem in problems}


def test_window_mean_of_context_features_is_the_mean_of_each_window_encoded_alone(tones):
    model = baselines.random_model(tiny_config(data={"window_size": WINDOW_SAMPLES}), seed=3)
    problems = by_protocol(SpeakerTask().build_problems(model_source(model, "context", "model", "t"), inputs_of(tones)))
    assert list(problems) == ["utterance", "window", "window-mean"]
    window, window_mean = problems["window"], problems["window-mean"]
    assert window_mean.same_as is None  # its own problem: fitted on its own
    frames = [extract(model, signal, RATE, layer="context").frames.numpy() for signal in train_windows(tones)]
    assert window_mean.train_x.shape == (len(frames), 32) and len(frames) == TRAIN_WINDOWS * len(tones.indices("train"))
    np.testing.assert_allclose(window_mean.train_x, np.stack([f.mean(axis=0) for f in frames]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(window.train_x, np.stack([f[-1] for f in frames]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(window.train_x, window_mean.train_x)  # two protocols, two sets of samples
    np.testing.assert_array_equal(window_mean.train_y, window.train_y)
    np.testing.assert_array_equal(window_mean.test_y, window.test_y)


@pytest.mark.parametrize("kind", ["mfcc", "encoder"])
def test_for_mean_pooled_features_window_mean_is_the_window_problem_itself(tones, kind):
    if kind == "mfcc":
        source = baseline_source("mfcc", RATE)
        frames = [baselines.mfcc(signal, RATE) for signal in train_windows(tones)]
    else:
        model = baselines.random_model(tiny_config(data={"window_size": WINDOW_SAMPLES}), seed=3)
        source = model_source(model, "encoder", "model", "z")
        frames = [extract(model, signal, RATE, layer="encoder").frames.numpy() for signal in train_windows(tones)]
    problems = by_protocol(SpeakerTask().build_problems(source, inputs_of(tones)))
    window, window_mean = problems["window"], problems["window-mean"]
    assert window_mean.protocol == WINDOW_MEAN and window.protocol == WINDOW
    assert window_mean.same_as == "window" and window.same_as is None
    assert window_mean.train_x is window.train_x and window_mean.test_x is window.test_x  # not computed twice
    np.testing.assert_allclose(window.train_x, np.stack([f.mean(axis=0) for f in frames]), rtol=1e-5, atol=1e-5)


def test_run_probe_fits_mean_pooled_windows_once_and_reports_both_protocols(tones, tmp_path):
    model = baselines.random_model(tiny_config(data={"window_size": WINDOW_SAMPLES}), seed=3)
    stages: list[str] = []
    report = run_probe(tones, "speaker", model=model, baselines_requested="mfcc,random", device="cpu",
                       out=tmp_path, progress=lambda event: stages.append(event.stage))
    rows = {(r["features"], r["protocol"]): r for r in report["results"]}
    assert list(rows) == [(features, protocol) for features in ("model", "mfcc", "random")
                          for protocol in ("utterance", "window", "window-mean")]
    assert set(report["protocols"]) == {"utterance", "window", "window-mean"}
    fitted = {stage for stage in stages if stage.startswith("probe: ")}
    assert "probe: mfcc / window-mean" not in fitted and "probe: mfcc / window" in fitted
    assert {"probe: model / window-mean", "probe: random / window-mean"} <= fitted  # context: fitted apart
    mfcc_mean, mfcc_window = rows[("mfcc", "window-mean")], rows[("mfcc", "window")]
    assert mfcc_mean["same_problem_as"] == "window" and mfcc_mean["fit_seconds"] == 0.0
    assert mfcc_mean["accuracy"] == mfcc_window["accuracy"] and mfcc_mean["counts"] == mfcc_window["counts"]
    assert mfcc_mean["accuracy"] > 0.9  # three pitches: MFCC tells them apart
    assert "same_problem_as" not in rows[("model", "window-mean")]
    assert rows[("model", "window-mean")]["counts"]["test_samples"] == 4 * len(tones.indices("test"))

    written = json.loads((tmp_path / "results.json").read_text())
    assert written["results"] == report["results"]
    table = (tmp_path / "results.md").read_text()
    section = table[table.index("## window-mean"):]
    assert "| mfcc | logistic (= window) |" in section and "| model | logistic |" in section
    assert "mfcc: the same samples as the window protocol" in section
    assert (tmp_path / "confusion_window-mean.png").stat().st_size > 0  # the model's own window-mean fit


def test_stored_encoder_features_share_the_window_fit(tones, tmp_path):
    """A store of encoder features: its window vector is the mean, so no confusion matrix of its own."""
    from cpcaudio.extract import extract_to_store
    from cpcaudio.train.checkpoint import save_checkpoint

    config = tiny_config(data={"window_size": WINDOW_SAMPLES})
    model = baselines.random_model(config, seed=3)
    save_checkpoint(tmp_path / "m.pt", {"config": config.to_dict(), "model": model.state_dict(), "step": 0})
    extract_to_store(tmp_path / "m.pt", tones.path, tmp_path / "store", layer="encoder", device="cpu")
    report = run_probe(tones, "speaker", features=tmp_path / "store", baselines_requested="none", device="cpu",
                       out=tmp_path / "report")
    rows = {r["protocol"]: r for r in report["results"]}
    assert rows["window-mean"]["same_problem_as"] == "window"
    assert rows["window-mean"]["accuracy"] == rows["window"]["accuracy"]
    assert (tmp_path / "report" / "confusion_window.png").is_file()
    assert not (tmp_path / "report" / "confusion_window-mean.png").exists()
