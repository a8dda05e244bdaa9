"""Representation quality at a small budget: pretrain with ``cpcaudio train``, then probe on held-out TIMIT.

Run it before claiming a gain; compare its table with the one of the default configuration::

    python benchmarks/quality.py                         # 20 minutes of training (the reference budget)
    python benchmarks/quality.py --minutes 5             # quick iteration
    python benchmarks/quality.py --steps 400             # a fixed number of steps (load-independent)
    python benchmarks/quality.py --set data.sampler=uniform --config paper --json out.json
    python benchmarks/quality.py --reuse-run             # probe the last run again (e.g. after a probe change)
    python benchmarks/quality.py --tiny                  # seconds: a few steps of a tiny model (CI)

What it does, in stages (each prints a line on stderr; intermediate results stay in ``--work``, by
default ``benchmarks/cache/quality/``, git-ignored):

1. **Pretraining data**: the 36-minute mix of ``../shared/data``: the TIMIT sample (80 utterances), the
   festival voices (180) and FSDD with each speaker's 500 recordings (8 kHz) concatenated into one
   utterance (written as wav files into the work folder), prepared at 16 kHz as one ``folder`` dataset
   from a file list with a speaker column (``cpcaudio prepare folder --file-list``; 10% of each speaker's
   utterances held out for the validation loss; a speaker with one utterance keeps it in training).
   Labels are not used. The probe utterances are part of the unlabelled pretraining audio (as in the
   issue's measurements); the probes themselves are speaker-disjoint or utterance-disjoint.
2. **Probe data**: two views of the TIMIT sample (``cpcaudio prepare timit --fold-39``: the 61 phones
   folded into Lee & Hon's 39 classes; ``q`` has no class, so its frames are unlabelled and the phone
   probe drops them): ``timit_speaker``, the within-speaker split at ``--test-fraction 0.3`` (7 train /
   3 test sentences of each of the 8 speakers, chosen by SHA-1 of the utterance id: deterministic), and
   ``timit_phone``, split by ``--split-list`` into train = the speakers of dr1-dr3 and test = dr4
   (speaker-disjoint). One sentence, dr3-madc0/si1367, is left out of both (``--on-error skip``: its
   labels end 0.18 s before its audio), so madc0 has 6 / 3. Prepared datasets are reused by later runs
   with the same recipe.
3. **Pretraining**: ``cpcaudio train MIX RUN`` with ``--minutes M`` (default 20) or ``--steps N``, and
   ``--config``, ``--set``, ``--seed`` and ``--device`` passed through; ``--threads`` torch threads
   (``OMP_NUM_THREADS``). The run is trained afresh every time unless ``--reuse-run`` is given.
4. **Probes** (:func:`cpcaudio.evaluate.run_probe`, what ``cpcaudio probe`` runs, with the run's
   ``last.pt``, its default layer, and the baselines MFCC, log-mel and random init: the same
   architecture, untrained, seeded): phones per 10 ms frame (``phone`` task on ``timit_phone``);
   speakers per utterance, per 1.28 s window by its last context frame (CPC_audio's protocol) and by the
   window mean (SUPERB's pooling) (``speaker`` task on ``timit_speaker``; consecutive test windows, or every
   1/N window with ``--test-window-offsets N``: 8 makes the window columns far less noisy; training
   windows every 1/8 window as CPC_audio's random offsets). MFCC, log-mel (and encoder
   features) are averaged over the window in both window protocols: that is one probe, fitted once and
   marked ``=`` in the table. The same speaker probe scores speaker verification without training
   (:mod:`cpcaudio.evaluate.verification`): cosine scores of the test utterances' embeddings (the
   speaker-utterance probe's vectors, the mean over frames of the same layer, centred by the train mean)
   on every same-speaker pair of the 24 test utterances and as many different-speaker pairs drawn with
   ``--seed``; its equal error rate and minDCF (P_target 0.01, C_miss = C_fa = 1, normalised).

Output: one table (rows: features; columns: phone, speaker utterance, speaker window (last), speaker
window (mean): test accuracy; speaker EER and speaker minDCF: verification, lower is better) and the
training curve on stderr, the JSON record on stdout (and in ``--json OUT``): the benchmark settings and
the run's full config, the steps reached, the training wall time, the final training and validation loss
and step-1 accuracy, the curve summary, the table (``columns``: the accuracy columns;
``verification_columns``: EER and minDCF, null where the test split has no same-speaker pair, as in
``--tiny``), every probe result and the verification trials, the commit and the machine.

**Steps to leave the plateau**: InfoNCE starts at chance, loss ln(N + 1) for N negatives and step-1
accuracy 1 / (N + 1), and may sit there for hundreds of steps. The plateau is left at the first logged
training step (``metrics.jsonl``, every ``train.log_every`` steps) whose step-1 accuracy exceeds 10% or
whose loss is at least 0.1 below ln(N + 1), whichever comes first (``null`` if neither happens);
the record says which criterion fired. (The 10% is meant for the default N = 128, where chance is 0.8%;
with 9 negatives or fewer chance itself is above 10% and the accuracy criterion fires at once.)

Not in ``run_all.py``: its full size is 20 minutes of training, and it needs ``../shared/data``;
``tests/integration/test_benchmarks.py`` runs ``--tiny``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEFAULT_WORK = HERE / "cache" / "quality"
DEFAULT_MINUTES = 20.0
TINY_STEPS = 3
TINY_SET = (  # a seconds-sized model and loop: the same pipeline, not a meaningful number
    "encoder.hidden_dim=32", "context.hidden_dim=32", "predictor.num_steps=3", "predictor.num_negatives=8",
    "data.batch_size=4", "data.window_size=8000", "train.validation_batches=2", "train.log_every=1",
)
TINY_TIMIT = ("dr1-fvmh0", "dr2-faem0", "dr4-falr0")  # --tiny: 4 sentences of each (2 train / 1 test dialects)
TINY_SENTENCES = 4
PHONE_TEST_DIALECTS = ("dr4",)
SPEAKER_TEST_FRACTION = 0.3  # 3 of 10 sentences per speaker
MIX_VALIDATION_FRACTION = 0.1
PLATEAU_ACCURACY = 0.10
PLATEAU_LOSS_MARGIN = 0.1
CURVE_POINTS = 60  # training records kept in the JSON's curve (evenly spaced; every validation is kept)
COLUMNS = (  # (title, task, protocol)
    ("phone", "phone", "frame"),
    ("speaker utterance", "speaker", "utterance"),
    ("speaker window (last)", "speaker", "window"),
    ("speaker window (mean)", "speaker", "window-mean"),
)
VERIFICATION_COLUMNS = (("speaker EER", "eer"), ("speaker minDCF", "min_dcf"))  # (title, key of the result)
ROWS = {"model": "CPC trained", "mfcc": "MFCC", "logmel": "log-mel", "random": "random init"}
STAGES = 5


class Failure(Exception):
    """A benchmark stage failed; the message is one line for stderr, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def stage(number: int, text: str) -> None:
    print(f"[quality {number}/{STAGES}] {text}", file=sys.stderr, flush=True)


