"""``prepare``: turn a source corpus into a prepared dataset (see :mod:`cpcaudio.data.format`).

One reader per source kind (:mod:`cpcaudio.data.sources`) lists the utterances; worker processes read,
check, mix down, resample (soxr) and label each one (:mod:`cpcaudio.data.decode`); the main process
appends them in order to the dataset files (:class:`~cpcaudio.data.format.DatasetWriter`) and publishes
the dataset atomically. The source corpus is only ever read.

Checks made on every utterance (each failure is one line naming the file and the problem):
unreadable, corrupt or truncated audio, an empty file, NaN or infinite samples, audio shorter than the
default encoder's receptive field (465 samples), a file name that is not UTF-8, an utterance id that
occurs twice, a sample rate other than the dataset's when no resampling was asked for
(``sample_rate=None`` keeps the first file's rate), a
channel count other than the dataset's when channels are kept, labels that end more than
``label_tolerance`` label frames (default 2, i.e. 20 ms for audio) before or after the audio, frame
label files whose count differs from ``floor(samples / label_hop)`` by more than that, and phone
symbols outside a fixed phone set, and broken symbolic links in the source (symlinked folders are
followed). ``on_error="fail"`` (default) stops at the first problem and removes everything written so
far; ``on_error="skip"`` leaves the file out and lists it in ``report.json``. Samples beyond full scale
are clipped and listed in ``report.json`` (``clipping="clip"``), scaled down (``"scale"``) or refused
(``"fail"``), see :mod:`cpcaudio.data.stream`.
The whole preparation holds the output folder's writer lock (:func:`~cpcaudio.data.format.dataset_lock`),
taken before anything in it is looked at: a second ``prepare`` into the same folder is refused. Before
anything is written, the output folder must be creatable and writable and the dataset's size (from the
audio headers) must fit on its disk (:mod:`cpcaudio.resources`). Long files are converted in blocks, so
memory does not grow with file length.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from cpcaudio.data.audio import audio_info, display_path
from cpcaudio.data.decode import (
    LABEL_FRAME_SECONDS,
    MIN_AUDIO_SAMPLES,
    DecodeSettings,
    Failed,
    decode_settings,
    decode_utterance,
    ordered_map,
)
from cpcaudio.data.dataset_meta import dataset_meta
from cpcaudio.data.format import (
    SCRATCH_DIR,
    SPOOL_DIR,
    DatasetWriter,
    dataset_lock,
    is_unfinished_dataset,
    prepare_output_dir,
)
from cpcaudio.data.prepare_checks import check_disk, check_names, handle_failure
from cpcaudio.data.sources import SOURCE_KINDS, SourceKind, SourcePlan, UtteranceItem, source_kind
from cpcaudio.data.stream import CLIPPING_CHOICES
from cpcaudio.data.vocabulary import LabelVocabulary
from cpcaudio.errors import DataError, UsageError
from cpcaudio.locks import LOCK_FILE
from cpcaudio.progress import Progress, ProgressCallback, report
from cpcaudio.resources import check_output_dir, disk_full_error, is_disk_full

__all__ = [
    "CLIPPING_CHOICES",
    "DEFAULT_LABEL_TOLERANCE",
    "KINDS",
    "LABEL_FRAME_SECONDS",
    "MIN_AUDIO_SAMPLES",
    "ON_ERROR_CHOICES",
    "PrepareResult",
    "kind_option_names",
    "prepare",
]

ON_ERROR_CHOICES = ("fail", "skip")
DEFAULT_LABEL_TOLERANCE = 2  # label frames (20 ms for audio)
KINDS: tuple[str, ...] = tuple(SOURCE_KINDS)


@dataclass
class PrepareResult:
    """What :func:`prepare` made.

    Attributes:
        path: the dataset directory.
        meta: its ``meta.json``.
        skipped: ``{"file", "problem"}`` for every file left out (``on_error="skip"``).
        unmatched: named lists from the reader (``labels_without_audio``, ``audio_without_labels``, ...).
        seconds: wall-clock time the preparation took.
        clipped: one entry per file with samples beyond full scale (``file``, ``fraction``, ``peak``,
            ``action``: clipped or scaled), as in ``report.json``.
    """

    path: Path
    meta: dict
    skipped: list[dict[str, str]] = field(default_factory=list)
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    clipped: list[dict] = field(default_factory=list)

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
    clipping: str = "clip",
    command: Optional[str] = None,
    **kind_options: Any,
) -> PrepareResult:
    """Prepare a source corpus into a dataset directory.

    Args:
        kind: source kind, a key of :data:`cpcaudio.data.sources.SOURCE_KINDS` (``folder``,
            ``librispeech``, ``timit``, ``textgrid``, ``fsdd``, ``uea``, ``synthetic``; see the module of
            the same name in :mod:`cpcaudio.data.sources`).
        src: the source corpus (a folder; for ``uea`` also a bundled set name or ``.ts`` file; ignored
            for ``synthetic``). Never written to.
        out: the dataset directory to create; must be new or empty unless ``overwrite``.
        sample_rate: resample every file to this rate with soxr. ``None`` keeps the rate of the files,
            which must then all agree. For ``uea`` it only declares the series' rate.
        mono: mix all channels down to one; ``False`` keeps them (every file must have as many).
        workers: worker processes; ``None`` or 0: one per CPU (at most 8); 1: no subprocess.
        on_error: ``fail`` stops at the first bad file; ``skip`` leaves bad files out and reports them.
        overwrite: replace a dataset already in ``out``.
        progress: receives a :class:`~cpcaudio.progress.Progress` event (stage ``prepare``, unit
            ``utt``) before the first utterance and after each one.
        limit: prepare only the first ``limit`` utterances of the listing (quick trials, tests).
        label_tolerance: allowed mismatch between label and audio length, in label frames.
        clipping: samples beyond full scale: ``clip`` them (listed in ``report.json`` and
            ``PrepareResult.clipped``), ``scale`` the file down by its peak, or ``fail`` (a bad file,
            handled by ``on_error``).
        command: the command line to record in ``meta.json`` (default: this call, spelled out).
        **kind_options: options the kind's reader declares (e.g. ``fold_39=True`` for ``timit``; see
            :func:`kind_option_names`).

    Returns:
        A :class:`PrepareResult`; open the dataset with ``PreparedDataset.open(result.path)``.

    Raises:
        UsageError: unknown kind or option, ``out`` not empty, ``out`` inside ``src``, another ``prepare``
            writing into ``out`` (:class:`~cpcaudio.locks.OutputLockedError`).
        DataError: a bad file (with ``on_error="fail"``), or nothing usable in ``src``.
    """
    started = time.perf_counter()
    declared = source_kind(kind)
    declared.check_options(kind_options)
    if on_error not in ON_ERROR_CHOICES:
        raise UsageError(f"on_error {on_error!r} is not one of {', '.join(ON_ERROR_CHOICES)}")
    if clipping not in CLIPPING_CHOICES:
        raise UsageError(f"clipping {clipping!r} is not one of {', '.join(CLIPPING_CHOICES)}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be a positive number of utterances, got {limit}")
    if sample_rate is not None and sample_rate < 1:
        raise UsageError(f"sample rate must be a positive number of Hz, got {sample_rate}")
    if label_tolerance < 0:
        raise UsageError(f"label tolerance must be >= 0 label frames, got {label_tolerance}")
    out = Path(out)
    source_path = _check_paths(declared, src, out)
    command = command or _describe_call(kind, src, out, sample_rate, mono, on_error, limit, kind_options)
    options = {"sample_rate": sample_rate, "mono": mono, "on_error": on_error, "limit": limit,
               "label_tolerance": label_tolerance, "clipping": clipping}
    created_out = not out.exists()
    with dataset_lock(out):  # before anything in out is looked at: one prepare per folder
        try:
            return _prepare_locked(declared, src, source_path, out, overwrite, workers, progress, command,
                                   options, kind_options, started)
        except BaseException:
            if created_out and out.is_dir() and not any(_own_leftovers(out)):
                shutil.rmtree(out, ignore_errors=True)
            raise


def _prepare_locked(
    declared: SourceKind,
    src: Any,
    source_path: Optional[Path],
    out: Path,
    overwrite: bool,
    workers: Optional[int],
    progress: Optional[ProgressCallback],
    command: str,
    options: dict[str, Any],
    kind_options: dict[str, Any],
    started: float,
) -> PrepareResult:
    """The body of :func:`prepare`, run while the output folder's lock is held."""
    if out.is_dir() and any(_own_leftovers(out)) and not overwrite and not is_unfinished_dataset(out):
        raise UsageError(f"{out} is not empty; pass --overwrite to replace the dataset there")
    on_error, limit, sample_rate = options["on_error"], options["limit"], options["sample_rate"]
    writer: Optional[DatasetWriter] = None
    scratch, spool = out / SCRATCH_DIR, out / SPOOL_DIR
    try:
        listed = src if source_path is None else source_path
        plan = _list_source(declared, listed, out, overwrite, sample_rate, kind_options)
        skipped: list[dict[str, str]] = []
        for origin, problem in plan.rejected:
            handle_failure(on_error, skipped, origin, f"{origin}: {problem}")
        items = plan.items[:limit] if limit is not None else list(plan.items)
        items = check_names(items, on_error, skipped)
        settings, items = _settings(plan, items, options, str(spool), skipped)
        check_disk(out, items, settings, plan)
        spool.mkdir(exist_ok=True)
        writer = DatasetWriter(
            out,
            signal_dtype="int16" if plan.signal_kind == "audio" else "float32",
            num_channels=settings.num_channels,
            with_frame_labels=plan.has_frame_labels,
            utterance_label_names=plan.utterance_label_names,
        )
        vocabulary = LabelVocabulary(plan.phone_vocabulary)
        workers = _num_workers(workers) if plan.signal_kind == "audio" else 1
        clipped: list[dict] = []
        kept = _write_utterances(writer, plan, items, settings, vocabulary, workers, on_error, skipped, clipped,
                                 progress)
        if not kept:
            raise DataError(f"{src}: no usable utterances ({len(skipped)} skipped, see the messages above)")
        if plan.has_frame_labels and vocabulary.is_open:
            writer.remap_frame_labels(vocabulary.sorted_remap())
        preparation = {
            "resampled_to": sample_rate if plan.signal_kind == "audio" else None,
            "mono": options["mono"],
            "label_tolerance_frames": options["label_tolerance"],
            "on_error": on_error,
            "limit": limit,
            "clipping": options["clipping"],
        }
        recorded_source = str(Path(src).resolve()) if source_path is not None else (
            None if declared.source == "none" else str(src)
        )
        meta = dataset_meta(
            plan, kept, settings, writer.total_samples, len(skipped), preparation,
            vocabulary.symbols() if plan.has_frame_labels else None, recorded_source, command,
        )
        meta["counts"]["clipped"] = len(clipped)
        with _disk_full_as_error(out):
            writer.finish(meta, {"skipped": skipped, **plan.unmatched, "clipped": clipped})
        writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        for folder in (scratch, spool):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    return PrepareResult(
        path=out, meta=meta, skipped=skipped, unmatched=dict(plan.unmatched), seconds=time.perf_counter() - started,
        clipped=clipped,
    )


