"""Corpus kinds are declared once: each reader's options match its ``discover`` signature, ``cpcaudio
prepare --help`` and the data scripts are built from those declarations, and a kind added to the
registry is a kind of the command."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from badfiles import make_fsdd, make_timit
from helpers import PROJECT

from cpcaudio.cli.main import app
from cpcaudio.data import KINDS, PreparedDataset, prepare
from cpcaudio.data.sources import SOURCE_KINDS, SourceOption, source_kind
from cpcaudio.errors import UsageError

runner = CliRunner()
SCRIPTS = PROJECT / "data_scripts"


@pytest.mark.parametrize("kind", list(SOURCE_KINDS))
def test_declared_options_are_the_readers_keywords_with_its_defaults(kind: str) -> None:
    declared = SOURCE_KINDS[kind]
    parameters = inspect.signature(declared.discover).parameters.values()
    keywords = {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    for received in declared.receives:
        assert received in keywords, f"{kind} receives {received} but discover() has no such keyword"
        del keywords[received]
    assert keywords == {option.name: option.default for option in declared.options}
    assert all(option.help.endswith(".") for option in declared.options)
    assert KINDS == tuple(SOURCE_KINDS)


def test_unknown_kind_and_inapplicable_option_name_the_choices() -> None:
    with pytest.raises(UsageError, match=r"unknown source kind 'wav'; choose one of folder, librispeech"):
        source_kind("wav")
    with pytest.raises(UsageError, match=r"'tier' does not apply to the timit kind \(its options: fold_39, split"):
        prepare("timit", "anywhere", "nowhere", tier="phones")


def test_help_lists_every_kind_and_every_declared_flag_in_its_panel() -> None:
    result = runner.invoke(app, ["prepare", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # the words, without the boxes
    for kind in SOURCE_KINDS.values():
        assert f"- {kind.name}: {kind.summary}" in text
        for option in kind.options:
            assert f" {option.cli_flag} " in text
    assert "Options of timit" in text and "Options of folder, textgrid" in text
    assert "--quiet -q" in text and "--overwrite" in text


def test_a_repeated_option_reaches_the_reader_parsed(tmp_path: Path) -> None:
    """``--split-list`` is declared repeatable with a parser: two flags become one dict for the reader."""
    option = next(o for o in SOURCE_KINDS["librispeech"].options if o.name == "split_lists")
    assert option.cli_flag == "--split-list" and option.multiple
    assert option.from_cli(["train=a.txt", "test=b.txt"]) == {"train": Path("a.txt"), "test": Path("b.txt")}
    result = runner.invoke(app, ["prepare", "librispeech", str(tmp_path), str(tmp_path / "o"), "--split-list", "x"])
    assert result.exit_code == 2 and "--split-list expects NAME=FILE" in result.output


def test_option_flag_defaults_to_the_keyword() -> None:
    assert SourceOption("fold_39", bool).cli_flag == "--fold-39"
    assert SourceOption("x", str, flag="--why").cli_flag == "--why"


@pytest.mark.parametrize("name", ["folder", "fsdd", "librispeech", "synthetic", "textgrid", "timit", "uea"])
def test_every_data_script_offers_its_kinds_options(name: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    for option in source_kind(name).options:
        assert option.cli_flag in completed.stdout
    assert "Get the data" in completed.stdout  # the recipe is the help page's epilog


def test_data_scripts_prepare_and_fail_with_one_line(tmp_path: Path) -> None:
    timit = make_timit(tmp_path / "timit")
    command = [sys.executable, str(SCRIPTS / "timit.py"), str(timit.root), str(tmp_path / "out"), "--fold-39"]
    completed = subprocess.run(command + ["--workers", "1"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    dataset = PreparedDataset.open(tmp_path / "out")
    assert len(dataset) == timit.num_utterances and len(dataset.phone_vocabulary) == 39
    options = json.loads((tmp_path / "out" / "meta.json").read_text())["preparation"]
    assert options["on_error"] == "skip"  # the script's own default

    fsdd = make_fsdd(tmp_path / "fsdd")
    fsdd.victim.write_bytes(b"")
    command = [sys.executable, str(SCRIPTS / "fsdd.py"), str(fsdd.root), str(tmp_path / "fsdd out"), "--workers", "1"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 3 and "Traceback" not in completed.stderr
    assert completed.stderr.startswith("error: ") and "empty file (0 bytes)" in completed.stderr
