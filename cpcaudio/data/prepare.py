"""``prepare``: turn a source corpus into a prepared dataset (see :mod:`cpcaudio.data.format`).

One reader per source kind (:mod:`cpcaudio.data.sources`) lists the utterances; worker processes read,
check, mix down, resample (soxr) and label each one; the main process appends them in order to the
dataset files and publishes the dataset atomically. The source corpus is only ever read.

Checks made on every utterance (each failure is one line naming the file and the problem):
unreadable, corrupt or truncated audio, an empty file, NaN or infinite samples, audio shorter than the
default encoder's receptive field (465 samples), a file name that is not UTF-8, an utterance id that
occurs twice, a sample rate other than the dataset's when no resampling was asked for
(``sample_rate=None`` keeps the first file's rate), a
channel count other than the dataset's when channels are kept, labels that end more than
``label_tolerance`` label frames (default 2, i.e. 20 ms for audio) before or after the audio, frame
label files whose count differs from ``floor(samples / label_hop)`` by more than that, and phone
symbols outside a fixed phone set. ``on_error="fail"`` (default) stops at the first problem and removes
everything written so far; ``on_error="skip"`` leaves the file out and lists it in ``report.json``.
Before anything is written, the output folder must be creatable and writable and the dataset's size
(from the audio headers) must fit on its disk (:mod:`cpcaudio.resources`).
"""

from __future__ import annotations

import functools
import inspect
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.data.alignment import NO_LABEL, num_label_frames, segment_index_per_frame
from cpcaudio.data.audio import audio_info, convert_signal, display_path, is_utf8_name, read_audio, to_int16
from cpcaudio.data.format import (
    FORMAT_VERSION,
    SCRATCH_DIR,
    DatasetWriter,
    is_unfinished_dataset,
    prepare_output_dir,
)
from cpcaudio.data.labels import read_segment_file, read_textgrid
from cpcaudio.data.sources import READERS, SourcePlan, UtteranceItem
from cpcaudio.config import EncoderConfig
from cpcaudio.errors import DataError, UsageError
from cpcaudio.geometry import frame_geometry
from cpcaudio.resources import check_disk_space, check_output_dir, checks_skipped, disk_full_error, is_disk_full

ON_ERROR_CHOICES = ("fail", "skip")
DEFAULT_LABEL_TOLERANCE = 2  # label frames (20 ms for audio)
LABEL_FRAME_SECONDS = 0.01  # audio: one frame label per 10 ms
KINDS: tuple[str, ...] = tuple(READERS)
# Audio shorter than the receptive field of the default encoder (465 samples, 29 ms at 16 kHz) cannot fill
# one frame's view of the signal: a recording that short is broken, and is refused like a corrupt one.
_DEFAULT_ENCODER = EncoderConfig()
MIN_AUDIO_SAMPLES = frame_geometry(
    _DEFAULT_ENCODER.kernel_sizes, _DEFAULT_ENCODER.strides, _DEFAULT_ENCODER.resolved_paddings()
).receptive_field

ProgressCallback = Callable[[int, int], None]


@dataclass
class PrepareResult:
    """What :func:`prepare` made.

    Attributes:
        path: the dataset directory.
        meta: its ``meta.json``.
        skipped: ``{"file", "problem"}`` for every file left out (``on_error="skip"``).
        unmatched: named lists from the reader (``labels_without_audio``, ``audio_without_labels``, ...).
        seconds: wall-clock time the preparation took.
    """

    path: Path
    meta: dict
    skipped: list[dict[str, str]] = field(default_factory=list)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def hours(self) -> float:
        return float(self.meta["counts"]["hours"])