# ---- data --------------------------------------------------------------------------------------------


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        raise Failure(f"../shared/data/{name} not found: this benchmark reads the shared test data", code=2)
    return path


def timit_speaker_folders(tiny: bool) -> list[Path]:
    """The NLTK-layout speaker folders (``dr1-fvmh0``) of the TIMIT sample (``--tiny``: three of them)."""
    folders = sorted(p for p in shared("timit_sample").iterdir() if re.match(r"^dr\d-\w+$", p.name))
    return [p for p in folders if p.name in TINY_TIMIT] if tiny else folders


def timit_wavs(folder: Path, tiny: bool) -> list[Path]:
    wavs = sorted(folder.glob("*.wav"))
    return wavs[:TINY_SENTENCES] if tiny else wavs


def timit_source(work: Path, tiny: bool) -> Path:
    """The TIMIT sample; ``--tiny``: a folder of links to a few sentences of three speakers."""
    if not tiny:
        return shared("timit_sample")
    root = work / "timit_tiny"
    for folder in timit_speaker_folders(tiny):
        for wav in timit_wavs(folder, tiny):
            for source in (wav, wav.with_suffix(".phn")):
                link = root / folder.name / source.name
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.is_symlink():
                    link.symlink_to(source)
    return root


def fsdd_utterances(work: Path, tiny: bool) -> list[tuple[Path, str]]:
    """One wav per FSDD speaker, its recordings concatenated in (digit, take) order at 8 kHz, written into
    ``work/mix_src/fsdd`` (kept while the recordings are the same); ``--tiny``: 20 recordings of one."""
    import soundfile

    by_speaker: dict[str, list[tuple[int, int, Path]]] = {}
    for path in shared("fsdd/recordings").glob("*.wav"):
        digit, speaker, take = path.stem.split("_")
        by_speaker.setdefault(speaker, []).append((int(digit), int(take), path))
    speakers = sorted(by_speaker)[:1] if tiny else sorted(by_speaker)
    out = []
    for speaker in speakers:
        files = [path for _, _, path in sorted(by_speaker[speaker])][: 20 if tiny else None]
        target = work / "mix_src" / "fsdd" / f"{speaker}.wav"
        stamp = target.with_suffix(".json")
        listing = [f.name for f in files]
        if not (target.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == listing):
            target.parent.mkdir(parents=True, exist_ok=True)
            parts, rate = [], None
            for path in files:
                samples, rate = soundfile.read(path, dtype="int16")
                parts.append(samples if samples.ndim == 1 else samples[:, 0])
            soundfile.write(target, np.concatenate(parts), rate, subtype="PCM_16")
            stamp.write_text(json.dumps(listing))
        out.append((target, speaker))
    return out


