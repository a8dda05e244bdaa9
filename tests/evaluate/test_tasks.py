"""The task table: every probe task is one class registered in ``TASKS``, and run_probe, its baselines, its
memory check, its report notes and the CLI all follow the table (a new task needs nothing else)."""

from __future__ import annotations

import re

import pytest
from helpers import tiny_config
from typer.testing import CliRunner

from cpcaudio.cli.main import app
from cpcaudio.errors import ResourceError, UsageError
from cpcaudio.evaluate import TASKS, ProbeTask, get_task, parse_baselines, run_probe
from cpcaudio.evaluate.problems import UTTERANCE, utterance_problem
from cpcaudio.evaluate.tasks import ClassTask, task_help
from cpcaudio.progress import Progress


class ClassMeanTask(ProbeTask):
    """The docs' example task: FSDD digits or UEA classes from mean-pooled utterances only."""

    name = "class-mean"
    summary = "per utterance, mean-pooled"
    protocols = (UTTERANCE,)
    unsupported_baselines = {"random": "class-mean runs without the random baseline"}

    def utterance_labels(self, dataset, label):
        return ClassTask().utterance_labels(dataset, label)

    def supports(self, dataset):
        return bool(dataset.utterance_label_names)

    def build_problems(self, source, inputs):
        return [utterance_problem(UTTERANCE, inputs.utterance_frames(source), source.utterance_pooling, inputs)]


class GreedyTask(ClassMeanTask):
    name = "greedy"

    def check_memory(self, dataset, train, test, config, max_train_frames, device):
        raise ResourceError(f"{len(train) + len(test)} utterances would not fit")


@pytest.fixture(scope="module")
def gunpoint(tmp_path_factory):
    from cpcaudio.data import prepare

    path = tmp_path_factory.mktemp("tasks") / "GunPoint"
    prepare("uea", "GunPoint", path)
    return path


def test_the_table_names_every_task_for_run_probe_and_the_cli():
    assert list(TASKS) == ["phone", "speaker", "class"]
    for name, task in TASKS.items():
        assert get_task(name) is task and task.name == name
        assert f"{name} ({task.summary})" in task_help()
        assert task.protocol_notes(1.28).keys() == {protocol.name for protocol in task.protocols}
    with pytest.raises(UsageError, match=r"unknown task 'words'; choose one of phone, speaker, class"):
        get_task("words")
    result = CliRunner().invoke(app, ["probe", "--help"])
    assert result.exit_code == 0
    help_text = re.sub(r"[\s│]+", " ", result.output)  # (rich draws the options in a box)
    for task in TASKS.values():
        assert f"{task.name} ({task.summary})" in help_text


def test_tasks_declare_their_baselines():
    assert parse_baselines(None, True, "phone") == ["mfcc", "logmel", "random"]
    assert parse_baselines(None, False, "phone") == ["random"]  # raw makes no sense per frame
    assert parse_baselines(None, False, "class") == ["raw", "random"]
    with pytest.raises(UsageError, match="the raw baseline has one frame per sample"):
        parse_baselines("mfcc,raw", True, "phone")


def test_a_new_task_is_one_class_and_one_table_entry(gunpoint, monkeypatch):
    from cpcaudio.data import PreparedDataset
    from cpcaudio.evaluate.baselines import random_model

    monkeypatch.setitem(TASKS, "class-mean", ClassMeanTask())
    assert "class-mean (per utterance, mean-pooled)" in task_help()
    assert parse_baselines(None, False, "class-mean") == ["raw"]
    with pytest.raises(UsageError, match="without the random baseline"):
        parse_baselines("random", False, "class-mean")
    dataset = PreparedDataset.open(gunpoint)
    stride_one = {"in_channels": 1, "kernel_sizes": [3, 3, 3], "strides": [1, 1, 1]}
    model = random_model(tiny_config(encoder=stride_one, data={"sample_rate": int(dataset.sample_rate)}), seed=0)
    events: list[Progress] = []
    report = run_probe(dataset, "class-mean", model=model, device="cpu", progress=events.append)
    assert report["task"] == "class-mean" and report["protocols"] == {"utterance": UTTERANCE.note}
    assert [(r["features"], r["protocol"]) for r in report["results"]] == [("model", "utterance"), ("raw", "utterance")]
    raw = report["results"][1]
    assert raw["accuracy"] > raw["majority_class_accuracy"] + 0.2, raw["accuracy"]
    assert raw["counts"]["test_samples"] == len(dataset.indices("test"))
    assert all(isinstance(event, Progress) for event in events)
    finished = {event.stage for event in events if event.total is not None and event.done == event.total}
    assert {"features: model", "features: raw", "probe: model / utterance", "probe: raw / utterance"} <= finished


def test_the_task_memory_check_runs_before_any_work(gunpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "greedy", GreedyTask())
    events: list[Progress] = []
    with pytest.raises(ResourceError, match="utterances would not fit"):
        run_probe(gunpoint, "greedy", device="cpu", out=tmp_path / "report", progress=events.append)
    assert events == [] and not (tmp_path / "report" / "results.json").exists()
    result = CliRunner().invoke(app, ["probe", str(gunpoint), "--task", "greedy", "--out", str(tmp_path / "o")])
    assert result.exit_code == ResourceError.exit_code and "utterances would not fit" in result.output