def prepare(
    kind: str,
    src: Union[str, os.PathLike, None],
    out: Union[str, os.PathLike],
    *,
    sample_rate: Optional[int] = None,
    mono: bool = True,
    workers: Optional[int] = None,
    on_error: str = "fail",
    overwrite: bool = False,
    progress: Optional[ProgressCallback] = None,
    limit: Optional[int] = None,
    label_tolerance: int = DEFAULT_LABEL_TOLERANCE,
    command: Optional[str] = None,
    **kind_options: Any,
) -> PrepareResult:
    """Prepare a source corpus into a dataset directory.

    Args:
        kind: source kind, one of ``folder``, ``librispeech``, ``timit``, ``textgrid``, ``fsdd``,
            ``uea``, ``synthetic`` (see the module of the same name in :mod:`cpcaudio.data.sources`).
        src: the source corpus (a folder; for ``uea`` also a bundled set name or ``.ts`` file; ignored
            for ``synthetic``). Never written to.
        out: the dataset directory to create; must be new or empty unless ``overwrite``.
        sample_rate: resample every file to this rate with soxr. ``None`` keeps the rate of the files,
            which must then all agree. For ``uea`` it only declares the series' rate.
        mono: mix all channels down to one; ``False`` keeps them (every file must have as many).
        workers: worker processes; ``None`` or 0: one per CPU (at most 8); 1: no subprocess.
        on_error: ``fail`` stops at the first bad file; ``skip`` leaves bad files out and reports them.
        overwrite: replace a dataset already in ``out``.
        progress: called as ``progress(done, total)`` after each utterance.
        limit: prepare only the first ``limit`` utterances of the listing (quick trials, tests).
        label_tolerance: allowed mismatch between label and audio length, in label frames.
        command: the command line to record in ``meta.json`` (default: this call, spelled out).
        **kind_options: options of the source kind's reader (e.g. ``fold_39=True`` for ``timit``).

    Returns:
        A :class:`PrepareResult`; open the dataset with ``PreparedDataset.open(result.path)``.

    Raises:
        UsageError: unknown kind or option, ``out`` not empty, ``out`` inside ``src``.
        DataError: a bad file (with ``on_error="fail"``), or nothing usable in ``src``.
    """
    started = time.perf_counter()
    reader = _reader(kind, kind_options)
    if on_error not in ON_ERROR_CHOICES:
        raise UsageError(f"on_error {on_error!r} is not one of {', '.join(ON_ERROR_CHOICES)}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive number of utterances, got {limit}")
    if sample_rate is not None and sample_rate < 1:
        raise UsageError(f"sample rate must be a positive number of Hz, got {sample_rate}")
    if label_tolerance < 0:
        raise UsageError(f"label tolerance must be >= 0 label frames, got {label_tolerance}")
    out = Path(out)
    source_path = _check_source_and_output(kind, src, out, overwrite)
    command = command or _describe_call(kind, src, out, sample_rate, mono, on_error, limit, kind_options)

    created_out = not out.exists()
    writer: Optional[DatasetWriter] = None
    scratch = out / SCRATCH_DIR
    try:
        if kind == "synthetic":
            prepare_output_dir(out, overwrite)
            kind_options = {"sample_rate": sample_rate or 16000, **kind_options, "scratch_dir": scratch}
            plan = reader(src, **kind_options)
        else:
            if kind == "uea":
                kind_options = {**kind_options, "sample_rate": sample_rate}
            plan = reader(source_path if source_path is not None else src, **kind_options)
            prepare_output_dir(out, overwrite)
        skipped: list[dict[str, str]] = []
        for origin, problem in plan.rejected:
            _handle_failure(on_error, skipped, origin, f"{origin}: {problem}")
        items = plan.items[:limit] if limit is not None else list(plan.items)
        items = _check_names(items, on_error, skipped)
        settings, items = _settings(plan, items, sample_rate, mono, label_tolerance, on_error, skipped)
        _check_disk(out, items, settings, plan)
        writer = DatasetWriter(
            out,
            signal_dtype="int16" if plan.signal_kind == "audio" else "float32",
            num_channels=settings.num_channels,
            with_frame_labels=plan.has_frame_labels,
            utterance_label_names=plan.utterance_label_names,
        )
        vocabulary = _LabelVocabulary(plan.phone_vocabulary)
        kept: list[UtteranceItem] = []
        total = len(items)
        load = functools.partial(_load_utterance, settings=settings)
        use_workers = _num_workers(workers) if plan.signal_kind == "audio" else 1
        results = _ordered_map(load, list(enumerate(items)), use_workers)
        try:
            for done, result in enumerate(results, start=1):
                if isinstance(result, _Failed):
                    _handle_failure(on_error, skipped, result.origin, result.problem)
                else:
                    item = items[result.position]
                    labels = None
                    if plan.has_frame_labels:
                        labels = vocabulary.to_ids(result.label_codes, result.label_symbols)
                    try:
                        writer.add(
                            item.utterance_id, item.speaker, item.split, result.signal, labels, item.utterance_labels
                        )
                    except OSError as error:
                        if is_disk_full(error):
                            raise disk_full_error(out, error, "the prepared dataset") from None
                        raise
                    kept.append(item)
                if progress is not None:
                    progress(done, total)
        finally:
            results.close()
        if not kept:
            raise DataError(f"{src}: no usable utterances ({len(skipped)} skipped, see the messages above)")
        if plan.has_frame_labels and vocabulary.is_open:
            writer.remap_frame_labels(vocabulary.sorted_remap())
        meta = _meta(plan, kept, settings, writer, skipped, sample_rate, mono, label_tolerance, on_error, limit)
        meta["vocabularies"]["phone"] = vocabulary.symbols() if plan.has_frame_labels else None
        if meta["vocabularies"]["phone"] is None:
            del meta["vocabularies"]["phone"]
        meta["source"]["path"] = str(Path(src).resolve()) if source_path is not None else (
            None if kind == "synthetic" else str(src)
        )
        meta["command"] = command
        report = {
            "skipped": skipped,
            **{name: values for name, values in plan.unmatched.items()},
        }
        try:
            writer.finish(meta, report)
        except OSError as error:
            if is_disk_full(error):
                raise disk_full_error(out, error, "the prepared dataset") from None
            raise
        writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        if created_out and out.is_dir() and not any(p for p in out.iterdir() if p.name != SCRATCH_DIR):
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return PrepareResult(
        path=out, meta=meta, skipped=skipped, unmatched=dict(plan.unmatched), seconds=time.perf_counter() - started
    )


