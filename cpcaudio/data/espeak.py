"""The eSpeak NG speech synthesiser through its C API (:mod:`ctypes`), with phoneme events.

The shared library and its data come from the PyPI package ``espeakng-loader``; the declarations follow
espeak-ng's ``speak_lib.h`` (API revision 12). eSpeak reports a phoneme event at the exact output sample
where each phoneme starts, which is what makes the synthetic corpus's labels exact.
"""

from __future__ import annotations

import ctypes

import numpy as np

from cpcaudio.data.synthetic_voices import SpeakerVoice
from cpcaudio.errors import DataError

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


def espeak_paths() -> tuple[str, str]:
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


def load_espeak_library() -> tuple[ctypes.CDLL, str]:
    """Load libespeak-ng and declare the functions used here.

    Raises:
        DataError: if the package, the shared library or its data directory is missing or unloadable.
    """
    library_path, data_path = espeak_paths()
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


class Espeak:
    """The espeak-ng engine of this process, in synchronous mode with phoneme events.

    The C library is a process-wide singleton: create one instance per process.
    """

    def __init__(self, seed: int) -> None:
        self._library, data_path = load_espeak_library()
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
