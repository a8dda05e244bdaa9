"""A generated multi-speaker, phone-aligned English speech corpus: the project's embedded default.

This module assembles the corpus (speakers in worker processes, files, ``corpus.json``). The speech comes
from the eSpeak NG formant synthesiser that the PyPI package ``espeakng-loader`` ships, driven through its
C API (:mod:`cpcaudio.data.espeak`). eSpeak reports a phoneme event at the exact output sample where each
phoneme starts, so the phone labels are exact by construction. Speakers are eSpeak voice variants
(``en-us+m3``, ``en+f2``, ...) with their own speaking rate, pitch and pitch range, and each utterance is
rendered from the synthesiser's output by :mod:`cpcaudio.data.synthetic_voices`; sentences are drawn
from a small grammar (:mod:`cpcaudio.data.synthetic_text`).

Layout written by :func:`generate_corpus`::

    out_dir/
        corpus.json            voices, seed, phone set, utterances (the description of the corpus)
        sentences.txt          "<utterance id> <text>" per line
        spk00/spk00_0000.wav   int16 mono at the requested sample rate
        spk00/spk00_0000.phn   "start_seconds end_seconds phone" per line, contiguous, covering the file

Phones are the 39 classes of the usual TIMIT folding (Lee & Hon, 1989), silence included as ``sil``.

Determinism: eSpeak keeps global state between messages (for example the position in its pitch-flutter
table), so the audio of an utterance depends on what the same process synthesised before. Each speaker
is therefore generated in a fresh worker process, from the start of its own sentence list: the bytes
written depend only on the arguments, not on the number of workers or the order the workers run in.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile

from cpcaudio.data.espeak import Espeak, load_espeak_library
from cpcaudio.data.synthetic_text import make_sentence
from cpcaudio.data.synthetic_voices import (
    PHONE_SET,
    SILENCE,
    SpeakerVoice,
    espeak_phone,
    phone_segments,
    render_utterance,
    speaker_voices,
)
from cpcaudio.errors import UsageError
from cpcaudio.progress import Progress, ProgressCallback, report

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PHONE_SET",
    "SILENCE",
    "SpeakerVoice",
    "espeak_phone",
    "generate_corpus",
    "phone_segments",
    "speaker_voices",
]

FORMAT_NAME = "cpcaudio-synthetic"
FORMAT_VERSION = 1


# ---- one speaker -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SpeakerJob:
    voice: SpeakerVoice
    speaker_index: int
    seed: int
    seconds: float
    sample_rate: int
    out_dir: str


def _write_phn(path: Path, segments: list[tuple[int, int, str]], sample_rate: int) -> None:
    lines = [f"{start / sample_rate:.6f} {end / sample_rate:.6f} {phone}\n" for start, end, phone in segments]
    path.write_text("".join(lines), encoding="utf-8")


def _generate_speaker(job: _SpeakerJob) -> tuple[int, dict]:
    """Worker: synthesise one speaker's utterances until ``job.seconds`` of audio exist, write them.

    Runs in a fresh process (see the module docstring on determinism).

    Returns:
        ``job.speaker_index`` and ``{"espeak_version": str, "utterances": [{"id", "speaker", "num_samples",
        "text"}, ...]}``.
    """
    engine = Espeak(seed=job.seed)
    voice = job.voice
    text_rng = np.random.default_rng([job.seed, 2, job.speaker_index])
    audio_rng = np.random.default_rng([job.seed, 3, job.speaker_index])
    speaker_dir = Path(job.out_dir) / voice.speaker
    speaker_dir.mkdir(parents=True, exist_ok=True)
    utterances = []
    produced = 0.0
    while True:
        text = make_sentence(text_rng)
        rate = int(round(voice.rate * float(text_rng.uniform(0.93, 1.07))))
        engine.set_voice(voice, rate=rate)
        samples, phonemes = engine.synthesize(text)
        segments = phone_segments(phonemes, samples.size)
        pcm, segments = render_utterance(samples, segments, engine.sample_rate, job.sample_rate, audio_rng)
        seconds = pcm.size / job.sample_rate
        # keep the total within half an utterance of the target, but give every speaker one utterance
        if utterances and produced + seconds / 2 > job.seconds:
            break
        utterance_id = f"{voice.speaker}_{len(utterances):04d}"
        soundfile.write(speaker_dir / f"{utterance_id}.wav", pcm, job.sample_rate, subtype="PCM_16", format="WAV")
        _write_phn(speaker_dir / f"{utterance_id}.phn", segments, job.sample_rate)
        utterances.append({"id": utterance_id, "speaker": voice.speaker, "num_samples": int(pcm.size), "text": text})
        produced += seconds
        if produced >= job.seconds:
            break
    version = engine.version
    engine.close()
    return job.speaker_index, {"espeak_version": version, "utterances": utterances}


# ---- the corpus ------------------------------------------------------------------------------------------


def _settings(num_speakers: int, minutes: float, seed: int, sample_rate: int) -> dict:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "num_speakers": num_speakers,
        "minutes": minutes,
        "seed": seed,
        "sample_rate": sample_rate,
    }


def _is_complete(out_dir: Path, settings: dict) -> bool:
    """Whether ``out_dir`` already holds the corpus that ``settings`` describe, all files present."""
    try:
        meta = json.loads((out_dir / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or {key: meta.get(key) for key in settings} != settings:
        return False
    return all(
        (out_dir / item["speaker"] / f"{item['id']}{suffix}").is_file()
        for item in meta.get("utterances", [])
        for suffix in (".wav", ".phn")
    )


def _worker_context() -> multiprocessing.context.BaseContext:
    """A process start method that gives every task a fresh interpreter state cheaply.

    ``forkserver`` forks each worker from a server that has imported this module once; ``spawn`` is the
    fallback where there is no ``forkserver`` (Windows).
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _default_workers(num_speakers: int) -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(available, num_speakers))


