"""TIMIT split lists (``--split-list NAME=FILE``): listed utterances take the list's split, unlisted ones
go to train; they replace the split rule, so a speaker-disjoint split of the NLTK sample is one list."""

from __future__ import annotations

import json

import pytest
from badfiles import make_timit
from typer.testing import CliRunner

from cpcaudio.cli.main import app
from cpcaudio.data import PreparedDataset, prepare
from cpcaudio.errors import DataError, UsageError


def test_listed_utterances_take_their_split_and_unlisted_go_to_train(tmp_path):
    corpus = make_timit(tmp_path / "src")  # dr1-fabc0 and dr1-mdef0, sentences sa1 and sa2
    (tmp_path / "test.txt").write_text("mdef0_sa1\nmdef0_sa2\n")
    (tmp_path / "valid.txt").write_text("fabc0_sa2\n")
    prepare("timit", corpus.root, tmp_path / "data", workers=1, fold_39=True,
            split_lists={"test": tmp_path / "test.txt", "valid": tmp_path / "valid.txt"})
    dataset = PreparedDataset.open(tmp_path / "data")
    splits = dict(zip(dataset.utterance_ids, dataset.splits))
    assert splits == {"fabc0_sa1": "train", "fabc0_sa2": "valid", "mdef0_sa1": "test", "mdef0_sa2": "test"}
    assert dataset.meta["split_rule"] == "split lists test=test.txt, valid=valid.txt; unlisted utterances -> train"
    report = json.loads((tmp_path / "data" / "report.json").read_text())
    assert "fabc0_sa1" in json.dumps(report)  # the unlisted utterance is named in the report


def test_the_cli_takes_repeated_split_lists(tmp_path):
    corpus = make_timit(tmp_path / "src")
    (tmp_path / "test.txt").write_text("fabc0_sa1\n")
    (tmp_path / "train.txt").write_text("fabc0_sa2\nmdef0_sa1\nmdef0_sa2\n")
    result = CliRunner().invoke(app, [
        "prepare", "timit", str(corpus.root), str(tmp_path / "data"), "--workers", "1", "--quiet",
        "--split-list", f"test={tmp_path / 'test.txt'}", "--split-list", f"train={tmp_path / 'train.txt'}",
    ])
    assert result.exit_code == 0, result.output
    dataset = PreparedDataset.open(tmp_path / "data")
    assert [dataset.utterance_ids[i] for i in dataset.indices("test")] == ["fabc0_sa1"]


def test_bad_split_lists_are_refused_with_one_line(tmp_path):
    corpus = make_timit(tmp_path / "src")
    (tmp_path / "a.txt").write_text("fabc0_sa1\n")
    (tmp_path / "other.txt").write_text("someone_sx1\n")
    with pytest.raises(UsageError, match="not both"):
        prepare("timit", corpus.root, tmp_path / "d1", split="within-speaker", split_lists={"test": tmp_path / "a.txt"})
    with pytest.raises(UsageError, match="'dev' is not one of train, valid, test"):
        prepare("timit", corpus.root, tmp_path / "d2", split_lists={"dev": tmp_path / "a.txt"})
    with pytest.raises(DataError, match="also in the test split list"):
        prepare("timit", corpus.root, tmp_path / "d3",
                split_lists={"test": tmp_path / "a.txt", "train": tmp_path / "a.txt"})
    with pytest.raises(DataError, match="name none of the 4 utterances"):
        prepare("timit", corpus.root, tmp_path / "d4", split_lists={"test": tmp_path / "other.txt"})