def mix_file_list(work: Path, tiny: bool) -> str:
    """The CSV file list (path, id, speaker) of the pretraining mix."""
    rows = []
    for folder in timit_speaker_folders(tiny):
        speaker = folder.name.split("-", 1)[1]
        for wav in timit_wavs(folder, tiny):
            rows.append((wav, f"timit/{speaker}_{wav.stem}", f"timit-{speaker}"))
    voices = sorted(p for p in shared("tts_festival").iterdir() if p.is_dir())
    for voice in voices[:1] if tiny else voices:
        for wav in sorted(voice.glob("*.wav"))[: TINY_SENTENCES if tiny else None]:
            rows.append((wav, f"festival/{wav.stem}", f"festival-{voice.name}"))
    for wav, speaker in fsdd_utterances(work, tiny):
        rows.append((wav, f"fsdd/{speaker}", f"fsdd-{speaker}"))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "id", "speaker"])
    writer.writerows((str(path), utterance, speaker) for path, utterance, speaker in rows)
    return text.getvalue()


def prepare_once(kind: str, src: Path, out: Path, recipe: dict[str, Any], options: dict[str, Any], workers: int) -> Any:
    """``prepare(kind, src, out, **options)`` unless ``out`` already holds a dataset of the same recipe."""
    from cpcaudio.cli.progress import ProgressPrinter
    from cpcaudio.data import PreparedDataset, prepare

    stamp = out.parent / f"{out.name}.recipe.json"
    if (out / "meta.json").is_file() and stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        dataset = PreparedDataset.open(out)
        print(f"  {out.name}: reused ({len(dataset)} utterances)", file=sys.stderr)
        return dataset
    stamp.unlink(missing_ok=True)
    with ProgressPrinter(bars=False) as progress:
        prepare(kind, src, out, workers=workers, overwrite=True, progress=progress, **options)
    stamp.write_text(json.dumps(recipe, indent=1))
    dataset = PreparedDataset.open(out)
    print(f"  {out.name}: {len(dataset)} utterances, {minutes_of(dataset):.1f} min", file=sys.stderr)
    for entry in json.loads((out / "report.json").read_text()).get("skipped", []):
        print(f"  {out.name}: left out {entry['file']}: {entry['problem']}", file=sys.stderr)
    return dataset


