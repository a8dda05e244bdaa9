"""`cpcaudio abx` and `cpcaudio units` on real speech: a 20-utterance slice of the shared TIMIT sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from helpers import shared_data, tiny_config

from cpcaudio.cli.main import app


def _tiny_model():
    import torch

    from cpcaudio.model import CPCModel

    torch.manual_seed(0)
    return CPCModel(tiny_config()).eval()


@pytest.fixture(scope="module")
def timit20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 20 utterances (2 speakers) of the TIMIT sample, 39 phones."""
    from cpcaudio.data import prepare

    source = shared_data("timit_sample")
    out = tmp_path_factory.mktemp("abx") / "timit20"
    prepare("timit", source, out, workers=1, limit=20, label_tolerance=20, fold_39=True)
    return out


def test_abx_command_model_and_mfcc(timit20: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "abx"
    args = ["abx", str(timit20), "--out", str(out), "--checkpoint", str(tiny_checkpoint), "--baselines", "mfcc,random",
            "--context-modes", "any", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    rows = {(r["features"], r["speaker_mode"]): r for r in report["results"]}
    assert set(rows) == {(name, mode) for name in ("model", "random", "mfcc") for mode in ("within", "across")}
    mfcc = rows[("mfcc", "within")]
    assert 0.02 < mfcc["error"] < 0.3 and mfcc["context_mode"] == "any"  # far below chance (0.5)
    assert mfcc["phone_pairs"] > 100 and mfcc["speakers"] == 2 and mfcc["items_without_frames"] == 0
    assert (out / "abx.png").stat().st_size > 0 and "| mfcc |" in (out / "results.md").read_text()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_item_file_with_a_folder_of_npy_features_equals_the_dataset(timit20: Path, tmp_path: Path) -> None:
    from cpcaudio.evaluate.abx import AbxSettings, run_abx, write_item_file
    from cpcaudio.evaluate.abx.inputs import build_feature_sets, compute_frames, open_corpus
    from cpcaudio.evaluate.feature_sets import FeatureSetOptions

    corpus = open_corpus(timit20)
    on_cpu = FeatureSetOptions(baselines="mfcc", device="cpu")
    mfcc = [s for s in build_feature_sets(corpus, on_cpu)[0] if s.name == "mfcc"][0]
    folder = tmp_path / "npy"
    folder.mkdir()
    for file_id, frames in zip(corpus.file_ids, compute_frames(mfcc, list(range(len(corpus.file_ids))))):
        np.save(folder / f"{file_id}.npy", frames)
    write_item_file(corpus.items, tmp_path / "timit20.item")
    settings = AbxSettings(speaker_modes="within", context_modes="within,any")
    assert settings.context_modes == ("within", "any")
    folder_options = FeatureSetOptions(device="cpu")
    from_folder = run_abx(folder, folder_options, settings, items_file=tmp_path / "timit20.item")
    from_dataset = run_abx(timit20, FeatureSetOptions(model=_tiny_model(), baselines="mfcc", device="cpu"), settings)
    expected = [r["error"] for r in from_dataset["results"] if r["features"] == "mfcc"]
    # MFCC frame t is centred at t * 10 ms; the folder assumes (t + 1/2) * 10 ms: on 10 ms phone
    # boundaries both put the same frames in every item
    assert [r["error"] for r in from_folder["results"]] == pytest.approx(expected, abs=1e-9)
    librilight = AbxSettings(speaker_modes="within", context_modes="within", slicing="librilight")
    sliced = run_abx(folder, folder_options, librilight, items_file=tmp_path / "timit20.item")
    assert sliced["results"][0]["items_without_frames"] > 0  # its one-frame-short slices lose 10 ms phones
    assert sliced["settings"]["slicing"] == "librilight" and sliced["settings"]["context_modes"] == ["within"]


def test_abx_settings_are_checked_when_made() -> None:
    from cpcaudio.errors import UsageError
    from cpcaudio.evaluate.abx import AbxSettings

    assert AbxSettings().speaker_modes == ("within", "across") and AbxSettings().context_modes == ("within", "any")
    assert AbxSettings(speaker_modes=["across", "within"]).speaker_modes == ("within", "across")
    for bad in ({"speaker_modes": "both"}, {"context_modes": ""}, {"slicing": "edges"}, {"max_size_group": 0}):
        with pytest.raises(UsageError):
            AbxSettings(**bad)


def test_abx_on_a_folder_needs_an_item_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["abx", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--items" in result.output


def test_units_command(timit20: Path, tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "units"
    args = ["units", str(timit20), "--out", str(out), "--checkpoint", str(tiny_checkpoint), "--clusters", "8",
            "--layer", "all", "--baselines", "mfcc",
            "--speaker-modes", "within", "--context-modes", "any", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    mfcc = [row for row in report["results"] if row["features"] == "mfcc"][0]
    assert 0.05 < mfcc["quality"]["test"]["pnmi"] < 1 and mfcc["kmeans"]["fit_frames"] > 1000
    assert 0 < mfcc["abx"][0]["error"] < 0.5
    lines = (out / "mfcc" / "units_dedup.txt").read_text().splitlines()
    assert len(lines) == 20 and all(len(line.split()) > 5 for line in lines)
    units = [int(u) for u in lines[0].split()[1:]]
    assert all(a != b for a, b in zip(units, units[1:])) and max(units) < 8
    from cpcaudio.evaluate.units import KMeansUnits

    assert KMeansUnits.load(out / "mfcc").num_units == 8
    assert KMeansUnits.load(out / "model-encoder").meta["layer"] == "encoder"
    assert [row["features"] for row in report["results"]] == ["model-context", "model-encoder", "mfcc"]


def test_units_and_abx_of_an_utterance_subset(timit20: Path, tmp_path: Path) -> None:
    from cpcaudio.data import PreparedDataset
    from cpcaudio.errors import UsageError
    from cpcaudio.evaluate.abx import AbxSettings, run_abx
    from cpcaudio.evaluate.feature_sets import FeatureSetOptions
    from cpcaudio.evaluate.units_runner import run_units

    dataset = PreparedDataset.open(timit20)
    subset = [int(i) for i in dataset.indices("train")[:4]] + [int(i) for i in dataset.indices("test")[:2]]
    options = FeatureSetOptions(model=_tiny_model(), baselines="none", device="cpu")
    units = run_units(timit20, options, clusters=4, utterances=subset[::-1], abx=None, out=tmp_path / "units")
    assert units["dataset"]["utterances"] == len(subset) and units["dataset"]["train"] == 4
    lines = (tmp_path / "units" / "model" / "units.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == [dataset.utterance_ids[i] for i in sorted(subset)]
    abx = run_abx(timit20, options, AbxSettings(speaker_modes="within", context_modes="any"), utterances=subset)
    assert abx["items"]["files"] == len(subset) and abx["dataset"]["utterances"] == len(subset)
    with pytest.raises(UsageError, match="utterance indices"):
        run_units(timit20, options, clusters=4, utterances=[len(dataset)])
