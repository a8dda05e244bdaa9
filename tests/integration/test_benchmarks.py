"""The benchmark scripts run in their tiny sizes and print parseable JSON (no timing is asserted), and the
analytic FLOP count agrees with torch's own FLOP counter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import shared_data

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import train_step  # noqa: E402

TRAIN_STEP_KEYS = {
    "seconds_per_step",
    "audio_seconds_per_second",
    "flop_per_step",
    "achieved_gflops",
    "mfu",
    "minor_faults_per_step",
}


def run_script(*arguments: str, timeout: float = 240) -> subprocess.CompletedProcess:
    # One thread: the suite may share the cores with other work, where several OpenMP threads spin.
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=environment
    )


def records_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_run_all_tiny_prints_one_json_line_per_benchmark():
    completed = run_script("benchmarks/run_all.py", "--tiny")
    assert completed.returncode == 0, completed.stderr[-2000:]
    records = records_of(completed.stdout)
    expected = ["train_step", "extract", "loader", "probe", "streaming", "prepare_memory", "extract_memory"]
    assert [record["benchmark"] for record in records] == expected
    # Stdout is exactly the JSON lines: the human summaries went to stderr.
    assert len(completed.stdout.strip().splitlines()) == len(expected)

    by_name = {record["benchmark"]: record for record in records}
    assert by_name["streaming"]["config"] == "tiny" and by_name["streaming"]["frames"] > 0
    assert by_name["prepare_memory"]["tiny"] and len(by_name["prepare_memory"]["files"]) == 2
    assert by_name["extract_memory"]["config"] == "tiny" and len(by_name["extract_memory"]["runs"]) == 2

    train = next(record for record in records if record["benchmark"] == "train_step")
    assert train["matmul_gflops"] > 0
    (result,) = train["results"]
    assert TRAIN_STEP_KEYS <= set(result)
    assert result["config"] == "tiny" and len(result["seconds_per_step_all"]) == 2
    assert result["flop_per_step"] == common.train_step_flops(
        train_step.build_config(train_step.TINY, None), result["batch_size"], result["window_size"]
    ).total


def test_train_step_profile_mode_prints_the_op_table():
    completed = run_script("benchmarks/train_step.py", "--tiny", "--profile", "--steps", "1", "--threads", "1")
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "Self CPU" in completed.stderr  # the torch.profiler table
    (record,) = records_of(completed.stdout)
    shares = record["results"][0]["self_time_share"]
    assert "conv" in shares and sum(shares.values()) == pytest.approx(1.0, abs=0.01)


def test_reference_mode_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    completed = run_script("benchmarks/reference_cpc_audio.py", "--reference", str(tmp_path), "--tiny")
    assert completed.returncode == 2
    assert "not a CPC_audio checkout" in completed.stderr and "Traceback" not in completed.stderr
    assert completed.stdout == ""


@pytest.mark.skipif(
    not os.environ.get("CPCAUDIO_REFERENCE"), reason="set CPCAUDIO_REFERENCE to a CPC_audio checkout to run"
)
def test_reference_side_by_side_tiny():
    checkout = os.environ["CPCAUDIO_REFERENCE"]
    completed = run_script("benchmarks/reference_cpc_audio.py", "--reference", checkout, "--tiny")
    assert completed.returncode == 0, completed.stderr[-2000:]
    (record,) = records_of(completed.stdout)
    assert set(record["results"]) == {"cpcaudio", "cpc_audio"} and record["speedup"] > 0


QUALITY_COLUMNS = ["phone", "speaker utterance", "speaker window (last)", "speaker window (mean)"]


def test_quality_tiny_writes_the_table_and_the_json_record(tmp_path):
    """Not in run_all.py (20 minutes of training at full size, and it reads ../shared/data)."""
    for name in ("timit_sample", "tts_festival", "fsdd"):
        shared_data(name)
    out = tmp_path / "quality.json"
    completed = run_script("benchmarks/quality.py", "--tiny", "--threads", "1", "--work", str(tmp_path / "work"),
                           "--json", str(out), "--set", "optim.learning_rate=1e-3")
    assert completed.returncode == 0, completed.stderr[-3000:]
    (record,) = records_of(completed.stdout)
    assert json.loads(out.read_text()) == record and record["benchmark"] == "quality"
    assert record["settings"]["tiny"] and record["settings"]["steps"] == 3
    assert record["settings"]["set"][-1] == "optim.learning_rate=1e-3"
    assert record["config"]["optim"]["learning_rate"] == 1e-3 and record["config"]["encoder"]["hidden_dim"] == 32
    assert record["steps"] == 3 and record["train_wall_seconds"] > 0
    for split in ("train", "valid"):
        assert record["final"][split]["step"] == 3 and 0.0 <= record["final"][split]["step1_accuracy"] <= 1.0
    curve = record["curve"]
    assert curve["chance_loss"] == pytest.approx(2.1972, abs=1e-4)  # ln(8 + 1)
    assert [p["step"] for p in curve["train"]] == [1, 2, 3]
    assert curve["plateau_exit_step"] in (None, 1, 2, 3)
    assert record["columns"] == QUALITY_COLUMNS and set(record["table"]) == {"model", "mfcc", "logmel", "random"}
    for features, row in record["table"].items():
        assert all(0.0 <= row[column] <= 1.0 for column in QUALITY_COLUMNS), features
    for features in ("mfcc", "logmel"):  # mean-pooled: the two window columns are one fit
        assert record["table"][features]["same_as"] == {"speaker window (mean)": "window"}
    assert record["table"]["model"]["same_as"] == {} and record["layer"] == "context"
    # speaker-disjoint phones (dr1, dr2 -> dr4), 7/3-style speaker split (4 sentences: 3 train / 1 test)
    assert record["data"]["timit_phone"]["splits"] == {"train": 8, "test": 4}
    assert record["data"]["timit_speaker"]["splits"] == {"train": 9, "test": 3}
    assert record["data"]["mix"]["speakers"] == 5  # 3 TIMIT speakers, 1 festival voice, 1 FSDD speaker
    assert len(record["commit"]) == 40 or record["commit"] == "unknown"
    assert record["machine"]["threads"] == 1 and record["machine"]["cores"] >= 1 and record["machine"]["torch"]
    for column in QUALITY_COLUMNS:
        assert column in completed.stderr
    assert "MFCC" in completed.stderr and "random init" in completed.stderr and "plateau" in completed.stderr

    again = run_script("benchmarks/quality.py", "--tiny", "--threads", "1", "--work", str(tmp_path / "work"),
                       "--set", "optim.learning_rate=1e-3", "--reuse-run")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in again.stderr and "reusing" in again.stderr
    assert records_of(again.stdout)[0]["table"] == record["table"]  # the same run probed again, seeded


@pytest.mark.parametrize("normalization", ["batch", "channel"])
def test_analytic_flops_match_torch_flop_counter(normalization):
    """Encoder and heads exactly, the GRU within 1% (torch skips the product with the zero initial state
    in backward); the loss is not compared: the dense scoring does more than the analytic count by design."""
    from torch.utils.flop_counter import FlopCounterMode

    from cpcaudio import CPCModel
    from cpcaudio.model.cpu_kernels import fast_paths

    config = train_step.build_config(train_step.TINY, normalization)
    batch, samples = 2, 3200
    model = CPCModel(config)
    # The counter knows standard ops only: run the plain formulation of every layer.
    with fast_paths(False), FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, 1, samples)).loss.backward()
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    expected = common.train_step_flops(config, batch, samples)
    assert counts["CPCModel.encoder"] == expected.encoder
    assert counts["CPCModel.heads"] == expected.heads
    assert counts["CPCModel.context_network"] == pytest.approx(expected.context, rel=0.01)
    # Paper config: the 166 GFLOP per step (16.2 GFLOP per audio second), 90% in the convolutions.
    paper = common.train_step_flops(train_step.build_config(train_step.PAPER, None), 8, 20480)
    assert paper.total / 1e9 == pytest.approx(166.8, abs=0.1)
    assert 0.89 < paper.encoder / paper.total < 0.90


def test_quality_plateau_is_judged_on_info_nce_when_an_utterance_loss_is_added():
    import quality

    chance = quality.math.log(129)
    records = [  # total loss above chance, InfoNCE part 0.2 below it from step 20 on
        {"kind": "train", "step": 10, "loss": chance + 1.0, "utterance_loss": 1.0, "accuracy": [0.01]},
        {"kind": "train", "step": 20, "loss": chance + 0.8, "utterance_loss": 2.0, "accuracy": [0.05]},
    ]
    with_weight = quality.curve_summary(records, 128, utterance_weight=0.5)
    assert with_weight["plateau_exit_step"] == 20  # InfoNCE: chance + 0.8 - 0.5 * 2.0 = chance - 0.2
    assert with_weight["train"][-1]["info_nce"] == pytest.approx(round(chance - 0.2, 4))
    assert quality.curve_summary(records, 128)["plateau_exit_step"] is None  # read as plain InfoNCE