def minutes_of(dataset: Any) -> float:
    return float(np.sum(dataset.lengths)) / dataset.sample_rate / 60


def prepare_datasets(work: Path, tiny: bool, workers: int) -> dict[str, Any]:
    """The pretraining mix and the two TIMIT views, prepared (or reused) under ``work/data``."""
    suffix = "_tiny" if tiny else ""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    stage(1, "pretraining data: TIMIT sample + festival voices + FSDD (one utterance per speaker), 16 kHz")
    file_list = mix_file_list(work, tiny)
    list_path = work / "mix_src" / f"files{suffix}.csv"
    list_path.write_text(file_list)
    mix_options = {"sample_rate": 16000, "file_list": list_path, "test_fraction": MIX_VALIDATION_FRACTION}
    mix = prepare_once("folder", list_path.parent, data / f"mix{suffix}", {"kind": "folder", "files": file_list,
                       "options": {k: str(v) for k, v in mix_options.items()}}, mix_options, workers)

    stage(2, "probe data: TIMIT sample, 39 folded phones; speaker view 7/3 per speaker, phone view dr1-3 / dr4")
    timit = timit_source(work, tiny)
    # on_error skip: one sentence of the sample (dr3-madc0/si1367) has labels ending 0.18 s before its audio
    speaker_options = {"fold_39": True, "split": "within-speaker", "test_fraction": SPEAKER_TEST_FRACTION,
                       "on_error": "skip"}
    speaker_view = prepare_once("timit", timit, data / f"timit_speaker{suffix}",
                                {"kind": "timit", "src": str(timit), "options": speaker_options}, speaker_options,
                                workers)
    dialects = speaker_view.vocabularies["dialect"]  # (utterance labels are stored as ids into it)
    is_test = [dialects[speaker_view.utterance_label(i, "dialect")] in PHONE_TEST_DIALECTS
               for i in range(len(speaker_view))]
    lists = {}
    for split in ("train", "test"):
        ids = [u for u, test in zip(speaker_view.utterance_ids, is_test) if test == (split == "test")]
        lists[split] = data / f"timit_phone{suffix}_{split}.txt"
        lists[split].write_text("\n".join(ids) + "\n")
    phone_options = {"fold_39": True, "split_lists": lists, "on_error": "skip"}
    recipe = {"kind": "timit", "src": str(timit), "fold_39": True, "on_error": "skip",
              "split_lists": {k: v.read_text() for k, v in lists.items()}}
    phone_view = prepare_once("timit", timit, data / f"timit_phone{suffix}", recipe, phone_options, workers)
    return {"mix": mix, "timit_speaker": speaker_view, "timit_phone": phone_view}


def dataset_record(dataset: Any) -> dict[str, Any]:
    splits = {name: int(len(dataset.indices(name))) for name in ("train", "valid", "test")}
    report = Path(dataset.path) / "report.json"
    skipped = json.loads(report.read_text()).get("skipped", []) if report.is_file() else []
    return {
        "path": str(dataset.path), "utterances": len(dataset), "speakers": len(set(dataset.speakers)),
        "minutes": round(minutes_of(dataset), 2), "splits": {k: v for k, v in splits.items() if v},
        "split_rule": dataset.meta.get("split_rule"), "skipped": skipped,
    }


# ---- pretraining -------------------------------------------------------------------------------------