def _own_leftovers(out: Path) -> Iterator[Path]:
    """Entries of ``out`` other than the lock file and the scratch folders of a preparation."""
    return (p for p in out.iterdir() if p.name not in (SCRATCH_DIR, SPOOL_DIR, LOCK_FILE))


def kind_option_names(kind: str) -> list[str]:
    """Names of the options the reader of ``kind`` accepts (``prepare(kind, ..., **options)``)."""
    return source_kind(kind).option_names()


# ---- the steps of prepare() ------------------------------------------------------------------------------


def _list_source(
    declared: SourceKind,
    src: Any,
    out: Path,
    overwrite: bool,
    sample_rate: Optional[int],
    kind_options: dict[str, Any],
) -> SourcePlan:
    """Run the kind's reader, with the settings of ``prepare`` it declares it receives, and make ``out``
    ready: before the reader when it writes generated sources into ``out``, after it otherwise (so that a
    reader's error leaves ``out`` untouched)."""
    received: dict[str, Any] = {}
    if "sample_rate" in declared.receives and sample_rate is not None:
        received["sample_rate"] = sample_rate
    if "scratch_dir" in declared.receives:
        prepare_output_dir(out, overwrite)
        received["scratch_dir"] = out / SCRATCH_DIR
    plan = declared.discover(src, **kind_options, **received)
    if "scratch_dir" not in declared.receives:
        prepare_output_dir(out, overwrite)
    return plan


