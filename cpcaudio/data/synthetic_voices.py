"""The voices of the synthetic corpus and how one utterance is rendered from eSpeak's output.

Speakers are eSpeak voice variants (``en-us+m3``, ``en+f2``, ...) with their own speaking rate, pitch and
pitch range; eSpeak's phoneme mnemonics are mapped to the 39 TIMIT classes (Lee & Hon, 1989), silence
included as ``sil``; phoneme start events become contiguous phone segments; each utterance is resampled,
padded with silence, set to a random level and given a faint noise floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from cpcaudio.errors import DataError

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


# ---- one utterance ---------------------------------------------------------------------------------------


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


def render_utterance(
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