def cli(*arguments: str) -> list[str]:
    """The ``cpcaudio`` command line of this environment."""
    return [sys.executable, "-m", "cpcaudio.cli.main", *arguments]


def train_arguments(args: argparse.Namespace, dataset: Path, run_dir: Path) -> list[str]:
    """The ``cpcaudio train`` arguments (after ``train``) this benchmark runs."""
    arguments = [str(dataset), str(run_dir)]
    if args.config is not None:
        arguments += ["--config", args.config]
    for assignment in (TINY_SET if args.tiny else ()) + tuple(args.set):
        arguments += ["--set", assignment]
    if args.steps is not None:
        arguments += ["--steps", str(args.steps)]
    if args.minutes is not None:
        arguments += ["--minutes", f"{args.minutes:g}"]
    arguments += ["--seed", str(args.seed)]
    if args.device is not None:
        arguments += ["--device", args.device]
    return arguments


def pretrain(args: argparse.Namespace, dataset: Path, run_dir: Path) -> dict[str, Any]:
    """Run (or, with ``--reuse-run``, reuse) ``cpcaudio train``; returns the run record."""
    arguments = train_arguments(args, dataset, run_dir)
    command = shlex.join(["cpcaudio", "train", *arguments])
    info_path = run_dir / "quality_run.json"
    if args.reuse_run and (run_dir / "last.pt").is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info["arguments"] != arguments:
            raise Failure(
                f"--reuse-run: the run in {run_dir} was trained as '{info['command']}', not '{command}'; "
                "drop --reuse-run to train again", code=2,
            )
        stage(3, f"pretraining: reusing {run_dir} ({info['command']})")
        return {**info, "reused": True}
    budget = f"{args.minutes:g} minutes" if args.minutes is not None else f"{args.steps} steps"
    stage(3, f"pretraining for {budget} on {args.threads} threads: {command}")
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    completed = subprocess.run(cli("train", *arguments, "--overwrite"), stdout=sys.stderr, env=environment, cwd=ROOT)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        raise Failure(f"cpcaudio train failed (exit code {completed.returncode}): {command}")
    info = {"command": command, "arguments": arguments, "wall_seconds": round(seconds, 1)}
    info_path.write_text(json.dumps(info, indent=1))
    return {**info, "reused": False}


def info_nce(record: dict[str, Any], utterance_weight: float) -> float:
    """The InfoNCE part of a logged ``loss``: with an utterance objective the log holds the total, InfoNCE
    + ``utterance.weight`` x ``utterance_loss``."""
    return record["loss"] - utterance_weight * record.get("utterance_loss", 0.0)


def curve_summary(records: list[dict[str, Any]], num_negatives: int, utterance_weight: float = 0.0) -> dict[str, Any]:
    """The training curve: chance level, where the plateau is left (module docstring; judged on InfoNCE
    alone when an utterance loss is added), the first and last logged values and an evenly spaced subset
    of the training records, plus every validation."""
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    chance = math.log(num_negatives + 1)
    exit_step, reason = None, None
    for record in train:
        if record["accuracy"][0] > PLATEAU_ACCURACY:
            exit_step, reason = record["step"], f"step-1 accuracy above {PLATEAU_ACCURACY:.0%}"
        elif info_nce(record, utterance_weight) <= chance - PLATEAU_LOSS_MARGIN:
            exit_step, reason = record["step"], f"loss {PLATEAU_LOSS_MARGIN} below chance"
        if exit_step is not None:
            break
    spaced = np.linspace(0, len(train) - 1, min(len(train), CURVE_POINTS)).round().astype(int)
    chosen = np.unique(spaced) if train else []

    def point(record: dict[str, Any]) -> dict[str, Any]:
        values = {"step": record["step"], "loss": round(record["loss"], 4),
                  "step1_accuracy": round(record["accuracy"][0], 4)}
        if "utterance_loss" in record:
            values["utterance_loss"] = round(record["utterance_loss"], 4)
            values["info_nce"] = round(info_nce(record, utterance_weight), 4)
        return values

    return {
        "chance_loss": round(chance, 4),
        "chance_step1_accuracy": round(1 / (num_negatives + 1), 4),
        "plateau_exit_step": exit_step,
        "plateau_exit_criterion": reason,
        "train": [point(train[i]) for i in chosen],
        "valid": [point(r) for r in valid],
    }


