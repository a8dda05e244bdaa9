"""Round 2 of the training faults (issue 15): divergence, two writers, SIGINT/SIGTERM, ``--resume`` with
no run, an unrelated output folder, windows longer than the utterances, a NaN learning rate, and a
converted CPC_audio checkpoint that cannot be trained further.

Every failure has the contract of ``badfiles.assert_clean_failure``: its exit code, one ``error:`` line
naming the file or key and the fix, no traceback, and no checkpoint that looks complete. The signal and
lock cases run real ``cpcaudio train`` processes.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from badfiles import assert_clean_failure, error_lines, tiny_run_sections, prepare_two_speaker_tones
from cpcaudio.cli.main import app
from cpcaudio.config import CPCConfig
from cpcaudio.data import PreparedDataset
from cpcaudio.errors import TrainingInterrupted
from cpcaudio.model import CPCModel
from cpcaudio.train import plan, read_metrics, train
from cpcaudio.train.checkpoint import load_checkpoint, save_checkpoint
from cpcaudio.train.guards import resume_command, stop_request
from cpcaudio.train.loop import _Trainer

RATE = 8000
USAGE, DATA, DIVERGED = 2, 3, 5
TINY = tiny_run_sections(RATE)
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
runner = CliRunner()


def cli(*arguments: object):
    return runner.invoke(app, [str(a) for a in arguments])


def command(*arguments: object) -> list[str]:
    return [sys.executable, "-m", "cpcaudio.cli.main", *[str(a) for a in arguments]]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny 8 kHz dataset (6 utterances of 0.4 s) and its two-step config file."""
    root = tmp_path_factory.mktemp("training")
    prepare_two_speaker_tones(root, RATE)
    CPCConfig.from_dict(TINY).save(root / "tiny.yaml")
    return root


def base(work: Path, out: Path, *extra: object) -> list[object]:
    return ["train", work / "dataset", out, "--config", work / "tiny.yaml", "--quiet", "--device", "cpu", *extra]


# ---- 1. divergence ------------------------------------------------------------------------------------------------


def test_a_huge_learning_rate_stops_with_exit_5_and_writes_no_checkpoint(tmp_path: Path, work: Path):
    out = tmp_path / "run"
    result = cli(*base(work, out, "--set", "optim.learning_rate=1e30", "--steps", "4"))
    line = assert_clean_failure(
        result, DIVERGED, r"training diverged at step \d: the training loss became NaN or infinite; the likely cause "
        r"is the learning rate .*lower it .*--overwrite", "optim.learning_rate=1e+30",
    )  # fmt: skip
    assert "no checkpoint had been written yet" in line
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def _poison_weights_at(monkeypatch, bad_step: int, what: str = "weights") -> None:
    """Make step ``bad_step`` diverge: its update leaves a NaN weight, or its loss is NaN."""
    original = _Trainer._train_step

    def train_step(self, network, model, *arguments):
        loss, grad_norm = original(self, network, model, *arguments)
        step = arguments[4]
        if step == bad_step:
            if what == "weights":
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("nan")
            else:
                loss = loss * float("nan")
        return loss, grad_norm

    monkeypatch.setattr(_Trainer, "_train_step", train_step)


@pytest.mark.parametrize("what", ["weights", "loss"])
def test_divergence_keeps_the_last_finite_checkpoint_and_never_saves_a_non_finite_one(
    monkeypatch, tmp_path: Path, work: Path, what: str
):
    out = tmp_path / "run"
    _poison_weights_at(monkeypatch, 3, what)
    result = cli(*base(work, out, "--steps", "6", "--set", "train.checkpoint_every=1"))
    expected = "the weights became NaN" if what == "weights" else "the training loss became NaN"
    line = assert_clean_failure(result, DIVERGED, rf"training diverged at step 3: {expected}", out / "last.pt")
    assert "(step 2) is the last finite checkpoint" in line
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last["step"] == 2 and best["step"] == 2  # validate_every=2 in the tiny config
    for record in (last, best):
        assert all(bool(torch.isfinite(t).all()) for t in record["model"].values())
    assert max(r["step"] for r in read_metrics(out, "train")) == 3  # the diverged step is logged, then it stops


