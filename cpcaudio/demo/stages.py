"""The demo's stages, each one library call that a CLI command also makes, and the events they report.

Every stage function returns ``(what it made, a one-line summary, skipped)``; ``skipped`` is true when
an earlier run already finished the stage (the summary then says why). A stage that runs sends a
``start`` event first and ``progress`` events as its work advances.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cpcaudio.demo.plan import DemoPlan, probe_utterances
from cpcaudio.demo.state import DATA_DIR, FEATURES_DIR, RUN_DIR, probe_dir_name
from cpcaudio.progress import Progress


@dataclass
class DemoEvent:
    """What :func:`cpcaudio.demo.run_demo` reports to its ``progress`` callback.

    Attributes:
        stage: ``data``, ``train``, ``extract``, ``probe-<task>`` or ``report``.
        kind: ``start`` (message: what the stage does), ``progress`` (``done`` of ``total``; for training
            ``detail`` is the :class:`cpcaudio.train.TrainEvent`), ``message``, ``skip`` (already done) or
            ``end`` (message: a one-line summary; ``seconds``: the stage's wall time).
        index, count: position of the stage (1-based) and number of stages.
    """

    stage: str
    kind: str
    index: int = 0
    count: int = 0
    done: int = 0
    total: int = 0
    message: str = ""
    seconds: float = 0.0
    detail: Any = None


ProgressCallback = Callable[[DemoEvent], None]


class Emitter:
    """Numbers the stages and forwards events to the user's callback."""

    def __init__(self, progress: Optional[ProgressCallback]) -> None:
        self.progress = progress
        self.count = 0
        self.order: list[str] = []

    def __call__(self, event: DemoEvent) -> None:
        if event.stage not in self.order:
            self.order.append(event.stage)
        event.index = self.order.index(event.stage) + 1
        event.count = self.count
        if self.progress is not None:
            self.progress(event)

    def forwarder(self, stage: str, describe: bool = False) -> Callable[..., None]:
        """A progress callback for a library call that runs as ``stage``; it sends ``progress`` events.

        It takes :class:`cpcaudio.progress.Progress` events, and the positional calls ``(done, total)``
        (``prepare``, ``extract_to_store``) and ``(what, done, total)`` (``run_probe``) that those
        functions made before they sent ``Progress`` (drop these two forms once every stage sends it).
        With ``describe``, the event's message says what is being computed (e.g. ``features: mfcc``,
        the ``Progress`` stage).
        """

        def forward(*args: Any) -> None:
            if len(args) == 1 and isinstance(args[0], Progress):
                what, done, total = args[0].stage, args[0].done, args[0].total or 0
            elif len(args) == 3:
                what, done, total = args
            else:
                (done, total), what = args, ""
            self(DemoEvent(stage, "progress", done=int(done), total=int(total), message=what if describe else ""))

        return forward


def stage_data(out_dir: Path, plan: DemoPlan, emit: Emitter) -> tuple[Path, str, bool]:
    """Prepare the synthetic corpus into ``OUT/data`` (skipped with the user's ``data``).

    Returns:
        (the prepared dataset, summary, skipped).
    """
    from cpcaudio.data import PreparedDataset, prepare

    if plan.data is not None:
        dataset = PreparedDataset.open(plan.data)
        hours = float(np.sum(dataset.lengths)) / dataset.sample_rate / 3600
        return Path(plan.data), f"using {plan.data}: {len(dataset)} utterances, {60 * hours:.1f} min", True
    path = out_dir / DATA_DIR
    if (path / "meta.json").is_file():
        dataset = PreparedDataset.open(path)
        return path, f"{path} is complete ({len(dataset)} utterances)", True
    emit(
        DemoEvent(
            "data", "start",
            message=f"generating and preparing the synthetic corpus: {plan.num_speakers} speakers, "
            f"{plan.corpus_minutes:g} minutes (seed {plan.seed})",
        )
    )
    result = prepare(
        "synthetic", None, path, overwrite=True, num_speakers=plan.num_speakers, minutes=plan.corpus_minutes,
        seed=plan.seed, progress=emit.forwarder("data"),
    )
    counts = result.meta["counts"]
    return path, (
        f"{counts['utterances']} utterances, {counts['speakers']} speakers, {60 * counts['hours']:.1f} min of audio "
        f"in {path}"
    ), False


def stage_train(
    out_dir: Path, plan: DemoPlan, dataset_path: Path, device: Any, emit: Emitter, command: str
) -> tuple[Path, str, bool]:
    """Pretrain CPC into ``OUT/run`` (resuming from ``run/last.pt``); skipped once it reached the plan's steps.

    Returns:
        (``run/last.pt``, summary, skipped).
    """
    from cpcaudio.train.checkpoint import load_checkpoint
    from cpcaudio.config import CPCConfig
    from cpcaudio.train import LAST_CHECKPOINT, train

    run_dir = out_dir / RUN_DIR
    last = run_dir / LAST_CHECKPOINT
    if last.is_file():
        step = int(load_checkpoint(last).get("step", 0))
        if step >= plan.steps:
            return last, f"{last} is at step {step} of {plan.steps}", True
    config = CPCConfig.from_dict(plan.config)
    emit(
        DemoEvent(
            "train", "start",
            message=f"pretraining CPC for {plan.steps} steps on {device} (encoder {config.encoder.hidden_dim}, "
            f"GRU {config.context.hidden_dim}, K {config.predictor.num_steps}, batch {config.data.batch_size} x "
            f"{config.data.window_size / config.data.sample_rate:g} s)",
        )
    )

    def forward(event: Any) -> None:
        if event.kind in ("step", "validation", "message"):
            emit(DemoEvent("train", "progress", done=event.step, total=event.max_steps,
                           message=event.message, detail=event))

    # Resume only a run that exists: asking train to resume an empty run_dir would print its "--resume: ...
    # holds no run yet" note, meant for a user who passed --resume, not for the demo's own first run.
    summary = train(
        dataset_path, run_dir, config, resume=last.is_file(), device=device, progress=forward, command=command,
        explicit_keys=set(),
    )
    validation = summary.last_validation or {}
    accuracy = validation.get("accuracy") or [float("nan")]
    return last, (
        f"{summary.steps} steps; validation loss {validation.get('loss', float('nan')):.3f}, step-1 accuracy "
        f"{accuracy[0]:.3f} ({summary.throughput:.1f} audio s/s)"
    ), False


def stage_extract(
    out_dir: Path, checkpoint: Path, dataset_path: Path, device: Any, emit: Emitter
) -> tuple[Path, str, bool]:
    """Write the context features of every utterance into ``OUT/features`` (continuing a partial store).

    Returns:
        (the feature store, summary, skipped).
    """
    from cpcaudio.extract import FeatureStore, extract_to_store

    path = out_dir / FEATURES_DIR
    if (path / "meta.json").is_file():
        store = FeatureStore.open(path)
        return path, f"{path} is complete ({len(store)} utterances)", True
    emit(DemoEvent("extract", "start", message=f"context features of every utterance into {path}"))
    summary = extract_to_store(
        checkpoint, dataset_path, path, layer="context", device=device, progress=emit.forwarder("extract")
    )
    return path, f"{summary.num_utterances} utterances, {summary.total_frames} frames x {summary.dim}", False


def stage_probe(
    out_dir: Path,
    plan: DemoPlan,
    task: str,
    checkpoint: Path,
    dataset_path: Path,
    device: Any,
    emit: Emitter,
) -> tuple[dict[str, Any], str, bool]:
    """Probe ``task`` on the CPC features and the baselines into ``OUT/probe_<task>``.

    Returns:
        (the probe report, as in its ``results.json``; summary; skipped).
    """
    from cpcaudio.data import PreparedDataset
    from cpcaudio.evaluate import run_probe

    stage = f"probe-{task}"
    path = out_dir / probe_dir_name(task)
    results = path / "results.json"
    if results.is_file():
        report = json.loads(results.read_text())
        return report, f"{results} is complete", True
    dataset = PreparedDataset.open(dataset_path)
    utterances = probe_utterances(dataset, task, plan.phone_train_seconds)
    subset = "" if utterances is None else f" ({len(utterances)} of {len(dataset)} utterances)"
    emit(DemoEvent(stage, "start", message=f"{task} probe: CPC vs random init, MFCC, log-mel{subset}"))
    device_name = "cuda" if device.type == "cuda" else "cpu"  # the probes' own L-BFGS runs on CPU or CUDA
    # Phone frames read the stored whole-utterance features (identical to encoding again). The speaker
    # windows are encoded alone, as for the random-init baseline, so that both follow CPC_audio's protocol.
    source = {"features": out_dir / FEATURES_DIR} if task == "phone" else {"checkpoint": checkpoint}
    report = run_probe(
        dataset, task, **source, seed=plan.seed, utterances=utterances, device=device_name, out=path,
        progress=emit.forwarder(stage, describe=True),
    )
    model = [r for r in report["results"] if r["features"] == "model"]
    summary = ", ".join(f"{r['protocol']} {100 * r['accuracy']:.1f}%" for r in model)
    return report, f"CPC: {summary}", False