def utterance_weight(config: Any) -> float:
    """The weight of the run's utterance objective in its logged loss (0 without one)."""
    utterance = getattr(config, "utterance", None)
    return 0.0 if utterance is None or utterance.loss == "none" else float(utterance.weight)


def run_record(run_dir: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Steps reached, times, final losses and accuracies and the curve of the run in ``run_dir``."""
    from cpcaudio.config import CPCConfig
    from cpcaudio.train import read_metrics
    from cpcaudio.train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(run_dir / "last.pt")
    config = CPCConfig.from_dict(checkpoint["config"])
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    final = {}
    for name, chosen in (("train", train), ("valid", valid)):
        if chosen:
            last = chosen[-1]
            final[name] = {"step": last["step"], "loss": last["loss"], "step1_accuracy": last["accuracy"][0]}
            if "utterance_loss" in last:
                final[name]["utterance_loss"] = last["utterance_loss"]
    return {
        "run_dir": str(run_dir),
        "command": info["command"],
        "reused": info["reused"],
        "steps": int(checkpoint.get("step", 0)),
        "wall_seconds": info["wall_seconds"],
        "loop_seconds": round(sum(r.get("seconds", 0.0) for r in train), 1),
        "final": final,
        "curve": curve_summary(records, config.predictor.num_negatives, utterance_weight(config)),
        "config": config.to_dict(),
    }


# ---- probes and the table ----------------------------------------------------------------------------


def probe(task: str, dataset: Any, checkpoint: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`cpcaudio.evaluate.run_probe` of ``task`` with the MFCC, log-mel and random-init baselines."""
    from cpcaudio.cli.progress import ProgressPrinter
    from cpcaudio.evaluate import run_probe

    with ProgressPrinter(bars=False) as progress:
        return run_probe(dataset, task, checkpoint=checkpoint, baselines_requested="mfcc,logmel,random",
                         seed=args.seed, device=args.device, out=out, overwrite=True, progress=progress,
                         test_window_offsets=args.test_window_offsets)


def quality_table(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{features: {column title: test accuracy, verification title: EER or minDCF}}``; a cell that
    repeats another protocol's fit is also listed under ``same_as`` (``{column title: fitted protocol}``)."""
    table: dict[str, dict[str, Any]] = {}
    for title, task, protocol in COLUMNS:
        for result in reports[task]["results"]:
            if result["protocol"] != protocol:
                continue
            row = table.setdefault(result["features"], {"same_as": {}})
            row[title] = result["accuracy"]
            if result.get("same_problem_as"):
                row["same_as"][title] = result["same_problem_as"]
    for result in reports["speaker"].get("verification", {}).get("results", []):
        row = table.setdefault(result["features"], {"same_as": {}})
        for title, key in VERIFICATION_COLUMNS:
            row[title] = result[key]
    return table


def format_table(table: dict[str, dict[str, Any]], layer: str, verification_note: str = "") -> str:
    """The table for stderr: accuracies and the EER in percent, minDCF as a number; ``verification_note``
    (the trials) is printed below it when some verification cell is empty."""
    names = {**ROWS, "model": f"{ROWS['model']} ({layer})"}
    first = max(len(n) for n in names.values())
    titles = [title for title, _, _ in COLUMNS] + [title for title, _ in VERIFICATION_COLUMNS]
    widths = [max(len(title), 7) for title in titles]
    lines = [f"{'features':<{first}}  " + "  ".join(f"{t:>{w}}" for t, w in zip(titles, widths))]
    for name in [n for n in ROWS if n in table]:
        row = table[name]
        cells = []
        for title, width in zip(titles, widths):
            value = row.get(title)
            if value is None:
                text = "-"
            elif title == "speaker minDCF":
                text = f"{value:.3f} "
            else:
                text = f"{100 * value:.1f}%" + ("=" if title in row["same_as"] else " ")
            cells.append(f"{text:>{width}}")
        lines.append(f"{names[name]:<{first}}  " + "  ".join(cells))
    if any(row["same_as"] for row in table.values()):
        lines.append("=: the same probe as speaker window (last): these features are averaged over the window in "
                     "both protocols (fitted once)")
    lines.append("speaker EER, minDCF (P_target 0.01): verification by cosine scores of the utterance embeddings "
                 "(lower is better)")
    if any(row.get(title) is None for row in table.values() for title, _ in VERIFICATION_COLUMNS):
        lines.append(f"-: {verification_note or 'no verification'}")
    return "\n".join(lines)


def curve_text(run: dict[str, Any]) -> str:
    curve, final = run["curve"], run["final"]
    train, valid = final.get("train", {}), final.get("valid", {})
    exit_text = (f"left the plateau at step {curve['plateau_exit_step']} ({curve['plateau_exit_criterion']})"
                 if curve["plateau_exit_step"] is not None else "never left the plateau")
    text = (f"training: {run['steps']} steps in {run['wall_seconds']:.0f} s; chance loss {curve['chance_loss']:.3f}; "
            f"{exit_text}; final train loss {train.get('loss', math.nan):.3f}, step-1 accuracy "
            f"{100 * train.get('step1_accuracy', math.nan):.1f}%")
    if valid:
        text += f"; validation loss {valid['loss']:.3f}, step-1 accuracy {100 * valid['step1_accuracy']:.1f}%"
    points = curve["train"][:: max(1, len(curve["train"]) // 8)]
    return text + "\n  curve (step: loss / step-1 acc): " + ", ".join(
        f"{p['step']}: {p['loss']:.2f} / {100 * p['step1_accuracy']:.0f}%" for p in points
    )


# ---- provenance --------------------------------------------------------------------------------------


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    if head.returncode != 0:
        return {"commit": "unknown", "dirty": None}
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def machine(threads: int, device: Optional[str]) -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    record = {"platform": platform.platform(), "cpu": cpu, "cores": common.available_cores(),
              "torch": torch.__version__, "threads": threads, "python": platform.python_version(),
              "device": device or "default"}
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    try:
        record["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return record


# ---- main --------------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_pretraining_arguments(
        parser, DEFAULT_MINUTES, DEFAULT_WORK,
        "Folder of intermediate results: prepared datasets (reused), the run, the probe reports.",
    )
    parser.add_argument("--test-window-offsets", type=int, default=1, metavar="N",
                        help="Speaker windows of the test utterances every 1/N window (default 1: consecutive, "
                        "CPC_audio's; 8: 8 shifts per utterance, far less test noise on the window columns).")
    parser.add_argument("--tiny", action="store_true",
                        help=f"CI size: a few utterances, {TINY_STEPS} steps of a tiny model (meaningless numbers).")
    args = parser.parse_args(argv)
    if args.steps is None and args.minutes is None:
        if args.tiny:
            args.steps = TINY_STEPS
        else:
            args.minutes = DEFAULT_MINUTES
    bad_steps = args.steps is not None and args.steps < 1
    bad_minutes = args.minutes is not None and args.minutes <= 0
    if bad_steps or bad_minutes or args.threads < 1 or args.test_window_offsets < 1:
        parser.error("--steps, --minutes, --threads and --test-window-offsets must be positive")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    load_before = machine(args.threads, args.device).get("load_average")
    work = args.work.resolve()
    datasets = prepare_datasets(work, args.tiny, workers=1 if args.tiny else args.threads)
    prepared = time.perf_counter()
    run_dir = work / ("run_tiny" if args.tiny else "run")
    info = pretrain(args, datasets["mix"].path, run_dir)
    trained = run_record(run_dir, info)
    pretrained = time.perf_counter()
    stage(4, "probes: phones (dr1-3 -> dr4) and speakers (utterance, window last / mean, verification) on CPC, "
             "MFCC, log-mel, random")
    suffix = "_tiny" if args.tiny else ""
    reports = {
        task: probe(task, datasets[f"timit_{task}"], run_dir / "last.pt", work / f"probe_{task}{suffix}", args)
        for task in ("phone", "speaker")
    }
    stage(5, "table")
    table = quality_table(reports)
    layer = reports["phone"]["model"]["layer"]
    return {
        "settings": {
            "tiny": args.tiny, "minutes": args.minutes, "steps": args.steps, "config": args.config,
            "set": list(TINY_SET if args.tiny else ()) + args.set, "seed": args.seed, "threads": args.threads,
            "device": args.device, "work": str(work), "test_window_offsets": args.test_window_offsets,
        },
        "config": trained.pop("config"),
        "steps": trained["steps"],
        "train_wall_seconds": trained["wall_seconds"],
        "final": trained.pop("final"),
        "curve": trained.pop("curve"),
        "run": trained,
        "layer": layer,
        "columns": [title for title, _, _ in COLUMNS],
        "verification_columns": [title for title, _ in VERIFICATION_COLUMNS],
        "table": table,
        "probes": {task: {"dataset": report["dataset"]["path"], "results": [_brief(r) for r in report["results"]]}
                   for task, report in reports.items()},
        "verification": _verification_brief(reports["speaker"]),
        "data": {name: dataset_record(dataset) for name, dataset in datasets.items()},
        **git_commit(),
        "machine": {**machine(args.threads, args.device), "load_average_at_start": load_before},
        "command": shlex.join(["python", "benchmarks/quality.py", *sys.argv[1:]]),
        "seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": {"data": round(prepared - started, 1), "pretraining": round(pretrained - prepared, 1),
                          "probes": round(time.perf_counter() - pretrained, 1)},
    }


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    """A probe result without its confusion matrix and per-class table (they stay in the work folder)."""
    keep = ("features", "protocol", "probe", "accuracy", "balanced_accuracy", "macro_f1", "train_accuracy",
            "majority_class_accuracy", "counts", "same_problem_as")
    return {key: result[key] for key in keep if key in result}


def _verification_brief(report: dict[str, Any]) -> dict[str, Any]:
    """The speaker report's verification entry without the DET curves (they stay in the work folder)."""
    section = dict(report["verification"])
    section["results"] = [{k: v for k, v in r.items() if k != "det"} for r in section["results"]]
    return section


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from cpcaudio.errors import CPCAudioError

    try:
        record = run(args)
    except Failure as failure:
        print(f"error: {failure}", file=sys.stderr)
        return failure.code
    except CPCAudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    budget = f"{args.minutes:g} min budget" if args.minutes is not None else f"{args.steps} steps"
    commit = record["commit"][:10] + (" + local changes" if record["dirty"] else "")
    summary = (
        f"quality ({budget}{', tiny' if args.tiny else ''}; {record['steps']} steps in "
        f"{record['train_wall_seconds']:.0f} s; "
        f"{args.threads} threads; commit {commit})"
        + (f"; test windows every 1/{args.test_window_offsets} window" if args.test_window_offsets > 1 else "")
        + "; test accuracy:\n"
        + format_table(record["table"], record["layer"], record["verification"]["trials"]["note"]) + "\n"
        + curve_text({**record["run"], "curve": record["curve"], "final": record["final"]})
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "quality", **record}, indent=1) + "\n")
    common.print_result("quality", record, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