def test_a_nan_validation_loss_is_divergence_and_not_a_best_checkpoint(monkeypatch, tmp_path: Path, work: Path):
    import cpcaudio.train.loop as loop

    original = loop.validate

    def validate(*arguments, **options):
        record = original(*arguments, **options)
        return {**record, "loss": float("nan")} if record["step"] == 4 else record

    monkeypatch.setattr(loop, "validate", validate)
    out = tmp_path / "run"
    result = cli(*base(work, out, "--steps", "6"))
    assert_clean_failure(result, DIVERGED, r"training diverged at step 4: the validation loss became NaN", out / "last.pt")
    assert load_checkpoint(out / "best.pt")["step"] == load_checkpoint(out / "last.pt")["step"] == 2
    assert [r.get("best") for r in read_metrics(out, "valid")] == [True, False]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_learning_rate_is_a_config_error(tmp_path: Path, work: Path, value: str):
    out = tmp_path / "run"
    result = cli(*base(work, out, "--set", f"optim.learning_rate={value}"))
    assert_clean_failure(result, USAGE, rf"must be a finite number > 0, got {value}", "optim.learning_rate")
    assert not out.exists()


# ---- 2. one writer per run directory ---------------------------------------------------------------------------


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"{what}: the run ended early: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(0.02)


def _train_steps(out: Path) -> int:
    return len(read_metrics(out, "train"))