def generate_corpus(
    out_dir: str | os.PathLike,
    *,
    num_speakers: int = 8,
    minutes: float = 10.0,
    seed: int = 0,
    sample_rate: int = 16000,
    workers: int | None = None,
    progress: Optional[ProgressCallback] = None,
) -> Path:
    """Generate the synthetic multi-speaker, phone-aligned speech corpus into ``out_dir``.

    Every speaker gets ``minutes / num_speakers`` of audio (within half an utterance; at least one
    utterance). The same arguments always write the same bytes, whatever ``workers`` is. If ``out_dir``
    already holds the complete corpus of the same arguments, nothing is regenerated; an interrupted
    generation of the same arguments is redone from the start.

    Args:
        out_dir: folder to create (or an empty one, or one holding this corpus).
        num_speakers: number of speakers (eSpeak voice variants with their own prosody), at least 1.
        minutes: total minutes of audio, more than 0.
        seed: seed of the sentences, prosody, padding and noise.
        sample_rate: sample rate of the written audio in Hz (eSpeak's 22050 Hz is resampled with soxr).
        workers: worker processes; ``None`` uses one per available CPU core, at most one per speaker.
        progress: receives :class:`~cpcaudio.progress.Progress` events (stage ``synthesize``, unit
            ``speaker``): speakers finished of the total.

    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.

    Raises:
        UsageError: for an argument out of range, or an ``out_dir`` holding something else.
        DataError: if the espeak-ng library of ``espeakng-loader`` cannot be loaded.
    """
    _check_integer("num_speakers", num_speakers, 1)
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < float("inf"):
        raise UsageError(f"minutes must be a number > 0, got {minutes!r}")
    _check_integer("sample_rate", sample_rate, 4000, " Hz")
    _check_integer("seed", seed, 0)
    if workers is not None:
        _check_integer("workers", workers, 1, " or None")
    minutes = float(minutes)
    out_dir = Path(out_dir)
    settings = _settings(num_speakers, minutes, seed, sample_rate)

    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder; choose another output folder")
    if _is_complete(out_dir, settings):
        report(progress, Progress("synthesize", num_speakers, num_speakers, "speaker"))
        return out_dir
    marker = out_dir / ".generating.json"
    _clear_unfinished(out_dir, marker, settings)
    load_espeak_library()  # fail here, with one clear message, rather than in every worker
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(settings), encoding="utf-8")

    voices = speaker_voices(num_speakers, seed)
    seconds_per_speaker = minutes * 60.0 / num_speakers
    jobs = [
        _SpeakerJob(voice, index, seed, seconds_per_speaker, sample_rate, str(out_dir))
        for index, voice in enumerate(voices)
    ]
    results: dict[int, dict] = {}
    num_workers = workers if workers is not None else _default_workers(num_speakers)
    report(progress, Progress("synthesize", 0, num_speakers, "speaker"))
    # multiprocessing.Pool's maxtasksperchild=1 gives each speaker a fresh worker process (see the module
    # docstring); ProcessPoolExecutor's max_tasks_per_child can deadlock on Python 3.11-3.14 (gh-115634).
    with _worker_context().Pool(processes=num_workers, maxtasksperchild=1) as pool:
        for index, result in pool.imap_unordered(_generate_speaker, jobs, chunksize=1):
            results[index] = result
            report(progress, Progress("synthesize", len(results), num_speakers, "speaker"))

    utterances = [item for index in range(num_speakers) for item in results[index]["utterances"]]
    (out_dir / "sentences.txt").write_text(
        "".join(f"{item['id']} {item['text']}\n" for item in utterances), encoding="utf-8"
    )
    meta = _corpus_meta(settings, voices, [results[index] for index in range(num_speakers)])
    (out_dir / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    marker.unlink()
    return out_dir


def _check_integer(name: str, value: Any, minimum: int, unit: str = "") -> None:
    """Refuse ``value`` unless it is an int (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}{unit}, got {value!r}")


def _clear_unfinished(out_dir: Path, marker: Path, settings: dict) -> None:
    """Empty ``out_dir`` when it holds an interrupted generation of ``settings``; refuse any other content."""
    if not (out_dir.is_dir() and any(out_dir.iterdir())):
        return
    try:
        unfinished = json.loads(marker.read_text(encoding="utf-8")) == settings
    except (OSError, ValueError):
        unfinished = False
    if not unfinished:
        raise UsageError(
            f"{out_dir} is not empty and does not hold a synthetic corpus of these settings; "
            "choose a new folder or delete it"
        )
    for child in out_dir.iterdir():  # our own interrupted run: start again from a clean folder
        if child.is_dir():
            shutil.rmtree(child)
        elif child != marker:
            child.unlink()


def _corpus_meta(settings: dict, voices: list[SpeakerVoice], speakers: list[dict]) -> dict:
    """``corpus.json``: the settings, the voices and every utterance (``speakers``: worker results in order)."""
    sample_rate = settings["sample_rate"]
    utterances = [item for speaker in speakers for item in speaker["utterances"]]
    total_samples = sum(item["num_samples"] for item in utterances)
    return {
        **settings,
        "source": f"espeak-ng {speakers[0]['espeak_version']} (PyPI espeakng-loader), phoneme events",
        "phone_set": list(PHONE_SET),
        "silence": SILENCE,
        "phone_folding": "TIMIT 39 classes (Lee & Hon, 1989)",
        "label_format": "<speaker>/<utterance>.phn: start_seconds end_seconds phone",
        "total_seconds": round(total_samples / sample_rate, 3),
        "num_utterances": len(utterances),
        "speakers": [
            {
                **asdict(voice),
                "num_utterances": len(speaker["utterances"]),
                "seconds": round(sum(item["num_samples"] for item in speaker["utterances"]) / sample_rate, 3),
            }
            for voice, speaker in zip(voices, speakers)
        ],
        "utterances": [
            {"id": item["id"], "speaker": item["speaker"], "num_samples": item["num_samples"]} for item in utterances
        ],
    }
