"""Opening an edited or damaged prepared dataset: one line naming the file, the row and "prepare the
dataset again", never a traceback and never another utterance's samples (issue 15, case 3)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from badfiles import assert_clean_failure, make_folder, make_textgrid
from cpcaudio.cli.main import app
from cpcaudio.data import PreparedDataset, prepare

DATA = 3
runner = CliRunner()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """A textgrid dataset (frame labels) and a folder dataset with an utterance label column ``mood``."""
    root = tmp_path_factory.mktemp("datasets")
    textgrid = make_textgrid(root / "textgrid corpus")
    prepare("textgrid", textgrid.root, root / "textgrid", workers=1)
    folder = make_folder(root / "folder corpus")
    listing = root / "list.csv"
    listing.write_text("path,speaker,mood\n" + "".join(
        f"{s}/{s}_{i}.wav,{s},{'calm' if i else 'glad'}\n" for s in ("anna", "bert") for i in range(2)
    ))
    prepare("folder", folder.root, root / "folder", file_list=listing, workers=1)
    return {"textgrid": root / "textgrid", "folder": root / "folder"}


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def _edit_index(edit: Callable[[list[list[str]]], None]) -> Callable[[Path], Path]:
    def apply(dataset: Path) -> Path:
        index = dataset / "utterances.tsv"
        rows = _rows(index)
        edit(rows)
        index.write_text("".join("\t".join(row) + "\n" for row in rows))
        return index
    return apply


def _edit_meta(edit: Callable[[dict], object]) -> Callable[[Path], Path]:
    def apply(dataset: Path) -> Path:
        meta_path = dataset / "meta.json"
        meta = json.loads(meta_path.read_text())
        changed = edit(meta)
        meta_path.write_text(json.dumps(meta if changed is None else changed))
        return meta_path
    return apply


def _set(row: int, column: int, value: object) -> Callable[[list[list[str]]], None]:
    def edit(rows: list[list[str]]) -> None:
        rows[row][column] = str(value(rows) if callable(value) else value)
    return edit


def _swap_lengths(rows: list[list[str]]) -> None:  # same total, so only the offsets show it
    rows[1][2], rows[2][2] = "3999", "4001"


# (name, dataset, edit, message); the index header is line 1, so data row 1 is line 2.
CASES = [
    ("offset-moved", "textgrid", _edit_index(_set(2, 1, lambda r: int(r[2][1]) + 100)),
     r"utterances.tsv:3: offset 4100 of 'anna/u1' is not where the previous utterance ends \(4000\); offsets must "
     r"be contiguous and in order; prepare the dataset again"),
    ("offset-not-a-number", "textgrid", _edit_index(_set(1, 1, "abc")),
     r"utterances.tsv:2: offset 'abc' is not an integer; prepare the dataset again"),
    ("length-zero", "textgrid", _edit_index(_set(1, 2, 0)), r"utterances.tsv:2: length 0 is not a positive number"),
    ("lengths-changed", "textgrid", _edit_index(_swap_lengths), r"utterances.tsv:3: offset 4000 of 'anna/u1' is not where"),
    ("label-offset", "textgrid", _edit_index(_set(2, 5, 26)),
     r"utterances.tsv:3: label_offset 26 of 'anna/u1' is not where the previous utterance's labels end \(25\)"),
    ("label-frames", "textgrid", _edit_index(_set(1, 6, 24)),
     r"utterances.tsv:2: 'anna/u0' has 24 frame labels, its 4000 samples need 25"),
    ("unknown-speaker", "textgrid", _edit_index(_set(1, 3, "zoe")),
     r"utterances.tsv:2: speaker 'zoe' is not in meta.json's speaker vocabulary"),
    ("unknown-split", "textgrid", _edit_index(_set(1, 4, "tset")),
     r"utterances.tsv:2: split 'tset' is not one of train, valid, test"),
    ("duplicate-id", "textgrid", _edit_index(_set(2, 0, "anna/u0")), r"utterances.tsv:3: utterance id 'anna/u0' occurs twice"),
    ("short-row", "textgrid", _edit_index(lambda rows: rows[1].pop()), r"utterances.tsv:2: expected 7 columns, got 6"),
    ("unknown-utterance-label", "folder", _edit_index(_set(1, 7, "angry")),
     r"utterances.tsv:2: mood 'angry' is not in meta.json's mood vocabulary"),
    ("meta-a-string", "textgrid", _edit_meta(lambda meta: "dataset"), r"meta.json: holds a JSON string, not an object"),
    ("meta-list", "textgrid", _edit_meta(lambda meta: []), r"meta.json: holds a JSON list, not an object"),
    ("unknown-dtype", "textgrid", _edit_meta(lambda meta: meta["signal"].update(dtype="int8")),
     r"meta.json: signal.dtype 'int8' is not one of int16, float32; prepare the dataset again"),
    ("rate-as-text", "textgrid", _edit_meta(lambda meta: meta.update(sample_rate="16000")),
     r"meta.json: sample_rate must be a positive integer, got '16000'"),
    ("labels-not-an-object", "textgrid", _edit_meta(lambda meta: meta.update(frame_labels="yes")),
     r"meta.json: 'frame_labels' must be an object or null"),
    ("file-outside-the-folder", "textgrid", _edit_meta(lambda meta: meta["signal"].update(file="../signal.bin")),
     r"meta.json: signal.file must name a file in the dataset folder"),
    ("vocabularies-a-list", "textgrid", _edit_meta(lambda meta: meta.update(vocabularies=[])),
     r"meta.json: 'vocabularies' must map names to lists of strings"),
    ("shape-disagrees", "textgrid",
     lambda d: (_edit_meta(lambda meta: meta["signal"].update(shape=[1, 1]))(d), d / "utterances.tsv")[1],
     r"utterances.tsv: the utterances add up to 16000 samples x 1 channel\(s\), meta.json declares a signal of 1 x 1"),
]


@pytest.mark.parametrize("name, kind, edit, message", CASES, ids=[case[0] for case in CASES])
def test_edited_dataset_is_refused_when_opened(name, kind, edit, message, datasets, tmp_path: Path):
    dataset = tmp_path / "dataset"
    shutil.copytree(datasets[kind], dataset)
    named = edit(dataset)
    line = assert_clean_failure(runner.invoke(app, ["info", str(dataset)]), DATA, message, named)
    assert line.endswith("prepare the dataset again")


def test_meta_json_null(datasets, tmp_path: Path):
    dataset = tmp_path / "dataset"
    shutil.copytree(datasets["textgrid"], dataset)
    (dataset / "meta.json").write_text("null\n")
    assert_clean_failure(runner.invoke(app, ["info", str(dataset)]), DATA, r"holds a JSON null, not an object", dataset / "meta.json")


def test_extract_refuses_a_dataset_whose_offsets_were_edited(datasets, tmp_path: Path, tiny_checkpoint: Path):
    """Before: extract read utterance 2 from utterance 3's samples and wrote a complete store."""
    dataset = tmp_path / "dataset"
    shutil.copytree(datasets["textgrid"], dataset)
    index = CASES[0][2](dataset)
    out = tmp_path / "features"
    result = runner.invoke(app, ["extract", str(tiny_checkpoint), str(dataset), str(out), "--device", "cpu", "--quiet"])
    assert_clean_failure(result, DATA, r"utterances.tsv:3: offset 4100 of 'anna/u1' is not where", index)
    assert not (out / "meta.json").exists()


def test_unedited_datasets_open(datasets):
    for path in datasets.values():
        dataset = PreparedDataset.open(path)
        assert len(dataset) == 4 and dataset.read(3).shape == (1, 4000)