# ---- options and paths -------------------------------------------------------------------------------


def _reader(kind: str, kind_options: dict) -> Callable[..., SourcePlan]:
    if kind not in READERS:
        raise UsageError(f"unknown source kind {kind!r}; choose one of {', '.join(READERS)}")
    accepted = kind_option_names(kind)
    for name in kind_options:
        if name not in accepted:
            raise UsageError(
                f"option {name!r} does not apply to the {kind} kind (its options: {', '.join(accepted) or 'none'})"
            )
    return READERS[kind]


_SET_BY_PREPARE = ("scratch_dir", "sample_rate")  # reader parameters that prepare() fills in itself


def kind_option_names(kind: str) -> list[str]:
    """Names of the options the reader of ``kind`` accepts (``prepare(kind, ..., **options)``)."""
    return [
        name
        for name, parameter in inspect.signature(READERS[kind]).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in _SET_BY_PREPARE
    ]


def _check_source_and_output(kind: str, src: Any, out: Path, overwrite: bool) -> Optional[Path]:
    """The source as a path (``None`` when it is not one), after checking ``out`` is usable."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not overwrite and not is_unfinished_dataset(out):
        raise UsageError(f"{out} is not empty; pass --overwrite to replace the dataset there")
    check_output_dir(out, "dataset directory")
    if kind == "synthetic" or src is None:
        return None
    source = Path(src)
    if not source.exists():
        if kind == "uea":  # a bundled set name
            return None
        raise DataError(f"{source}: no such source corpus")
    resolved_source, resolved_out = source.resolve(), out.resolve()
    if source.is_dir() and (resolved_out == resolved_source or resolved_source in resolved_out.parents):
        raise UsageError(
            f"{out} is inside the source corpus {source}; prepare never writes into the source, choose "
            "an output directory outside it"
        )
    return source


def _describe_call(kind, src, out, sample_rate, mono, on_error, limit, kind_options) -> str:
    parts = [repr(kind), repr(str(src) if src is not None else None), repr(str(out))]
    named = {"sample_rate": sample_rate, "mono": mono, "on_error": on_error, "limit": limit, **kind_options}
    parts += [f"{k}={v!r}" for k, v in named.items() if v is not None]
    return f"cpcaudio.data.prepare({', '.join(parts)})"


def _num_workers(workers: Optional[int]) -> int:
    if workers is None or workers == 0:
        return max(1, min(os.cpu_count() or 1, 8))
    if workers < 0:
        raise UsageError(f"workers must be >= 0, got {workers}")
    return workers


def _handle_failure(on_error: str, skipped: list[dict[str, str]], origin: str, problem: str) -> None:
    if on_error == "fail":
        raise DataError(f"{problem} (use --on-error skip to leave such files out)")
    skipped.append({"file": display_path(origin), "problem": problem})


def _check_names(items: list[UtteranceItem], on_error: str, skipped: list[dict[str, str]]) -> list[UtteranceItem]:
    """Leave out (or refuse) files whose name is not UTF-8 and utterance ids that occur twice."""
    kept: list[UtteranceItem] = []
    first_origin: dict[str, str] = {}
    for item in items:
        origin = display_path(item.origin)
        if not all(is_utf8_name(text) for text in (item.utterance_id, item.speaker)):  # both are stored as text
            _handle_failure(
                on_error, skipped, item.origin,
                f"{origin}: the file name is not valid UTF-8; rename it (e.g. with convmv -f latin1 -t utf8)",
            )
            continue
        if item.utterance_id in first_origin:
            _handle_failure(
                on_error, skipped, item.origin,
                f"{origin}: utterance id {item.utterance_id!r} is also the id of {first_origin[item.utterance_id]}; "
                "ids must be unique, rename or remove one of the two",
            )
            continue
        first_origin[item.utterance_id] = origin
        kept.append(item)
    return kept


def _check_disk(out: Path, items: list[UtteranceItem], settings: _Settings, plan: SourcePlan) -> None:
    """Refuse to start when the dataset's arrays cannot fit on the output disk (sizes from file headers)."""
    if checks_skipped():
        return
    itemsize = 2 if settings.signal_kind == "audio" else 4
    needed = 0
    for item in items:
        if item.array is not None:
            samples = int(np.asarray(item.array).shape[-1])
        else:
            try:
                rate, _, frames = audio_info(item.audio_path)
            except DataError:
                continue  # reported when the file is read
            target = settings.target_rate or rate
            samples = -(-frames * target // rate)
        needed += samples * settings.num_channels * itemsize + 128  # + one index row
        if plan.has_frame_labels:
            needed += 2 * (-(-samples // settings.label_hop))
    check_disk_space(out, needed, "the prepared dataset", "free some space or choose another output directory")


# ---- per-utterance work (runs in worker processes) ---------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    signal_kind: str
    target_rate: Optional[int]  # resample to this rate; None: files must be at dataset_rate
    dataset_rate: int
    mono: bool
    num_channels: int
    label_hop: int
    label_tolerance: int
    has_frame_labels: bool
    symbol_map: Optional[dict] = None  # source symbol -> stored symbol (None = no label)
    fixed_symbols: Optional[frozenset] = None  # fixed phone set (unknown symbols are errors)
    num_fixed_ids: int = 0  # ready-made frame labels must be < this
    min_samples: int = 0  # shorter signals (after resampling) are refused


@dataclass
class _Loaded:
    position: int
    signal: np.ndarray  # (time, channels) int16 or float32
    label_codes: Optional[np.ndarray] = None  # int (label frames,): ids, or codes into label_symbols
    label_symbols: Optional[list[str]] = None  # None: label_codes are already vocabulary ids


@dataclass
class _Failed:
    position: int
    origin: str
    problem: str


def _settings(
    plan: SourcePlan,
    items: list[UtteranceItem],
    sample_rate: Optional[int],
    mono: bool,
    label_tolerance: int,
    on_error: str,
    skipped: list[dict[str, str]],
) -> tuple[_Settings, list[UtteranceItem]]:
    """Decide the dataset's rate and channel count from the first readable item."""
    remaining = list(items)
    while remaining:
        item = remaining[0]
        try:
            if item.array is not None:
                rate, channels = plan.sample_rate or 1, int(np.asarray(item.array).shape[0])
            else:
                rate, channels, _ = audio_info(item.audio_path)
            break
        except DataError as error:
            _handle_failure(on_error, skipped, item.origin, str(error))
            remaining.pop(0)
    else:
        unmatched = "; ".join(f"{name}: {len(values)}" for name, values in plan.unmatched.items() if values)
        raise DataError(
            f"no usable utterances found by the {plan.kind} reader"
            + (f" ({unmatched}, see the lists and label files given)" if unmatched else "")
            + "; check the source path and the kind"
        )
    if plan.signal_kind == "timeseries":
        dataset_rate, target_rate, label_hop = int(sample_rate or plan.sample_rate or 1), None, 1
        num_channels = channels
    else:
        dataset_rate = int(sample_rate or rate)
        target_rate = sample_rate
        label_hop = max(1, int(round(dataset_rate * LABEL_FRAME_SECONDS)))
        num_channels = 1 if mono else channels
    fixed = plan.phone_vocabulary
    settings = _Settings(
        signal_kind=plan.signal_kind,
        target_rate=target_rate,
        dataset_rate=dataset_rate,
        mono=mono,
        num_channels=num_channels,
        label_hop=label_hop,
        label_tolerance=label_tolerance,
        has_frame_labels=plan.has_frame_labels,
        symbol_map=plan.symbol_map,
        fixed_symbols=frozenset(fixed) if fixed is not None and plan.symbol_map is None else None,
        num_fixed_ids=len(fixed) if fixed is not None else 0,
        min_samples=MIN_AUDIO_SAMPLES if plan.signal_kind == "audio" else 1,
    )
    return settings, remaining


def _load_utterance(numbered: tuple[int, UtteranceItem], settings: _Settings) -> Union[_Loaded, _Failed]:
    """Read, check and convert one utterance; failures come back as values (never raised)."""
    position, item = numbered
    try:
        if item.array is not None:
            return _Loaded(position, _series_signal(item, settings))
        samples, rate = read_audio(item.audio_path)
        if settings.target_rate is None and rate != settings.dataset_rate:
            raise DataError(
                f"{item.audio_path}: sample rate {rate} Hz differs from the dataset's {settings.dataset_rate} Hz "
                f"(the first file's); pass --sample-rate {settings.dataset_rate} to resample every file"
            )
        if not settings.mono and samples.shape[1] != settings.num_channels:
            raise DataError(
                f"{item.audio_path}: {samples.shape[1]} channels, the dataset has {settings.num_channels}; "
                "pass --mono to mix every file down to one channel"
            )
        signal = to_int16(convert_signal(samples, rate, settings.target_rate, settings.mono, item.audio_path))
        if signal.shape[0] < settings.min_samples:
            raise DataError(
                f"{display_path(item.audio_path)}: only {signal.shape[0]} samples "
                f"({1000 * signal.shape[0] / settings.dataset_rate:.1f} ms), shorter than the "
                f"{settings.min_samples}-sample receptive field of the default encoder; remove the file"
            )
        if not settings.has_frame_labels:
            return _Loaded(position, signal)
        codes, symbols = _utterance_frame_labels(item, signal.shape[0], rate, settings)
        return _Loaded(position, signal, codes, symbols)
    except DataError as error:
        return _Failed(position, item.origin, str(error))


def _series_signal(item: UtteranceItem, settings: _Settings) -> np.ndarray:
    array = np.asarray(item.array, dtype=np.float32)  # (C, T)
    if array.ndim != 2 or array.shape[0] != settings.num_channels:
        raise DataError(
            f"series {item.utterance_id}: shape {array.shape}, expected ({settings.num_channels}, time)"
        )
    valid = ~np.isnan(array).all(axis=0)
    length = int(np.nonzero(valid)[0][-1]) + 1 if valid.any() else 0  # trim trailing NaN padding
    array = array[:, :length]
    if length == 0:
        raise DataError(f"series {item.utterance_id}: no values (empty or all missing)")
    if not np.isfinite(array).all():
        raise DataError(f"series {item.utterance_id}: missing (NaN) or infinite values inside the series")
    return np.ascontiguousarray(array.T)  # (T, C)


def _utterance_frame_labels(
    item: UtteranceItem, num_samples: int, source_rate: int, settings: _Settings
) -> tuple[np.ndarray, Optional[list[str]]]:
    hop, tolerance = settings.label_hop, settings.label_tolerance
    count = num_label_frames(num_samples, hop)
    if item.labels is None:
        return np.full(count, NO_LABEL, dtype=np.int64), None
    if item.labels.frames is not None:
        frames = np.asarray(item.labels.frames, dtype=np.int64)
        expected = num_samples // hop
        if abs(len(frames) - expected) > tolerance:
            raise DataError(
                f"{item.audio_path}: {len(frames)} frame labels for {expected} frames of audio "
                f"({num_samples} samples / {hop}); more than the tolerance of {tolerance} frames"
            )
        bad = frames[(frames < 0) | (frames >= settings.num_fixed_ids)]
        if bad.size:
            raise DataError(
                f"{item.audio_path}: frame label {int(bad[0])} is not a known class "
                f"(0 .. {settings.num_fixed_ids - 1}); pass the right number of classes"
            )
        out = np.full(count, NO_LABEL, dtype=np.int64)
        used = min(count, len(frames))
        out[:used] = frames[:used]
        return out, None
    path = item.labels.path
    if path.suffix.lower() == ".textgrid":
        segments = read_textgrid(path, item.labels.tier)
    else:
        segments = read_segment_file(path, item.labels.units, source_rate)  # type: ignore[arg-type]
    rate = settings.target_rate or source_rate
    duration, end = num_samples / rate, segments[-1].end
    allowed = tolerance * hop / rate
    if abs(end - duration) > allowed + 1e-9:
        raise DataError(
            f"{path}: labels end at {end:.3f} s but the audio lasts {duration:.3f} s; more than the "
            f"tolerance of {tolerance} label frames ({allowed * 1000:.0f} ms)"
        )
    symbols: list[str] = []
    code_of: dict[str, int] = {}
    segment_codes = np.empty(len(segments), dtype=np.int64)
    for number, segment in enumerate(segments):
        symbol: Optional[str] = segment.symbol
        if settings.symbol_map is not None:
            if symbol not in settings.symbol_map:
                raise DataError(f"{path}: unknown phone symbol {symbol!r} (segment {number + 1})")
            symbol = settings.symbol_map[symbol]
        elif settings.fixed_symbols is not None and symbol not in settings.fixed_symbols:
            raise DataError(f"{path}: phone symbol {symbol!r} (segment {number + 1}) is not in the phone set")
        if symbol is None:
            segment_codes[number] = NO_LABEL
            continue
        if symbol not in code_of:
            code_of[symbol] = len(symbols)
            symbols.append(symbol)
        segment_codes[number] = code_of[symbol]
    index = segment_index_per_frame(
        [s.start for s in segments], [s.end for s in segments], num_samples, rate, hop
    )
    codes = np.where(index >= 0, segment_codes[np.maximum(index, 0)], NO_LABEL)
    return codes, symbols


# ---- label ids ---------------------------------------------------------------------------------------


class _LabelVocabulary:
    """Maps per-utterance symbol codes to dataset-wide label ids (fixed set, or open and sorted at the end)."""

    def __init__(self, fixed: Optional[list[str]]) -> None:
        self.is_open = fixed is None
        self._symbols: list[str] = list(fixed) if fixed is not None else []
        self._ids = {symbol: i for i, symbol in enumerate(self._symbols)}

    def to_ids(self, codes: Optional[np.ndarray], symbols: Optional[list[str]]) -> np.ndarray:
        if codes is None:
            raise AssertionError("frame labels missing for a dataset with frame labels")
        if symbols is None:
            return codes
        table = np.empty(len(symbols) + 1, dtype=np.int64)
        table[0] = NO_LABEL
        for code, symbol in enumerate(symbols):
            if symbol not in self._ids:
                if not self.is_open:
                    raise AssertionError(f"symbol {symbol!r} outside a fixed set passed the worker's check")
                self._ids[symbol] = len(self._symbols)
                self._symbols.append(symbol)
            table[code + 1] = self._ids[symbol]
        return table[codes + 1]

    def sorted_remap(self) -> np.ndarray:
        """Table ``new_id[old_id + 1]`` (``-1 -> -1``) that sorts an open vocabulary."""
        order = sorted(range(len(self._symbols)), key=lambda i: self._symbols[i])
        table = np.full(len(self._symbols) + 1, NO_LABEL, dtype=np.int64)
        for new_id, old_id in enumerate(order):
            table[old_id + 1] = new_id
        self._symbols = [self._symbols[i] for i in order]
        self._ids = {symbol: i for i, symbol in enumerate(self._symbols)}
        return table

    def symbols(self) -> list[str]:
        return list(self._symbols)


# ---- parallel, in-order map --------------------------------------------------------------------------


def _ordered_map(function: Callable, items: Iterable, workers: int, ahead_per_worker: int = 4) -> Iterator:
    """``map(function, items)`` in input order, over ``workers`` processes with bounded look-ahead."""
    if workers <= 1:
        for item in items:
            yield function(item)
        return
    iterator = iter(items)
    pool = ProcessPoolExecutor(max_workers=workers)
    pending: deque[Future] = deque()
    try:
        for item in iterator:
            pending.append(pool.submit(function, item))
            if len(pending) >= workers * ahead_per_worker:
                break
        while pending:
            result = pending.popleft().result()
            for item in iterator:
                pending.append(pool.submit(function, item))
                break
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---- meta --------------------------------------------------------------------------------------------


def _natural_key(value: str) -> tuple:
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def _meta(
    plan: SourcePlan,
    kept: list[UtteranceItem],
    settings: _Settings,
    writer: DatasetWriter,
    skipped: list[dict[str, str]],
    sample_rate: Optional[int],
    mono: bool,
    label_tolerance: int,
    on_error: str,
    limit: Optional[int],
) -> dict:
    from cpcaudio import __version__

    speakers = sorted({item.speaker for item in kept})
    vocabularies: dict[str, Any] = {"speaker": speakers}
    for name in plan.utterance_label_names:
        values = {item.utterance_labels.get(name, "") for item in kept} - {""}
        vocabularies[name] = sorted(values, key=_natural_key)
    splits: dict[str, int] = {}
    for item in kept:
        splits[item.split] = splits.get(item.split, 0) + 1
    counts = {
        "utterances": len(kept),
        "speakers": len(speakers),
        "total_samples": writer.total_samples,
        "hours": writer.total_samples / settings.dataset_rate / 3600.0,
        "skipped": len(skipped),
        **{name: len(values) for name, values in plan.unmatched.items()},
    }
    return {
        "format_version": FORMAT_VERSION,
        "signal_kind": settings.signal_kind,
        "sample_rate": settings.dataset_rate,
        "num_channels": settings.num_channels,
        "label_hop": settings.label_hop,
        "frame_label_name": "phone" if plan.has_frame_labels else None,
        "vocabularies": vocabularies,
        "utterance_labels": list(plan.utterance_label_names),
        "splits": dict(sorted(splits.items())),
        "split_rule": plan.split_rule,
        "source": {"kind": plan.kind, "options": plan.source},
        "preparation": {
            "resampled_to": sample_rate if plan.signal_kind == "audio" else None,
            "mono": mono,
            "label_tolerance_frames": label_tolerance,
            "on_error": on_error,
            "limit": limit,
        },
        "counts": counts,
        "cpcaudio_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
