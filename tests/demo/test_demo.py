"""The demo end to end at its reduced size (``--tiny``) and its resume."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from cpcaudio.cli.main import app
from cpcaudio.data import PreparedDataset
from cpcaudio.demo import PRESETS, DemoEvent, run_demo
from cpcaudio.demo.plan import probe_utterances
from cpcaudio.errors import UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FEATURES = ("model", "random", "mfcc", "logmel")
COLUMNS = {"phone/frame", "speaker/utterance", "speaker/window", "speaker/window-mean"}
ABX_COLUMNS = ("within spk / within ctx", "across spk / within ctx", "within spk / any ctx", "across spk / any ctx")


class _StopAt:
    """A progress callback that interrupts the demo when ``stage`` starts (a stand-in for Ctrl-C)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.events: list[DemoEvent] = []

    def __call__(self, event: DemoEvent) -> None:
        self.events.append(event)
        if event.stage == self.stage and event.kind == "start":
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """One tiny demo, interrupted at the speaker probe, then resumed to the end: (out_dir, first, result)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    first = _StopAt("probe-speaker")
    with pytest.raises(KeyboardInterrupt):
        run_demo(out, size="tiny", device="cpu", progress=first)
    events: list[DemoEvent] = []
    result = run_demo(out, size="tiny", device="cpu", progress=events.append)
    return out, first.events, events, result


def test_tiny_demo_writes_every_report_file_with_numbers(tiny_demo):
    out, _, _, result = tiny_demo
    assert result.report_markdown == out / "report.md" and result.report_html == out / "report.html"
    for task in ("phone", "speaker"):
        report = json.loads((out / f"probe_{task}" / "results.json").read_text())
        assert {r["features"] for r in report["results"]} == set(FEATURES)
    assert set(result.accuracy) == COLUMNS
    for column, row in result.accuracy.items():
        assert set(row) == set(FEATURES), column
        assert all(0.0 <= value <= 1.0 for value in row.values()), row

    markdown = result.report_markdown.read_text()
    for column in ("phone/frame", "speaker/window", "speaker/window-mean"):
        for kind in FEATURES:
            assert f"{100 * result.accuracy[column][kind]:.1f}%" in markdown, (column, kind)
    assert "Results" in markdown and "majority class" in markdown
    # The two window columns are labelled; MFCC and log-mel average the window in both: one fit, marked.
    header = next(line for line in markdown.splitlines() if line.startswith("| features"))
    assert "s window, last frame)" in header and "s window, mean)" in header
    for kind in ("mfcc", "logmel"):
        assert result.accuracy["speaker/window-mean"][kind] == result.accuracy["speaker/window"][kind]
        assert f"{100 * result.accuracy['speaker/window-mean'][kind]:.1f}%*" in markdown
    assert "*: MFCC, log-mel in" in markdown and "the same probe, fitted once" in markdown

    page = result.report_html.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    expected = {"figures/training_curves.png", "figures/probe_accuracy.png", "figures/utterance_map.png",
                "probe_phone/confusion_frame.png", "probe_speaker/confusion_window.png",
                "probe_speaker/confusion_window-mean.png", "figures/abx_pnmi.png"}
    assert expected <= set(images)
    for image in images:
        assert (out / image).read_bytes()[:8] == PNG_MAGIC, image
    assert {path.relative_to(out).as_posix() for path in result.figures} == set(images)


def test_tiny_demo_reports_abx_and_pnmi_of_the_model_and_the_baselines(tiny_demo):
    out, _, _, result = tiny_demo
    assert tuple(result.abx) == ABX_COLUMNS
    for column, row in result.abx.items():
        assert set(row) == set(FEATURES), column
        assert all(0.0 <= value <= 1.0 for value in row.values()), (column, row)
    assert set(result.pnmi) == set(FEATURES) and all(0.0 <= v <= 1.0 for v in result.pnmi.values())
    assert result.abx["within spk / any ctx"]["mfcc"] < 0.25  # far below chance (0.5) on synthetic phones

    abx = json.loads((out / "abx" / "results.json").read_text())
    assert abx["settings"]["max_size_group"] == PRESETS["tiny"].abx_max_size_group
    units = json.loads((out / "units" / "results.json").read_text())
    assert units["clusters"] == result.plan.units_clusters == PRESETS["tiny"].units_clusters
    assert {row["features"] for row in units["results"]} == set(FEATURES)
    assert (out / "units" / "model" / "kmeans.npz").is_file() and (out / "units" / "mfcc" / "units.txt").is_file()

    markdown = result.report_markdown.read_text()
    section = markdown[markdown.index("## ABX discriminability and k-means units"):markdown.index("## Pretraining")]
    for column in ABX_COLUMNS:
        assert f"ABX {column}" in section
        for kind in FEATURES:
            assert f"{100 * result.abx[column][kind]:.1f}%" in section, (column, kind)
    for kind in FEATURES:
        assert f"{result.pnmi[kind]:.3f}" in section, kind
    assert "ABX error" in result.table() and "PNMI" in result.table()


def test_interrupted_demo_resumes_where_it_stopped(tiny_demo):
    out, first_events, events, result = tiny_demo
    started_first = [e.stage for e in first_events if e.kind == "start"]
    assert started_first == ["data", "train", "extract", "probe-phone", "probe-speaker"]
    notes = [e.message for e in first_events + events if e.message and "holds no run yet" in e.message]
    assert notes == []  # the demo's own resume of a fresh run says nothing about --resume
    skipped = [e.stage for e in events if e.kind == "skip"]
    assert skipped == ["data", "train", "extract", "probe-phone"] == result.skipped
    assert [e.stage for e in events if e.kind == "end"] == ["probe-speaker", "abx", "report"]
    assert {e.count for e in events} == {7}
    state = json.loads((out / "demo.json").read_text())
    assert set(state["stages"]) == {"data", "train", "extract", "probe-phone", "probe-speaker", "abx", "report"}
    train_records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in train_records) == result.plan.steps == PRESETS["tiny"].max_steps


def test_rerun_skips_everything_and_gives_the_same_numbers(tiny_demo):
    out, _, _, result = tiny_demo
    again = run_demo(out, size="tiny", device="cpu")
    assert again.skipped == ["data", "train", "extract", "probe-phone", "probe-speaker", "abx"]
    assert again.accuracy == result.accuracy
    assert again.abx == result.abx and again.pnmi == result.pnmi


def test_abx_stage_redoes_only_the_report_it_lacks(tiny_demo):
    out, _, _, result = tiny_demo
    abx_written = (out / "abx" / "results.json").stat().st_mtime_ns
    (out / "units" / "results.json").unlink()  # as if interrupted after ABX, during the units
    events: list[DemoEvent] = []
    again = run_demo(out, size="tiny", device="cpu", progress=events.append)
    assert [e.stage for e in events if e.kind == "end"] == ["abx", "report"]
    assert (out / "abx" / "results.json").stat().st_mtime_ns == abx_written
    assert again.pnmi == result.pnmi and again.abx == result.abx  # seeded: the same units again


def test_other_settings_into_the_same_folder_are_refused(tiny_demo):
    out = tiny_demo[0]
    with pytest.raises(UsageError, match="other settings.*seed"):
        run_demo(out, size="tiny", device="cpu", seed=1)


def test_cli_prints_the_table_and_refuses_a_foreign_folder(tiny_demo, tmp_path):
    out = tiny_demo[0]
    runner = CliRunner()
    done = runner.invoke(app, ["demo", "--tiny", "--device", "cpu", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "skipped" in done.output and "CPC (trained)" in done.output and "report.html" in done.output
    assert "ABX error" in done.output and "within/any" in done.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = runner.invoke(app, ["demo", "--tiny", "--out", str(foreign)])
    assert refused.exit_code == 2
    assert "holds no demo" in refused.output and (foreign / "notes.txt").read_text() == "mine"


def test_phone_probe_subset_keeps_every_test_utterance_and_every_speaker(tiny_demo):
    dataset = PreparedDataset.open(tiny_demo[0] / "data")
    train_seconds = float(np.sum(dataset.lengths[dataset.indices("train")])) / dataset.sample_rate
    budget = train_seconds / 3
    chosen = probe_utterances(dataset, "phone", budget)
    assert chosen is not None
    assert set(dataset.indices("test").tolist()) <= set(chosen)
    chosen_train = [i for i in chosen if dataset.splits[i] == "train"]
    seconds = float(np.sum(dataset.lengths[chosen_train])) / dataset.sample_rate
    assert seconds <= budget + float(dataset.lengths.max()) / dataset.sample_rate
    assert {dataset.speakers[i] for i in chosen_train} == set(dataset.speakers)
    assert probe_utterances(dataset, "phone", 10 * train_seconds) is None
    assert probe_utterances(dataset, "speaker", budget) is None


def test_steps_follow_the_time_budget():
    preset = PRESETS["default"]
    assert preset.steps_for(1.0) == preset.min_steps
    ten, twenty = preset.steps_for(10.0), preset.steps_for(20.0)
    assert preset.min_steps < ten < twenty
    assert twenty - ten == pytest.approx(600 / preset.seconds_per_step, abs=1)


def test_bad_arguments_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="size"):
        run_demo(tmp_path / "a", size="huge")
    with pytest.raises(UsageError, match="minutes"):
        run_demo(tmp_path / "b", minutes=-1)
    with pytest.raises(UsageError, match="device"):
        run_demo(tmp_path / "c", device="tpu")


def test_demo_runs_on_a_prepared_dataset_given_with_data(tiny_demo, tmp_path):
    data = tiny_demo[0] / "data"
    result = run_demo(tmp_path / "on_data", data=data, size="tiny", device="cpu")
    assert result.dataset == data and not (tmp_path / "on_data" / "data").exists()
    assert result.plan.data == str(data.resolve()) and result.plan.tasks == ["phone", "speaker"]
    assert set(result.accuracy) == COLUMNS
    assert str(data.resolve()) in result.report_markdown.read_text()
    assert tuple(result.abx) == ABX_COLUMNS and set(result.pnmi) == set(FEATURES)


def test_time_series_data_is_refused_with_a_pointer(tmp_path):
    pytest.importorskip("aeon")
    from cpcaudio.data import prepare

    prepare("uea", "BasicMotions", tmp_path / "basicmotions", sample_rate=10)
    with pytest.raises(UsageError, match="time series.*--task class"):
        run_demo(tmp_path / "out", data=tmp_path / "basicmotions", size="tiny", device="cpu")
    assert not (tmp_path / "out").exists()
