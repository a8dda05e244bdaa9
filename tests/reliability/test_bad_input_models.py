"""Bad input to the model side: config files, checkpoints (truncated, foreign, another format version,
malicious pickles), and what ``train``, ``extract``, ``probe`` and ``cpcaudio.load`` are given to read
or write. Each case: one clear error line naming the file and the fix, exit 2 (usage) or 3 (data), no
traceback, no half-written output; a malicious checkpoint never runs its code.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import cpcaudio
from badfiles import (
    prepare_two_speaker_tones,
    tiny_run_sections,
    AUDIO_DAMAGE,
    assert_clean_failure,
    assert_no_complete_store,
    make_folder,
    make_timit,
    read_only_folder,
    tone,
    write_audio,
)
from cpcaudio.train.checkpoint import CHECKPOINT_FORMAT_VERSION, load_checkpoint, save_checkpoint
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.data import prepare
from cpcaudio.errors import CheckpointError, ConfigError, DataError
from cpcaudio.extract import FeatureStore
from cpcaudio.model import CPCModel

USAGE, DATA = 2, 3
RATE = 8000
runner = CliRunner()

TINY = tiny_run_sections(RATE)


def cli(*arguments: object):
    return runner.invoke(app, [str(a) for a in arguments])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny 8 kHz dataset, a tiny config file and a checkpoint of a randomly initialised tiny model."""
    root = tmp_path_factory.mktemp("models")
    prepare_two_speaker_tones(root, RATE)
    (root / "tiny.yaml").write_text(
        "\n".join(f"{section}: {values}" for section, values in TINY.items()).replace("'", "") + "\n"
    )
    config = CPCConfig.from_dict(TINY)
    torch.manual_seed(0)
    save_checkpoint(root / "model.pt", {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    return root


# ---- config files -------------------------------------------------------------------------------------------

CONFIG_CASES = [
    ("unknown-key", "encoder:\n  hidden_dimm: 16\n", r"unknown config key 'encoder.hidden_dimm'.*did you mean 'encoder.hidden_dim'", "encoder.hidden_dimm"),
    ("unknown-section", "decoder:\n  hidden_dim: 16\n", r"unknown config key 'decoder'", "decoder"),
    ("wrong-type", "encoder:\n  hidden_dim: sixteen\n", r"encoder.hidden_dim must be an integer; got 'sixteen'", "encoder.hidden_dim"),
    ("wrong-type-list", "encoder:\n  strides: 5\n", r"encoder.strides must be a list", "encoder.strides"),
    ("negative-size", "data:\n  batch_size: -4\n", r"data.batch_size must be > 0, got -4", "data.batch_size"),
    ("zero-window", "data:\n  window_size: 0\n", r"data.window_size must be > 0, got 0", "data.window_size"),
    ("bad-choice", "data:\n  sampler: random\n", r"data.sampler must be one of uniform, same-speaker, sequential", "data.sampler"),
    ("not-a-mapping", "- encoder\n- context\n", r"must hold a mapping of sections", None),
    ("section-not-a-mapping", "encoder: 16\n", r"'encoder' must be a mapping", None),
    ("invalid-yaml", "encoder: {hidden_dim: 16\n", r"not valid YAML/JSON: .* at line 2, column 1", None),
]


@pytest.mark.parametrize("name, text, message, key", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_file(name: str, text: str, message: str, key, tmp_path: Path, work: Path):
    path = tmp_path / "bad config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as error:
        CPCConfig.load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    out = tmp_path / "run"
    result = cli("train", work / "dataset", out, "--config", path, "--quiet", "--device", "cpu")
    assert_clean_failure(result, USAGE, message, path, *([key] if key else []))
    assert not (out / "last.pt").exists()


def test_unreadable_config_files(tmp_path: Path, work: Path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"encoder: {hidden_dim: 1\xff}\n")
    missing = tmp_path / "missing.yaml"
    for path, message in ((binary, r"cannot read config file .*codec can't decode"), (missing, r"cannot read config file .*No such file")):
        with pytest.raises(ConfigError, match=message):
            CPCConfig.load(path)
        result = cli("train", work / "dataset", tmp_path / "run", "--config", path, "--quiet")
        assert_clean_failure(result, USAGE, message, path)
    broken_json = tmp_path / "config.json"
    broken_json.write_text('{"encoder": {"hidden_dim": 16,}}')
    with pytest.raises(ConfigError, match=r"not valid YAML/JSON: .* at line 1"):
        CPCConfig.load(broken_json)


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("encoder.foo=1", r"unknown config key 'encoder.foo'"),
        ("data.window_size=-5", r"data.window_size must be > 0, got -5"),
        ("data.window_size=big", r"data.window_size must be an integer; got 'big'"),
        ("optim.learning_rate=-0.1", r"optim.learning_rate must be > 0"),
        ("hidden_dim", r"must look like section.key=value"),
    ],
)
def test_bad_set_override(assignment: str, message: str, tmp_path: Path, work: Path):
    result = cli("train", work / "dataset", tmp_path / "run", "--config", work / "tiny.yaml", "--set", assignment, "--quiet")
    assert_clean_failure(result, USAGE, message)
    assert not (tmp_path / "run" / "last.pt").exists()


# ---- checkpoints ------------------------------------------------------------------------------------------------


class _WritesMarker:
    """Unpickling this runs ``os.system("touch MARKER")``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _bad_checkpoint(kind: str, good: Path, folder: Path, marker: Path) -> Path:
    path = folder / f"{kind}.pt"
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-end":
        path.write_bytes(data[:-100])
    elif kind == "zero-bytes":
        path.write_bytes(b"")
    elif kind == "text-renamed":
        path.write_text("model weights, honestly\n")
    elif kind == "other-format-version":
        record = torch.load(good, weights_only=True)
        record["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
        torch.save(record, path)
    elif kind == "not-cpcaudio":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "malicious":
        record = torch.load(good, weights_only=True)
        record["extra"] = _WritesMarker(marker)
        torch.save(record, path)
    elif kind == "malicious-plain-pickle":
        path.write_bytes(pickle.dumps(_WritesMarker(marker)))
    elif kind == "bad-config-inside":
        record = torch.load(good, weights_only=True)
        record["config"]["encoder"]["hidden_dimm"] = 3
        torch.save(record, path)
    elif kind == "weights-do-not-match":
        record = torch.load(good, weights_only=True)
        record["config"]["encoder"]["hidden_dim"] = 24
        torch.save(record, path)
    else:
        raise AssertionError(kind)
    return path


CHECKPOINT_CASES = {
    "truncated": r"is truncated or not a torch file.*use an intact copy",
    "truncated-end": r"is truncated or not a torch file",
    "zero-bytes": r"is truncated or not a torch file",
    "text-renamed": r"is truncated or not a torch file",
    "other-format-version": rf"has format version {CHECKPOINT_FORMAT_VERSION + 1}, this cpcaudio reads version {CHECKPOINT_FORMAT_VERSION}",
    "not-cpcaudio": r"is not a cpcaudio checkpoint",
    "malicious": r"holds a pickled object \(posix\.system\) that could run code when loaded; refusing to load it",
    "malicious-plain-pickle": r"holds a pickled object.* that could run code when loaded; refusing to load it",
    "bad-config-inside": r"holds an invalid config: unknown config key 'encoder.hidden_dimm'",
    "weights-do-not-match": r"does not match its own config",
}


@pytest.fixture
def marker(tmp_path: Path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "unpickling ran code from a checkpoint"


@pytest.mark.parametrize("kind", list(CHECKPOINT_CASES))
def test_bad_checkpoint_library(kind: str, tmp_path: Path, work: Path, marker: Path):
    path = _bad_checkpoint(kind, work / "model.pt", tmp_path, marker)
    with pytest.raises(CheckpointError, match=CHECKPOINT_CASES[kind]) as error:
        cpcaudio.load(path, device="cpu")
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kind", list(CHECKPOINT_CASES))
def test_bad_checkpoint_extract_and_resume(kind: str, tmp_path: Path, work: Path, marker: Path):
    path = _bad_checkpoint(kind, work / "model.pt", tmp_path, marker)
    out = tmp_path / "features"
    result = cli("extract", path, work / "dataset", out, "--device", "cpu", "--quiet")
    assert_clean_failure(result, DATA, CHECKPOINT_CASES[kind], path)
    assert_no_complete_store(out)
    if kind in ("bad-config-inside", "weights-do-not-match"):
        return  # resume compares configs first; covered by the train tests
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(path, run / "last.pt")
    result = cli("train", work / "dataset", run, "--config", work / "tiny.yaml", "--resume", "--quiet", "--device", "cpu")
    assert_clean_failure(result, DATA, CHECKPOINT_CASES[kind], run / "last.pt")
    assert (run / "last.pt").read_bytes() == path.read_bytes()  # the evidence is left alone


def test_missing_checkpoint_and_directory(tmp_path: Path, work: Path):
    for path in (tmp_path / "nothing.pt", tmp_path):
        with pytest.raises(CheckpointError, match=r"does not exist; pass the \.pt file written by 'cpcaudio train'"):
            cpcaudio.load(path)
        result = cli("extract", path, work / "dataset", tmp_path / "out", "--quiet")
        assert_clean_failure(result, DATA, r"does not exist", path)


def test_loading_never_unpickles_code_even_through_torch_defaults(tmp_path: Path, work: Path, marker: Path):
    """The checkpoint module itself loads with weights_only=True: no code path of cpcaudio unpickles."""
    path = _bad_checkpoint("malicious", work / "model.pt", tmp_path, marker)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def _probe_arguments(dataset: Path, checkpoint: Path, out: Path) -> list[str]:
    """Arguments of ``cpcaudio probe`` built from its declared parameters (speaker task)."""
    command = typer.main.get_command(app).commands["probe"]
    arguments, options = [], []
    values = {"dataset": str(dataset), "checkpoint": str(checkpoint), "task": "speaker", "out": str(out)}
    for parameter in command.params:
        if parameter.name not in values:
            continue
        if parameter.param_type_name == "argument":
            arguments.append(values[parameter.name])
        else:
            options += [parameter.opts[0], values[parameter.name]]
    return ["probe", *arguments, *options, "--device", "cpu"]


@pytest.mark.parametrize("kind", ["truncated", "other-format-version", "malicious"])
def test_bad_checkpoint_probe(kind: str, tmp_path: Path, work: Path, marker: Path):
    from cpcaudio.evaluate import run_probe

    path = _bad_checkpoint(kind, work / "model.pt", tmp_path, marker)
    with pytest.raises(CheckpointError, match=CHECKPOINT_CASES[kind]):
        run_probe(work / "dataset", "speaker", checkpoint=path, device="cpu", baselines_requested=[])
    result = cli(*_probe_arguments(work / "dataset", path, tmp_path / "report"))
    assert_clean_failure(result, DATA, CHECKPOINT_CASES[kind], path)


# ---- files that are not the checkpoint their name says, on every path that loads one ----------------------------

FAKE_CHECKPOINTS = {  # name: (how it is made, the error line)
    "text.safetensors": ("text", r"is named \.safetensors but is not a readable safetensors file .*; pass the \.pt checkpoint"),
    "empty.safetensors": ("empty", r"is named \.safetensors but is not a readable safetensors file"),
    "torch.safetensors": ("torch", r"is a torch file named \.safetensors .*; rename it to \.pt"),
    "text.pt": ("text", r"is truncated or not a torch file \(no pickle data\); use an intact copy"),
}
LOADING_COMMANDS = {  # every command that takes a checkpoint: (checkpoint, phone dataset, out) -> arguments
    "abx": lambda ckpt, data, out: ["abx", data, "--checkpoint", ckpt, "--out", out, "--baselines", "none"],
    "units": lambda ckpt, data, out: ["units", data, "--checkpoint", ckpt, "--clusters", 2, "--out", out,
                                      "--baselines", "none"],
    "probe": lambda ckpt, data, out: ["probe", data, "--checkpoint", ckpt, "--task", "speaker", "--out", out,
                                      "--baselines", "none"],
    "extract": lambda ckpt, data, out: ["extract", ckpt, data, out, "--device", "cpu"],
    "export": lambda ckpt, data, out: ["export", ckpt, out / "model.onnx"],
    "convert": lambda ckpt, data, out: ["convert", ckpt, out / "model.pt"],
}


@pytest.fixture(scope="module")
def phone_dataset(tmp_path_factory) -> Path:
    """A prepared 16 kHz TIMIT-like dataset with phone alignments (what abx and units need to get as far as
    the checkpoint)."""
    root = tmp_path_factory.mktemp("phones")
    prepare("timit", make_timit(root / "timit").root, root / "dataset", workers=1)
    return root / "dataset"


@pytest.mark.parametrize("command", [*LOADING_COMMANDS, "cpcaudio.load"])
def test_a_file_that_is_not_the_checkpoint_its_name_says_is_one_line(
    command: str, tmp_path: Path, work: Path, phone_dataset: Path
):
    from cpcaudio.interop import load_model

    for name, (content, message) in FAKE_CHECKPOINTS.items():
        path = tmp_path / name
        if content == "torch":
            shutil.copy(work / "model.pt", path)  # an intact cpcaudio checkpoint, renamed
        else:
            path.write_text("model weights, honestly\n" if content == "text" else "")
        if command == "cpcaudio.load":
            for loader in (cpcaudio.load, load_model, load_checkpoint):
                with pytest.raises(CheckpointError, match=message) as error:
                    loader(path)
                assert str(path) in str(error.value) and "\n" not in str(error.value)
            continue
        out = tmp_path / f"out-{name}"
        out.mkdir()
        result = cli(*LOADING_COMMANDS[command](path, phone_dataset, out), "--quiet")
        assert_clean_failure(result, DATA, message, path)
        assert not list(out.iterdir()), sorted(p.name for p in out.iterdir())  # nothing written


def test_probe_output_below_a_file_fails_cleanly(tmp_path: Path, work: Path):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    result = cli(*_probe_arguments(work / "dataset", work / "model.pt", blocker / "report"), "--baselines", "none")
    assert "Traceback" not in result.output and result.exit_code in (USAGE, DATA), result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert str(blocker) in result.output and blocker.read_text() == "x"


def test_probe_refuses_an_existing_report_unless_overwrite(tmp_path: Path, work: Path):
    out = tmp_path / "report"
    arguments = [*_probe_arguments(work / "dataset", work / "model.pt", out), "--baselines", "none", "--quiet"]
    assert cli(*arguments).exit_code == 0
    before = (out / "results.json").read_bytes()
    assert_clean_failure(cli(*arguments), USAGE, r"pass --overwrite", out)
    assert (out / "results.json").read_bytes() == before


# ---- datasets as input of train, extract and probe ---------------------------------------------------------------


def _broken_datasets(work: Path, folder: Path) -> list[tuple[Path, str, Path]]:
    """(dataset, message, file the message must name): an interrupted prepare, a truncated array, no dataset."""
    unfinished = folder / "unfinished"
    shutil.copytree(work / "dataset", unfinished)
    (unfinished / "meta.json").unlink()
    truncated = folder / "truncated"
    shutil.copytree(work / "dataset", truncated)
    signal = truncated / "signal.bin"
    signal.write_bytes(signal.read_bytes()[:1000])
    return [
        (unfinished, r"not a prepared dataset \(no meta.json\).*run `cpcaudio prepare` again", unfinished),
        (truncated, r"the file is truncated or altered, prepare it again", signal),
        (folder / "nowhere", r"no such dataset directory", folder / "nowhere"),
    ]


def test_broken_dataset_for_train_extract_probe(tmp_path: Path, work: Path):
    from cpcaudio.evaluate import run_probe

    for dataset, message, named in _broken_datasets(work, tmp_path):
        result = cli("train", dataset, tmp_path / "run", "--config", work / "tiny.yaml", "--quiet", "--device", "cpu")
        assert_clean_failure(result, DATA, message, named)
        if dataset.name == "nowhere":
            continue  # extract reads folders of audio too: see test_extract_input_problems
        result = cli("extract", work / "model.pt", dataset, tmp_path / "features", "--quiet", "--device", "cpu")
        assert_clean_failure(result, DATA, message, named)
        assert_no_complete_store(tmp_path / "features")
        with pytest.raises(DataError, match=message):
            run_probe(dataset, "speaker", checkpoint=work / "model.pt", device="cpu", baselines_requested=[])
        result = cli(*_probe_arguments(dataset, work / "model.pt", tmp_path / "report"))
        assert_clean_failure(result, DATA, message, named)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_refuses_a_dataset_that_does_not_match_the_config(tmp_path: Path, work: Path):
    base = ["train", work / "dataset", tmp_path / "run", "--config", work / "tiny.yaml", "--quiet", "--device", "cpu"]
    result = cli(*base, "--set", "data.sample_rate=16000")  # unexpected sample rate
    assert_clean_failure(result, USAGE, r"data.sample_rate=16000 but the dataset has 8000; set data.sample_rate=8000")
    result = cli(*base, "--set", "encoder.in_channels=2")  # the model expects stereo, the data is mono
    assert_clean_failure(result, USAGE, r"encoder.in_channels=2 but the dataset has 1")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_refuses_an_existing_run_unless_resume_or_overwrite(tmp_path: Path, work: Path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(work / "model.pt", run / "last.pt")
    before = (run / "last.pt").read_bytes()
    result = cli("train", work / "dataset", run, "--config", work / "tiny.yaml", "--quiet", "--device", "cpu")
    assert_clean_failure(result, USAGE, r"already holds a run \(last.pt\); pass --resume to continue it or --overwrite", run)
    assert (run / "last.pt").read_bytes() == before


def test_train_output_below_a_file_fails_cleanly(tmp_path: Path, work: Path):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    result = cli("train", work / "dataset", blocker / "run", "--config", work / "tiny.yaml", "--quiet", "--device", "cpu")
    assert "Traceback" not in result.output and result.exit_code in (USAGE, DATA), result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert str(blocker) in result.output and blocker.read_text() == "x"


def test_train_output_below_a_file_is_a_usage_error(tmp_path: Path, work: Path):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    result = cli("train", work / "dataset", blocker / "run", "--config", work / "tiny.yaml", "--quiet", "--device", "cpu")
    assert_clean_failure(result, USAGE, r"is a file, not a folder", blocker)


# ---- extract's own inputs -------------------------------------------------------------------------------------------

# What extract makes of each damaged file of a folder of audio (the model runs at 8 kHz, receptive field 465).
EXTRACT_EXPECTED = {
    "truncated": (DATA, r"truncated audio file"),
    "truncated-header": (DATA, r"cannot read audio"),
    "zero-bytes": (DATA, r"empty file \(0 bytes\)"),
    "text-as-audio": (DATA, r"cannot read audio \(Format not recognised"),
    "nan": (DATA, r"NaN or infinite samples.*kept in .* \(unfinished\)"),
    "inf": (DATA, r"NaN or infinite samples"),
    "one-sample": (DATA, r"has 1 samples at 16000 Hz .*too short for a single frame"),
    "shorter-than-receptive-field": (DATA, r"has 200 samples at 16000 Hz \(100 at the model's rate\), too short"),
    "other-sample-rate": (0, None),  # resampled to the model's rate
    "non-utf8-name": (DATA, r"the file name is not valid UTF-8; rename it"),
}


@pytest.mark.parametrize("damage", AUDIO_DAMAGE, ids=lambda d: d.name)
def test_extract_damaged_audio(damage, tmp_path: Path, work: Path):
    corpus = make_folder(tmp_path / "audio folder")
    bad = damage.apply(corpus.victim, corpus.rate)
    out = tmp_path / "features"
    result = cli("extract", work / "model.pt", corpus.root, out, "--device", "cpu", "--quiet", "--batch-size", "1")
    code, message = EXTRACT_EXPECTED[damage.name]
    if code == 0:
        assert result.exit_code == 0, result.output
        assert len(FeatureStore.open(out)) == 4
        return
    assert_clean_failure(result, code, message, bad)
    assert_no_complete_store(out)


def test_extract_shorter_than_the_receptive_field_but_with_a_frame(tmp_path: Path, work: Path):
    """300 samples (at the model's 8 kHz) are fewer than the receptive field (465) but give one frame,
    computed with the same zero padding as when the file is processed whole: accepted."""
    corpus = make_folder(tmp_path / "audio")
    corpus.victim.unlink()
    write_audio(corpus.victim, tone(300, RATE), RATE)
    out = tmp_path / "features"
    assert cli("extract", work / "model.pt", corpus.root, out, "--quiet", "--device", "cpu").exit_code == 0
    store = FeatureStore.open(out)
    assert store.frame_lengths[store.utterance_ids.index("bert/bert_1")] == 1


def test_extract_input_problems(tmp_path: Path, work: Path):
    corpus = make_folder(tmp_path / "audio")
    listing = tmp_path / "list.txt"
    model = work / "model.pt"
    cases = [
        ("audio/anna/anna_0.wav\naudio/anna/anna_0.wav\n", r"give the same utterance id 'audio/anna/anna_0'; rename one"),
        ("audio/anna/nothing.wav\n", r"audio file .*nothing.wav \(listed in .*list.txt\) does not exist; correct the list"),
        ("# only a comment\n", r"names no files"),
    ]
    for text, message in cases:
        listing.write_text(text)
        assert_clean_failure(cli("extract", model, listing, tmp_path / "out", "--quiet"), DATA, message)
    listing.write_bytes(b"audio/anna/\xff.wav\n")
    assert_clean_failure(cli("extract", model, listing, tmp_path / "out", "--quiet"), DATA, r"cannot read the audio list", listing)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_failure(cli("extract", model, empty, tmp_path / "out", "--quiet"), DATA, r"holds no audio files", empty)
    assert_clean_failure(cli("extract", model, tmp_path / "nowhere", tmp_path / "out", "--quiet"), DATA, r"does not exist")
    assert_clean_failure(
        cli("extract", model, corpus.victim, tmp_path / "out", "--quiet"), DATA, r"is one audio file; pass its folder"
    )
    assert_no_complete_store(tmp_path / "out")


def test_extract_stereo_data_into_a_mono_model_and_mono_data_into_a_stereo_model(tmp_path: Path, work: Path):
    corpus = make_folder(tmp_path / "audio")
    write_audio(corpus.victim, tone(4000, channels=2))
    result = cli("extract", work / "model.pt", corpus.root, tmp_path / "mono", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output  # averaged to one channel, as documented
    config = CPCConfig.from_dict({**TINY, "encoder": {**TINY["encoder"], "in_channels": 2}})
    stereo_model = tmp_path / "stereo.pt"
    save_checkpoint(stereo_model, {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    result = cli("extract", stereo_model, work / "dataset", tmp_path / "stereo", "--quiet", "--device", "cpu")
    assert_clean_failure(result, DATA, r"has 1 channels but the model takes 2")
    assert_no_complete_store(tmp_path / "stereo")


def test_extract_output_directories(tmp_path: Path, work: Path):
    model, dataset = work / "model.pt", work / "dataset"
    out = tmp_path / "features"
    assert cli("extract", model, dataset, out, "--quiet", "--device", "cpu").exit_code == 0
    before = (out / "features.npy").read_bytes()
    corpus = make_folder(tmp_path / "audio")
    result = cli("extract", model, corpus.root, out, "--quiet", "--device", "cpu")  # another input, same OUT
    assert_clean_failure(result, USAGE, r"holds features of another extraction .*pass --overwrite", out)
    assert (out / "features.npy").read_bytes() == before
    assert cli("extract", model, corpus.root, out, "--quiet", "--device", "cpu", "--overwrite").exit_code == 0
    assert len(FeatureStore.open(out)) == 4

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    for flag in ([], ["--overwrite"]):
        result = cli("extract", model, dataset, foreign, "--quiet", *flag)
        assert_clean_failure(result, USAGE, r"exists and is not a cpcaudio feature store", foreign)
    assert (foreign / "cat.jpg").exists()

    blocker = tmp_path / "a file"
    blocker.write_text("x")
    assert_clean_failure(cli("extract", model, dataset, blocker / "f", "--quiet"), USAGE, r"is a file, not a folder", blocker)
    assert_clean_failure(cli("extract", model, dataset, blocker, "--quiet"), USAGE, r"is a file", blocker)


def test_extract_read_only_output(tmp_path: Path, work: Path):
    with read_only_folder(tmp_path / "locked") as locked:
        result = cli("extract", work / "model.pt", work / "dataset", locked / "features", "--quiet")
        assert_clean_failure(result, USAGE, r"is read-only; choose a writable path", locked)


def test_debug_flag_shows_the_traceback(tmp_path: Path, work: Path):
    result = runner.invoke(app, ["--debug", "extract", str(tmp_path / "nothing.pt"), str(work / "dataset"), str(tmp_path / "o")])
    assert isinstance(result.exception, CheckpointError)
    result = cli("extract", tmp_path / "nothing.pt", work / "dataset", tmp_path / "o")
    assert result.exit_code == DATA and not isinstance(result.exception, CheckpointError)


def test_features_of_a_good_run_are_finite(tmp_path: Path, work: Path):
    """Sanity for the cases above that succeed: the tiny model gives finite features."""
    out = tmp_path / "features"
    assert cli("extract", work / "model.pt", work / "dataset", out, "--quiet", "--device", "cpu").exit_code == 0
    assert np.isfinite(np.asarray(FeatureStore.open(out).all_features)).all()
