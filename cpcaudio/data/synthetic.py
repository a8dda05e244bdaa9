"""A generated multi-speaker, phone-aligned English speech corpus: the project's embedded default.

The speech comes from the eSpeak NG formant synthesiser that the PyPI package ``espeakng-loader`` ships
(shared library and data), driven through its C API with :mod:`ctypes`. eSpeak reports a phoneme event
at the exact output sample where each phoneme starts, so the phone labels are exact by construction.
Speakers are eSpeak voice variants (``en-us+m3``, ``en+f2``, ...) with their own speaking rate, pitch
and pitch range; sentences are drawn from a small grammar (:mod:`cpcaudio.data.synthetic_text`).

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

import ctypes
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from cpcaudio.data.synthetic_text import make_sentence
from cpcaudio.errors import DataError, UsageError

FORMAT_NAME = "cpcaudio-synthetic"
FORMAT_VERSION = 1

SILENCE = "sil"

PHONE_SET: tuple[str, ...] = (
    "aa", "ae", "ah", "aw", "ay", "b", "ch", "d", "dh", "dx", "eh", "er", "ey", "f", "g", "hh", "ih", "iy",
    "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", SILENCE, "t", "th", "uh", "uw", "v",
    "w", "y", "z",
)  # fmt: skip

# eSpeak's English phoneme mnemonics (tables base1, en and en-us, stress marks removed) -> PHONE_SET.
_ESPEAK_TO_PHONE: dict[str, str] = {
    # pauses
    "_": SILENCE, "_:": SILENCE, "_::": SILENCE, "_!": SILENCE, "_|": SILENCE, "_;_": SILENCE,
    "_^_": SILENCE, "_X1": SILENCE, "||": SILENCE,
    # stops, flaps and the glottal stop (which stands for /t/ in English)
    "p": "p", "b": "b", "t": "t", "t2": "t", "t[": "t", "?": "t", "d": "d", "d#": "d", "d[": "d",
    "k": "k", "k#": "k", "x": "k", "g": "g", "t#": "dx",
    # affricates and fricatives (zh folds into sh)
    "tS": "ch", "dZ": "jh", "f": "f", "v": "v", "v#": "v", "T": "th", "D": "dh", "s": "s", "s2": "s",
    "z": "z", "z#": "z", "z/2": "z", "S": "sh", "Z": "sh", "h": "hh", "C": "hh",
    # nasals, liquids, glides (syllabic forms fold into the plain consonant)
    "m": "m", "m-": "m", "n": "n", "n-": "n", "N": "ng", "N-": "ng", "l": "l", "l-": "l", "@L": "l",
    "l/": "l", "l/2": "l", "l/3": "l", "L": "l", "r": "r", "r-": "r", "r/": "r", "R": "r",
    "w": "w", "w#": "w", "j": "y", ";": "y",  # ";": the glide eSpeak inserts after /i/ before a vowel
    # vowels
    "@": "ah", "@-": "ah", "@2": "ah", "@5": "ah", "@#": "ah", "a#": "ah", "a#2": "ah", "a2": "ah", "V": "ah",
    "3": "er", "3:": "er", "IR": "er", "VR": "er",
    "a": "ae", "aa": "ae",
    "A:": "aa", "A@": "aa", "A#": "aa", "A~": "aa", "0": "aa", "0#": "aa", "02": "aa",
    "O": "aa", "O:": "aa", "O2": "aa", "O@": "aa", "o@": "aa", "O~": "aa",
    "E": "eh", "E#": "eh", "E2": "eh", "e": "eh", "e#": "eh", "e@": "eh",
    "eI": "ey", "e:": "ey",
    "I": "ih", "I#": "ih", "I2": "ih", "I2#": "ih",
    "i": "iy", "i:": "iy", "i@": "iy", "i@3": "iy",
    "U": "uh", "U@": "uh", "u": "uw", "u:": "uw",
    "aI": "ay", "aI@": "ay", "aI3": "ay", "aU": "aw", "aU@": "aw", "OI": "oy",
    "oU": "ow", "oU#": "ow", "o": "ow", "o:": "ow",
}  # fmt: skip

# Characters eSpeak puts before a phoneme name to mark stress; they are not part of the phone.
_STRESS_MARKS = "'\",%="


@dataclass(frozen=True)
class _VoiceBase:
    """One eSpeak voice: language (accent) plus variant, with the gender the variant declares."""

    language: str
    variant: str
    gender: str


# Alternating male / female and American / British so that any prefix of the list is balanced.
_VOICE_POOL: tuple[_VoiceBase, ...] = (
    _VoiceBase("en-us", "m3", "male"),
    _VoiceBase("en", "f2", "female"),
    _VoiceBase("en", "m1", "male"),
    _VoiceBase("en-us", "f4", "female"),
    _VoiceBase("en-us", "m7", "male"),
    _VoiceBase("en", "f1", "female"),
    _VoiceBase("en", "m6", "male"),
    _VoiceBase("en-us", "f5", "female"),
    _VoiceBase("en-us", "m2", "male"),
    _VoiceBase("en", "f3", "female"),
    _VoiceBase("en", "m4", "male"),
    _VoiceBase("en-us", "belinda", "female"),
    _VoiceBase("en-us", "Andy", "male"),
    _VoiceBase("en", "Annie", "female"),
    _VoiceBase("en", "ian", "male"),
    _VoiceBase("en-us", "steph", "female"),
    _VoiceBase("en-us", "robert", "male"),
    _VoiceBase("en", "aunty", "female"),
    _VoiceBase("en", "travis", "male"),
    _VoiceBase("en-us", "linda", "female"),
    _VoiceBase("en-us", "quincy", "male"),
    _VoiceBase("en", "Andrea", "female"),
    _VoiceBase("en", "paul", "male"),
    _VoiceBase("en-us", "anika", "female"),
)


@dataclass(frozen=True)
class SpeakerVoice:
    """How one speaker of the synthetic corpus speaks.

    Attributes:
        speaker: speaker id, also the folder name (``spk00``, ``spk01``, ...).
        espeak_voice: eSpeak voice name, language plus variant (``en-us+m3``).
        gender: ``male`` or ``female``, as the eSpeak variant declares it.
        accent: ``en-us`` (American) or ``en`` (British).
        rate: speaking rate in words per minute (eSpeak's ``espeakRATE``).
        pitch: base pitch, 0-100 with 50 the variant's own (``espeakPITCH``).
        pitch_range: pitch range, 0 monotone to 100, 50 the variant's own (``espeakRANGE``).
    """

    speaker: str
    espeak_voice: str
    gender: str
    accent: str
    rate: int
    pitch: int
    pitch_range: int


def speaker_voices(num_speakers: int, seed: int = 0) -> list[SpeakerVoice]:
    """The voices of a corpus: pool variants in a fixed order, rate, pitch and range drawn from ``seed``.

    Speakers beyond the pool size reuse a variant with other prosody parameters.

    Args:
        num_speakers: how many speakers.
        seed: seed of the prosody parameters.

    Returns:
        One :class:`SpeakerVoice` per speaker, ``spk00`` first.
    """
    voices = []
    for index in range(num_speakers):
        base = _VOICE_POOL[index % len(_VOICE_POOL)]
        rng = np.random.default_rng([seed, 1, index])
        voices.append(
            SpeakerVoice(
                speaker=f"spk{index:02d}",
                espeak_voice=f"{base.language}+{base.variant}",
                gender=base.gender,
                accent=base.language,
                rate=int(rng.integers(135, 196)),
                pitch=int(rng.integers(25, 76)),
                pitch_range=int(rng.integers(25, 86)),
            )
        )
    return voices


def espeak_phone(mnemonic: str) -> str:
    """Map an eSpeak English phoneme mnemonic (stress marks allowed) to a phone of :data:`PHONE_SET`.

    Raises:
        DataError: for a mnemonic outside eSpeak's English tables (another eSpeak NG data version).
    """
    name = mnemonic.lstrip(_STRESS_MARKS)
    try:
        return _ESPEAK_TO_PHONE[name]
    except KeyError:
        raise DataError(
            f"espeak-ng produced the phoneme {mnemonic!r}, which the synthetic corpus cannot map to its phone "
            "set; this espeak-ng data version is not supported (install the espeakng-loader version listed "
            "in pyproject.toml)"
        ) from None


# ----------------------------------------------------------------------------------------------------
# The eSpeak NG C API through ctypes (declarations from espeak-ng's speak_lib.h, API revision 12).

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAMETER_RATE = 1
_PARAMETER_PITCH = 3
_PARAMETER_RANGE = 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT``: one event of the list passed to the synthesis callback."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # output sample index within the message
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def _espeak_paths() -> tuple[str, str]:
    """(shared library path, data directory) of the espeak-ng that ``espeakng-loader`` ships."""
    try:
        import espeakng_loader
    except ImportError as error:
        raise DataError(
            f"the synthetic corpus needs the espeak-ng library from the PyPI package espeakng-loader ({error}); "
            "install it with `pip install espeakng-loader`"
        ) from None
    try:
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except (RuntimeError, OSError) as error:
        raise DataError(f"espeakng-loader is installed but incomplete: {error}; reinstall espeakng-loader") from None


def _load_espeak_library() -> tuple[ctypes.CDLL, str]:
    """Load libespeak-ng and declare the functions used here.

    Raises:
        DataError: if the package, the shared library or its data directory is missing or unloadable.
    """
    library_path, data_path = _espeak_paths()
    try:
        library = ctypes.CDLL(library_path)
    except OSError as error:
        raise DataError(
            f"cannot load the espeak-ng library {library_path}: {error}; reinstall espeakng-loader"
        ) from None
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    library.espeak_SetSynthCallback.restype = None
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetVoiceByName.restype = ctypes.c_int
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_SetParameter.restype = ctypes.c_int
    library.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]  # fmt: skip
    library.espeak_Synth.restype = ctypes.c_int
    library.espeak_Info.argtypes = [ctypes.POINTER(ctypes.c_char_p)]
    library.espeak_Info.restype = ctypes.c_char_p
    library.espeak_Terminate.restype = ctypes.c_int
    library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    library.espeak_ng_SetRandSeed.restype = None
    return library, data_path


class _Espeak:
    """The espeak-ng engine of this process, in synchronous mode with phoneme events.

    The C library is a process-wide singleton: create one instance per process.
    """

    def __init__(self, seed: int) -> None:
        self._library, data_path = _load_espeak_library()
        self.sample_rate = int(
            self._library.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_PHONEME_EVENTS
            )
        )
        if self.sample_rate <= 0:
            raise DataError(
                f"espeak-ng failed to initialise with its data directory {data_path}; reinstall espeakng-loader"
            )
        self._library.espeak_ng_SetRandSeed(seed)
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []
        self._callback = _SynthCallback(self._receive)  # kept referenced for as long as the library may call it
        self._library.espeak_SetSynthCallback(self._callback)

    @property
    def version(self) -> str:
        """espeak-ng version string, e.g. ``1.52.0``."""
        return self._library.espeak_Info(None).decode()

    def _receive(self, wav: ctypes._Pointer, num_samples: int, events: ctypes._Pointer) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_PHONEME:
                self._phonemes.append((int(event.sample), event.id.string.decode("utf-8", "replace")))
            index += 1
        return 0  # continue synthesis

    def set_voice(self, voice: SpeakerVoice, rate: int | None = None) -> None:
        """Select ``voice`` and its prosody; ``rate`` overrides the voice's words per minute."""
        status = self._library.espeak_SetVoiceByName(voice.espeak_voice.encode())
        if status != 0:
            raise DataError(
                f"espeak-ng has no voice {voice.espeak_voice!r} (status {status}); reinstall espeakng-loader"
            )
        self._library.espeak_SetParameter(_PARAMETER_RATE, voice.rate if rate is None else rate, 0)
        self._library.espeak_SetParameter(_PARAMETER_PITCH, voice.pitch, 0)
        self._library.espeak_SetParameter(_PARAMETER_RANGE, voice.pitch_range, 0)

    def synthesize(self, text: str) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """Speak ``text`` with the current voice.

        Returns:
            samples: int16 audio at :attr:`sample_rate`, shape ``(time,)``.
            phonemes: ``(start sample, eSpeak mnemonic)`` per phoneme event, in order.
        """
        self._chunks, self._phonemes = [], []
        encoded = text.encode("utf-8") + b"\0"
        status = self._library.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise DataError(f"espeak-ng failed to synthesise {text!r} (status {status})")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return samples, self._phonemes

    def close(self) -> None:
        """Release the library's buffers."""
        self._library.espeak_Terminate()


# ----------------------------------------------------------------------------------------------------
# One utterance and one speaker.


def phone_segments(phonemes: list[tuple[int, str]], num_samples: int) -> list[tuple[int, int, str]]:
    """Contiguous phone segments covering ``[0, num_samples)`` from eSpeak's phoneme start events.

    Audio before the first event is silence; each phoneme lasts until the next event; zero-length
    phonemes are dropped and adjacent silences merged.

    Args:
        phonemes: ``(start sample, eSpeak mnemonic)`` in order of time.
        num_samples: length of the audio.

    Returns:
        ``(start, end, phone)`` with ``start < end``, the first starting at 0 and the last ending at
        ``num_samples``.
    """
    starts = [(0, SILENCE)] + [(min(max(start, 0), num_samples), espeak_phone(name)) for start, name in phonemes]
    segments: list[tuple[int, int, str]] = []
    for (start, phone), (end, _) in zip(starts, starts[1:] + [(num_samples, SILENCE)]):
        if end <= start:
            continue
        if segments and phone == SILENCE and segments[-1][2] == SILENCE:
            segments[-1] = (segments[-1][0], end, SILENCE)
        else:
            segments.append((start, end, phone))
    return segments


def _render_utterance(
    samples: np.ndarray,
    segments: list[tuple[int, int, str]],
    source_rate: int,
    sample_rate: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Resample, pad with silence, set a random level and add a faint noise floor.

    The level is drawn per utterance, independently of the speaker, so that loudness says nothing
    about who speaks.

    Args:
        samples: int16 synthesiser output at ``source_rate``, shape ``(time,)``.
        segments: its phone segments, in samples at ``source_rate``.
        source_rate: the synthesiser's sample rate.
        sample_rate: the corpus sample rate.
        rng: random generator of this utterance (padding, jitter, noise).

    Returns:
        The int16 audio at ``sample_rate``, shape ``(time,)``, and its segments in samples at that rate.
    """
    audio = soxr.resample(samples.astype(np.float32) / 32768.0, source_rate, sample_rate, quality="HQ")
    ratio = sample_rate / source_rate
    lead = int(rng.integers(sample_rate // 20, sample_rate // 4))
    trail = int(rng.integers(sample_rate // 20, sample_rate // 4))
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    gain = float(rng.uniform(0.3, 0.9)) / peak if peak > 0 else 0.0  # peak at 0.3-0.9 of full scale
    noise_std = 10.0 ** (float(rng.uniform(-64.0, -56.0)) / 20.0)
    total = lead + audio.size + trail
    out = rng.standard_normal(total) * noise_std
    out[lead : lead + audio.size] += audio * gain
    pcm = np.clip(np.round(out * 32767.0), -32768, 32767).astype(np.int16)

    # boundaries move to the new rate, inside the padding, which is silence
    moved = [(0, lead, SILENCE)]
    for start, end, phone in segments:
        moved.append((lead + min(round(start * ratio), audio.size), lead + min(round(end * ratio), audio.size), phone))
    moved.append((lead + audio.size, total, SILENCE))
    resampled: list[tuple[int, int, str]] = []
    for _, end, phone in moved:
        start = resampled[-1][1] if resampled else 0  # contiguous by construction
        if end <= start:
            continue
        if resampled and resampled[-1][2] == phone == SILENCE:
            resampled[-1] = (resampled[-1][0], end, phone)
        else:
            resampled.append((start, end, phone))
    return pcm, resampled


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
    engine = _Espeak(seed=job.seed)
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
        pcm, segments = _render_utterance(samples, segments, engine.sample_rate, job.sample_rate, audio_rng)
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


# ----------------------------------------------------------------------------------------------------
# The corpus.


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
    progress: Callable[[int, int], None] | None = None,
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
        progress: called as ``progress(done, total)`` with the number of speakers finished and in total.

    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.

    Raises:
        UsageError: for an argument out of range, or an ``out_dir`` holding something else.
        DataError: if the espeak-ng library of ``espeakng-loader`` cannot be loaded.
    """
    if isinstance(num_speakers, bool) or not isinstance(num_speakers, int) or num_speakers < 1:
        raise UsageError(f"num_speakers must be an integer >= 1, got {num_speakers!r}")
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes < float("inf"):
        raise UsageError(f"minutes must be a number > 0, got {minutes!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 4000:
        raise UsageError(f"sample_rate must be an integer >= 4000 Hz, got {sample_rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be an integer >= 0, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be an integer >= 1 or None, got {workers!r}")
    minutes = float(minutes)
    out_dir = Path(out_dir)
    settings = _settings(num_speakers, minutes, seed, sample_rate)

    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a folder; choose another output folder")
    if _is_complete(out_dir, settings):
        if progress is not None:
            progress(num_speakers, num_speakers)
        return out_dir
    marker = out_dir / ".generating.json"
    if out_dir.is_dir() and any(out_dir.iterdir()):
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

    _load_espeak_library()  # fail here, with one clear message, rather than in every worker
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
    if progress is not None:
        progress(0, num_speakers)
    # multiprocessing.Pool's maxtasksperchild=1 gives each speaker a fresh worker process (see the module
    # docstring); ProcessPoolExecutor's max_tasks_per_child can deadlock on Python 3.11-3.14 (gh-115634).
    with _worker_context().Pool(processes=num_workers, maxtasksperchild=1) as pool:
        for index, result in pool.imap_unordered(_generate_speaker, jobs, chunksize=1):
            results[index] = result
            if progress is not None:
                progress(len(results), num_speakers)

    utterances = [item for index in range(num_speakers) for item in results[index]["utterances"]]
    (out_dir / "sentences.txt").write_text(
        "".join(f"{item['id']} {item['text']}\n" for item in utterances), encoding="utf-8"
    )
    total_samples = sum(item["num_samples"] for item in utterances)
    meta = {
        **settings,
        "source": f"espeak-ng {results[0]['espeak_version']} (PyPI espeakng-loader), phoneme events",
        "phone_set": list(PHONE_SET),
        "silence": SILENCE,
        "phone_folding": "TIMIT 39 classes (Lee & Hon, 1989)",
        "label_format": "<speaker>/<utterance>.phn: start_seconds end_seconds phone",
        "total_seconds": round(total_samples / sample_rate, 3),
        "num_utterances": len(utterances),
        "speakers": [
            {
                **asdict(voice),
                "num_utterances": len(results[index]["utterances"]),
                "seconds": round(sum(item["num_samples"] for item in results[index]["utterances"]) / sample_rate, 3),
            }
            for index, voice in enumerate(voices)
        ],
        "utterances": [
            {"id": item["id"], "speaker": item["speaker"], "num_samples": item["num_samples"]} for item in utterances
        ],
    }
    (out_dir / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    marker.unlink()
    return out_dir