def _write_utterances(
    writer: DatasetWriter,
    plan: SourcePlan,
    items: list[UtteranceItem],
    settings: DecodeSettings,
    vocabulary: LabelVocabulary,
    workers: int,
    on_error: str,
    skipped: list[dict[str, str]],
    clipped: list[dict],
    progress: Optional[ProgressCallback],
) -> list[UtteranceItem]:
    """Decode ``items`` over ``workers`` processes and append them in order; returns the items kept
    (files with samples beyond full scale are added to ``clipped``)."""
    kept: list[UtteranceItem] = []
    total = len(items)
    decode = functools.partial(decode_utterance, settings=settings)
    results = ordered_map(decode, list(enumerate(items)), workers)
    report(progress, Progress("prepare", 0, total, "utt"))
    try:
        for done, result in enumerate(results, start=1):
            if isinstance(result, Failed):
                handle_failure(on_error, skipped, result.origin, result.problem)
            else:
                item = items[result.position]
                labels = None
                if plan.has_frame_labels:
                    labels = vocabulary.to_ids(result.label_codes, result.label_symbols)
                with _disk_full_as_error(writer.out):
                    writer.add(item.utterance_id, item.speaker, item.split, result.signal, labels, item.utterance_labels)
                kept.append(item)
                if result.clipping is not None:
                    clipped.append(result.clipping.as_report(display_path(item.origin)))
            report(progress, Progress("prepare", done, total, "utt"))
    finally:
        results.close()
    return kept


