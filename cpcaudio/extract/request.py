"""What an extraction is, and what an existing output directory already holds of it.

Two runs are the same extraction (so that one may resume the other) when they have the same model
weights, layer, kind of input and utterances (ids, lengths, rates, channels). Paths may change between
runs; the contents may not.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Union

import torch

from cpcaudio.devices import DeviceLike, resolve_device
from cpcaudio.errors import CheckpointError, UsageError
from cpcaudio.extract.finite import check_finite_weights
from cpcaudio.extract.inputs import Source
from cpcaudio.extract.store import META, OWN_NAMES, PLAN, read_json
from cpcaudio.locks import LOCK_FILE

PathLike = Union[str, os.PathLike]

_REQUEST_NAMES = {
    "checkpoint_sha256": "checkpoint contents",
    "weights_sha256": "model weights",
    "layer": "layer",
    "source_kind": "kind of input",
    "utterances_sha256": "input utterances",
}


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_dict_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_model(model_or_checkpoint: Union[PathLike, torch.nn.Module], device: DeviceLike) -> tuple[Any, dict[str, Any]]:
    """The model to extract with, on ``device``, and the record of where it came from (for meta.json).

    A model passed in stays where it is when ``device`` is None; a checkpoint is loaded onto
    :func:`cpcaudio.devices.resolve_device` of ``device``.

    Returns:
        ``(model, record)``, record holding ``checkpoint`` (the path given), ``checkpoint_sha256`` (of the
        file holding the weights: for a CPC_audio run folder, its latest ``checkpoint_N.pt``) and, for a
        model passed in, ``weights_sha256``.

    Raises:
        UsageError: a bad device. CheckpointError: an unreadable checkpoint, or non-finite weights.
    """
    if isinstance(model_or_checkpoint, torch.nn.Module):
        model = model_or_checkpoint
        if device is not None:
            model = model.to(resolve_device(device))
        check_finite_weights(model)
        return model, {"checkpoint": None, "checkpoint_sha256": None, "weights_sha256": _state_dict_sha256(model)}
    path = Path(model_or_checkpoint)
    model = load_checkpoint_model(path, device)
    return model, {"checkpoint": str(path.resolve()), "checkpoint_sha256": file_sha256(model_file(model, path))}


def model_file(model: Any, path: Path) -> Path:
    """The file that holds ``model``'s weights: the one an import read (``model.imported_from["source"]``:
    the latest ``checkpoint_N.pt`` of a CPC_audio run folder), else ``path`` itself."""
    imported = getattr(model, "imported_from", None) or {}
    return Path(imported["source"]) if imported.get("source") else path


def load_checkpoint_model(path: PathLike, device: DeviceLike) -> Any:
    """:func:`cpcaudio.load` of ``path`` onto :func:`~cpcaudio.devices.resolve_device` of ``device``
    (resolved first, before the file is read), refusing non-finite weights; every failure is one line.

    Raises:
        UsageError: a bad device. CheckpointError: an unreadable checkpoint (also a file named
            ``.safetensors`` that is none), or weights that are not all finite (a diverged run).
    """
    from cpcaudio.train.checkpoint import load

    resolved = resolve_device(device)
    path = Path(path)
    try:
        model = load(path, device=resolved)
    except (IndexError, KeyError, TypeError, AttributeError, UnicodeDecodeError, MemoryError) as error:
        # torch.load on a file that is no torch file at all can fail in many ways.
        raise CheckpointError(
            f"checkpoint {path} is not a torch checkpoint ({type(error).__name__}: {_first_line(error)})"
        ) from None
    check_finite_weights(model, path)
    return model


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def extraction_request(model_record: dict[str, Any], layer: str, source: Source) -> dict[str, Any]:
    """What makes two runs the same extraction (a resume must match it), as a JSON-able dict."""
    utterances = [[u.id, u.num_samples, u.sample_rate, u.num_channels] for u in source.utterances]
    return {
        "checkpoint_sha256": model_record["checkpoint_sha256"],
        "weights_sha256": model_record.get("weights_sha256"),
        "layer": layer,
        "source_kind": source.kind,
        "utterances_sha256": hashlib.sha256(json.dumps(utterances).encode()).hexdigest(),
    }


def prepare_out(out: Path, request: dict[str, Any], overwrite: bool) -> str:
    """Decide what to do with OUT: ``fresh``, ``resume`` or ``complete``; clears it on ``overwrite``.

    Raises:
        UsageError: OUT is a file, holds something that is not a feature store, or holds another
            extraction (without ``overwrite``).
    """
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} is a file; pass a directory for the feature store")
    names = {p.name for p in out.iterdir()} - {LOCK_FILE} if out.exists() else set()
    if not names:  # missing, empty, or holding only the (unlocked) lock file of an earlier run
        return "fresh"
    if all(name.startswith(".") and name.endswith(".tmp") for name in names):
        for name in names:  # a run killed while writing its first file
            (out / name).unlink()
        return "fresh"
    ours = (META in names or PLAN in names) and names <= OWN_NAMES | {n for n in names if n.startswith(".")}
    if not ours:
        raise UsageError(
            f"output {out} exists and is not a cpcaudio feature store; choose a new or empty directory"
        )
    if overwrite:
        for name in names:  # never the lock file: the caller holds it
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        return "fresh"
    recorded = read_json(out / PLAN).get("request") if (out / PLAN).is_file() else None
    if recorded is None and (out / META).is_file():
        recorded = read_json(out / META).get("request")
    if recorded != request:
        recorded = recorded or {}
        differences = [_REQUEST_NAMES.get(k, k) for k in request if recorded.get(k) != request.get(k)]
        raise UsageError(
            f"{out} holds features of another extraction (different {', '.join(differences) or 'request'}); "
            "pass --overwrite to replace them or choose another directory"
        )
    return "complete" if (out / META).is_file() else "resume"