def test_a_second_train_into_a_running_run_directory_is_refused_with_the_holders_pid(tmp_path: Path, work: Path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        command(*base(work, out, "--steps", "100000", "--set", "train.log_every=1")),
        env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: _train_steps(out) >= 1, first, what="first run")
        second = subprocess.run(
            command(*base(work, out, "--resume")), env=ENVIRONMENT, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == USAGE, second.stderr
        assert "Traceback" not in second.stderr
        lines = error_lines(second.stderr)
        assert len(lines) == 1, second.stderr
        assert str(out) in lines[0] and f"pid {first.pid}" in lines[0] and "another train" in lines[0]
        assert first.poll() is None  # the first run goes on, undisturbed
        assert (out / ".lock").read_text().strip() == str(first.pid)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    # The lock file stays behind (unlocked) and counts as the run's own file: the run resumes, and a
    # new run may start there with --overwrite.
    assert (out / ".lock").exists()
    assert cli(*base(work, out, "--resume", "--steps", str(load_checkpoint(out / "last.pt")["step"] + 1))).exit_code == 0
    assert cli(*base(work, out, "--overwrite", "--steps", "1")).exit_code == 0


# ---- 3. SIGINT and SIGTERM ----------------------------------------------------------------------------------------

STEPS = 40


def _train_state(run: Path) -> dict:
    record = load_checkpoint(run / "last.pt")
    metrics = read_metrics(run)
    return {
        "step": record["step"],
        "model": record["model"],
        "optimizer": record["optimizer"]["state"],
        "train_losses": [(m["step"], m["loss"]) for m in metrics if m["kind"] == "train"],
        "valid_losses": [(m["step"], m["loss"]) for m in metrics if m["kind"] == "valid"],
    }


def _interrupt(arguments: list[str], out: Path, number: int, after_steps: int) -> tuple[str, int]:
    """Run ``arguments``; once ``after_steps`` steps are logged, send ``number``; returns (stderr, exit code)."""
    process = subprocess.Popen(arguments, env=ENVIRONMENT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _train_steps(out) >= after_steps, process, what=f"before {signal.Signals(number).name}")
        process.send_signal(number)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return stderr, process.returncode


def _continue_command(stderr: str, code: int, name: str) -> tuple[int, list[str]]:
    """Check the interruption's one line; returns (the step saved, the command it prints)."""
    assert "Traceback" not in stderr and not error_lines(stderr), stderr
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1, stderr
    assert code == {"SIGINT": 130, "SIGTERM": 143}[name], stderr
    words = lines[0].split()
    step = int(words[words.index("step") + 1])
    assert f"stopped by {name} at step {step} of {STEPS}; saved" in lines[0], lines[0]
    shown = lines[0].split("continue with: ", 1)[1]
    arguments = shlex.split(shown)
    assert arguments[:2] == ["cpcaudio", "train"] and arguments[-1] == "--resume", shown
    return step, [sys.executable, "-m", "cpcaudio.cli.main", *arguments[1:]]


def test_sigterm_and_sigint_save_the_step_reached_and_print_the_command_that_continues_exactly(tmp_path: Path, work: Path):
    arguments = base(work, tmp_path / "OUT", "--steps", STEPS, "--set", "train.log_every=1", "--set", "train.validate_every=10")
    reference = tmp_path / "reference"
    done = subprocess.run(command(*base(work, reference, *arguments[8:])), env=ENVIRONMENT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "OUT"

    stderr, code = _interrupt(command(*arguments), out, signal.SIGTERM, after_steps=3)
    step, continued = _continue_command(stderr, code, "SIGTERM")
    assert 3 <= step < STEPS and load_checkpoint(out / "last.pt")["step"] == step
    assert not list(out.glob(".*.tmp"))

    stderr, code = _interrupt(continued, out, signal.SIGINT, after_steps=step + 3)
    second, again = _continue_command(stderr, code, "SIGINT")
    assert step < second < STEPS and load_checkpoint(out / "last.pt")["step"] == second
    assert again == continued

    finished = subprocess.run(again, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    state, expected = _train_state(out), _train_state(reference)
    assert state["step"] == expected["step"] == STEPS
    for name, tensor in expected["model"].items():
        assert torch.equal(state["model"][name], tensor), name
    for index, values in expected["optimizer"].items():
        for key, tensor in values.items():
            assert torch.equal(torch.as_tensor(state["optimizer"][index][key]), torch.as_tensor(tensor)), (index, key)
    assert state["train_losses"] == expected["train_losses"]
    assert state["valid_losses"] == expected["valid_losses"]


def test_a_stop_requested_before_the_first_step_saves_nothing_and_says_so(tmp_path: Path, work: Path):
    out = tmp_path / "run"
    with stop_request() as stop:
        stop.request(signal.SIGTERM)
        with pytest.raises(TrainingInterrupted) as error:
            train(work / "dataset", out, CPCConfig.from_dict(TINY), command=f"cpcaudio train {work / 'dataset'} {out}")
    assert error.value.exit_code == 143
    assert "stopped by SIGTERM before step 1 of 2; nothing new to save (no checkpoint was written yet)" in str(error.value)
    assert str(error.value).endswith(f"continue with: cpcaudio train {work / 'dataset'} {out} --resume")
    assert not (out / "last.pt").exists()


def test_the_same_signal_twice_at_once_is_one_request_and_later_it_stops_at_once(monkeypatch):
    before = signal.getsignal(signal.SIGINT)
    with stop_request() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a terminal's Ctrl-C reaching torchrun and its workers
        assert stop.signum == signal.SIGINT
        monkeypatch.setattr("cpcaudio.train.guards.DUPLICATE_SECONDS", 0.0)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before  # put back
    assert stop.signum is None


def test_the_continue_command_adds_resume_and_drops_overwrite():
    assert resume_command("cpcaudio train 'my data' out --overwrite --steps 9") == "cpcaudio train 'my data' out --steps 9 --resume"
    assert resume_command("cpcaudio train d o --resume") == "cpcaudio train d o --resume"
    assert resume_command("cpcaudio demo out") is None and resume_command("python script.py") is None


def test_last_pt_is_also_written_every_checkpoint_minutes(tmp_path: Path, work: Path):
    events = []
    config = CPCConfig.from_dict(TINY).with_overrides(
        ["train.max_steps=6", "train.validate_every=100", "train.checkpoint_minutes=0.000001"]
    )
    train(work / "dataset", tmp_path / "run", config, progress=events.append)
    saved = [event.step for event in events if event.kind == "checkpoint" and event.message.endswith("last.pt")]
    assert saved == [1, 2, 3, 4, 5, 6]  # every step: the clock is always due
    assert CPCConfig().train.checkpoint_minutes == 10


# ---- 4. --resume with no run ------------------------------------------------------------------------------------


def test_resume_with_no_run_says_it_starts_a_new_one(tmp_path: Path, work: Path):
    out = tmp_path / "run"
    result = cli(*[a for a in base(work, out, "--resume") if a != "--quiet"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "holds no run yet" in line]
    assert notes == [f"--resume: {out} holds no run yet (no last.pt); starting a new run at step 0"]
    assert load_checkpoint(out / "last.pt")["step"] == 2


# ---- 5. an unrelated folder ----------------------------------------------------------------------------------------


def test_train_refuses_an_unrelated_non_empty_folder(tmp_path: Path, work: Path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("keep me")
    (out / "figures").mkdir()
    for extra in ((), ("--resume",)):
        result = cli(*base(work, out, *extra))
        assert_clean_failure(result, USAGE, r"is not empty and holds no cpcaudio run \('chapter1.tex' and 1 more\); "
                             r"choose a new or empty folder, or pass --overwrite", out)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex", "figures"]  # not even a lock file
    assert cli(*base(work, out, "--overwrite")).exit_code == 0
    assert (out / "chapter1.tex").read_text() == "keep me" and (out / "last.pt").is_file()


def test_the_remains_of_a_run_killed_before_its_first_checkpoint_are_not_foreign(tmp_path: Path, work: Path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "command.txt", "metrics.jsonl", ".lock", ".last.pt.abc123.tmp"):
        (out / name).write_text("")
    (out / "tensorboard").mkdir()
    assert cli(*base(work, out)).exit_code == 0
    assert not (out / ".last.pt.abc123.tmp").exists()


def test_a_failed_start_leaves_no_new_folder_behind(tmp_path: Path, work: Path):
    out = tmp_path / "new"
    result = cli(*base(work, out, "--set", "data.sample_rate=16000"))
    assert_clean_failure(result, USAGE, r"data.sample_rate=16000 but the dataset has 8000")
    assert not out.exists()


# ---- 6. windows longer than the utterances ---------------------------------------------------------------------


def test_windows_longer_than_every_utterance_warn_once_and_count_only_real_audio(tmp_path: Path, work: Path):
    out = tmp_path / "run"
    arguments = [a for a in base(work, out, "--set", "data.window_size=8000", "--set", "train.log_every=1") if a != "--quiet"]
    result = cli(*arguments)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.output
    assert "data.window_size=8000 samples (1 s) is longer than every training utterance: about 60% of each window " \
           "is zero padding" in warnings[0]
    assert "--set data.window_size=3200 (the median utterance)" in warnings[0]
    assert "0.8 s of audio per step (60% of the window samples are padding)" in result.output
    real = 2 * 3200 / RATE  # batch 2, every window holds a whole 3200-sample utterance
    assert [r["audio_seconds"] for r in read_metrics(out, "train")] == pytest.approx([real, real])
    assert f"{2 * real:.0f} s of audio in" in result.output


def test_padding_share_by_sampler(work: Path):
    dataset = PreparedDataset.open(work / "dataset")  # 4 training utterances of 3200 samples
    config = CPCConfig.from_dict(TINY)
    for window, sampler, expected in ((1600, "uniform", 0.0), (8000, "uniform", 0.6), (3000, "sequential", 1 - 3200 / 6000),
                                      (8000, "same-speaker", 0.6)):  # fmt: skip
        sized = config.with_overrides([f"data.window_size={window}", f"data.sampler={sampler}"])
        assert plan.padding_share(dataset, sized) == pytest.approx(expected), (window, sampler)
    skipping = config.with_overrides(["data.window_size=8000", "data.short_utterances=skip"])
    assert plan.padding_share(dataset, skipping) == 0.0
    assert plan.padding_warning(dataset, config, 0.05) is None


# ---- 8. a converted checkpoint that cannot be trained ----------------------------------------------------------


def test_a_features_only_conversion_is_not_resumed(tmp_path: Path, work: Path):
    import helpers
    from cpcaudio.interop import convert_checkpoint

    source = helpers.shared_data("cpc_audio_checkpoints/librilight") / "checkpoint.pt"
    out = tmp_path / "run"
    out.mkdir()
    convert_checkpoint(source, out / "last.pt")
    before = (out / "last.pt").read_bytes()
    result = cli(*base(work, out, "--resume"))
    assert_clean_failure(result, USAGE, r"was imported from .* and cannot be trained further: the file holds no "
                         r"prediction heads", out / "last.pt")  # fmt: skip
    assert (out / "last.pt").read_bytes() == before


def test_a_model_only_checkpoint_as_last_pt_is_named_for_what_it_is(tmp_path: Path, work: Path):
    out = tmp_path / "run"
    config = CPCConfig.from_dict(TINY)
    save_checkpoint(out / "last.pt", {"config": config.to_dict(), "model": CPCModel(config).state_dict(), "step": 0})
    result = cli(*base(work, out, "--resume"))
    assert_clean_failure(result, DATA, r"holds a model but no training state \(optimizer, scheduler, sampler, rng "
                         r"missing: a converted or exported checkpoint", out / "last.pt")  # fmt: skip


# ---- torchrun: the ranks agree -----------------------------------------------------------------------------------

RANK_SCRIPT = """
import json, signal, sys
import torch.distributed as dist
from cpcaudio.config import CPCConfig
from cpcaudio.errors import CPCAudioError
from cpcaudio.train import train
from cpcaudio.train.loop import _Trainer

dataset, out, sections, case = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
original = _Trainer._train_step

def train_step(self, network, model, *arguments):
    result = original(self, network, model, *arguments)
    if case == "signal" and self.context.rank == 1 and arguments[4] == 2:
        self.stop.request(signal.SIGTERM)  # only rank 1 is told to stop
    return result

_Trainer._train_step = train_step
try:
    train(dataset, out, CPCConfig.from_dict(sections), device="cpu", command="cpcaudio train d o")
    outcome = {"ok": True}
except CPCAudioError as error:
    outcome = {"error": type(error).__name__, "message": str(error), "code": error.exit_code}
rank = dist.get_rank() if dist.is_initialized() else int(__import__("os").environ["RANK"])
with open(f"{out}.rank{rank}.json", "w") as file:
    json.dump(outcome, file)
"""


def test_under_torchrun_every_rank_stops_at_the_same_step(tmp_path: Path, work: Path):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    cases = {
        "signal": {**TINY, "train": {**TINY["train"], "max_steps": 6, "validate_every": 100}},
        "divergence": {**TINY, "optim": {"learning_rate": 1e30}, "train": {**TINY["train"], "max_steps": 6}},
    }
    for case, sections in cases.items():
        out = tmp_path / case
        launched = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
             str(work / "dataset"), str(out), json.dumps(sections), case],
            env=ENVIRONMENT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert launched.returncode == 0, launched.stderr[-3000:]
        outcomes = [json.loads(Path(f"{out}.rank{rank}.json").read_text()) for rank in (0, 1)]
        assert outcomes[0]["message"] == outcomes[1]["message"], outcomes
        if case == "signal":
            assert [o["error"] for o in outcomes] == ["TrainingInterrupted"] * 2 and outcomes[0]["code"] == 143
            assert "stopped by SIGTERM at step 2 of 6" in outcomes[0]["message"], outcomes
            assert "relaunching the same torchrun job with: cpcaudio train d o --resume" in outcomes[0]["message"]
            saved = load_checkpoint(out / "last.pt")
            assert saved["step"] == 2 and saved["world_size"] == 2
        else:
            assert [o["error"] for o in outcomes] == ["DivergenceError"] * 2 and outcomes[0]["code"] == DIVERGED
            assert not (out / "last.pt").exists()