@contextlib.contextmanager
def _disk_full_as_error(out: Path) -> Iterator[None]:
    """A full disk while writing the dataset becomes a :class:`~cpcaudio.errors.ResourceError`."""
    try:
        yield
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(out, error, "the prepared dataset") from None
        raise


def _check_paths(declared: SourceKind, src: Any, out: Path) -> Optional[Path]:
    """The source as a path (``None`` when it is not one), after checking that ``out`` can be created
    and written and is not inside the source. Only the paths are looked at, not what ``out`` holds: that
    is checked once its lock is held."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory; choose another output path")
    check_output_dir(out, "dataset directory")
    if declared.source == "none" or src is None:
        return None
    source = Path(src)
    if not source.exists():
        if declared.source == "path-or-name":  # e.g. the name of a bundled set
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




def _settings(
    plan: SourcePlan,
    items: list[UtteranceItem],
    options: dict[str, Any],
    spool_dir: str,
    skipped: list[dict[str, str]],
) -> tuple[DecodeSettings, list[UtteranceItem]]:
    """Decide the dataset's rate and channel count from the first readable item (unreadable ones before
    it are failures); returns the settings and the items from that one on."""
    on_error = options["on_error"]
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
            handle_failure(on_error, skipped, item.origin, str(error))
            remaining.pop(0)
    else:
        unmatched = "; ".join(f"{name}: {len(values)}" for name, values in plan.unmatched.items() if values)
        raise DataError(
            f"no usable utterances found by the {plan.kind} reader"
            + (f" ({unmatched}, see the lists and label files given)" if unmatched else "")
            + "; check the source path and the kind"
        )
    settings = decode_settings(
        plan, rate, channels, options["sample_rate"], options["mono"], options["label_tolerance"],
        options["clipping"], spool_dir,
    )
    return settings, remaining
