"""The ``uea`` kind on aeon's bundled BasicMotions and JapaneseVowels: multichannel, variable length."""

from __future__ import annotations

import numpy as np
import pytest

from cpcaudio.data import PreparedDataset, WindowSampler, prepare
from cpcaudio.errors import DataError

aeon_datasets = pytest.importorskip("aeon.datasets", reason="the uea kind needs aeon (pip install aeon)")


def _reference(name: str):
    out = {}
    for split in ("train", "test"):
        series, classes = aeon_datasets.load_classification(name, split=split)
        out[split] = (list(series), list(classes))
    return out


def test_basic_motions(tmp_path):
    result = prepare("uea", "BasicMotions", tmp_path / "bm", sample_rate=10)
    dataset = PreparedDataset.open(result.path)
    reference = _reference("BasicMotions")
    assert dataset.meta["signal_kind"] == "timeseries" and dataset.signal_dtype == np.dtype("<f4")
    assert dataset.num_channels == 6 and dataset.sample_rate == 10 and len(dataset) == 80
    assert dataset.vocabularies["class"] == ["badminton", "running", "standing", "walking"]
    assert len(dataset.indices("train")) == 40 and len(dataset.indices("test")) == 40
    for split, (series, classes) in reference.items():
        indices = dataset.indices(split)
        for position in (0, 13, 39):
            index = int(indices[position])
            np.testing.assert_array_equal(dataset.signal(index), np.asarray(series[position], dtype=np.float32))
            assert dataset.vocabularies["class"][dataset.utterance_label(index, "class")] == classes[position]
    sampler = WindowSampler(dataset, window_size=64, batch_size=5, seed=0)
    batch = next(iter(sampler))
    assert batch.signal.shape == (5, 6, 64) and (batch.lengths == 64).all()


def test_japanese_vowels_variable_length(tmp_path):
    result = prepare("uea", "JapaneseVowels", tmp_path / "jv")
    dataset = PreparedDataset.open(result.path)
    reference = _reference("JapaneseVowels")
    series = reference["train"][0] + reference["test"][0]
    assert len(dataset) == 640 and dataset.num_channels == 12
    np.testing.assert_array_equal(dataset.lengths, [s.shape[1] for s in series])
    assert dataset.lengths.min() < dataset.lengths.max()  # really variable length
    np.testing.assert_array_equal(dataset.signal(300), np.asarray(series[300], dtype=np.float32))
    counts = {c: n for c, n in zip(*np.unique(reference["train"][1] + reference["test"][1], return_counts=True))}
    stored = np.bincount(dataset.utterance_labels("class"))
    assert dict(zip(dataset.vocabularies["class"], stored)) == counts
    sampler = WindowSampler(dataset, window_size=32, batch_size=4, seed=0, mode="sequential", split="test")
    batch = next(iter(sampler))
    assert (batch.lengths < 32).all() and batch.signal[0, :, batch.lengths[0]:].abs().sum() == 0


def test_ts_folder_and_unknown_set(tmp_path):
    root = tmp_path / "Toy"
    root.mkdir()
    header = (
        "@problemName Toy\n@timeStamps false\n@univariate false\n@dimensions 2\n@equalLength false\n"
        "@classLabel true a b\n@data\n"
    )
    (root / "Toy_TRAIN.ts").write_text(header + "1,2,3:4,5,6:a\n7,8:9,10:b\n")
    (root / "Toy_TEST.ts").write_text(header + "1,1,1,1:2,2,2,2:b\n")
    dataset = PreparedDataset.open(prepare("uea", root, tmp_path / "toy").path)
    assert dataset.num_channels == 2 and list(dataset.lengths) == [3, 2, 4]
    assert dataset.splits == ["train", "train", "test"]
    np.testing.assert_array_equal(dataset.signal(1), [[7, 8], [9, 10]])
    with pytest.raises(DataError, match="neither .* nor a set bundled with aeon"):
        prepare("uea", "NoSuchSetAnywhere", tmp_path / "none")
