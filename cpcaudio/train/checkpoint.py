"""Self-describing, atomically written checkpoints that load without unpickling code.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python values (dict, list, str, int,
float, bool, None), so it loads with ``torch.load(..., weights_only=True)``: a file that holds any other
pickled object (which could run code) is refused. Layout::

    {
      "format": "cpcaudio-checkpoint",
      "format_version": 1,
      "package_version": "0.1.0",
      "config": {...},                 # CPCConfig.to_dict()
      "model": state_dict,
      "step": int,                     # optimiser steps completed
      # written by cpcaudio.train (see cpcaudio.train.resume):
      "kind": "last" | "best",
      "optimizer": ..., "scheduler": ..., "scaler": ... | None,   # their state_dicts
      "world_size": int,
      "sampler": [state of rank 0, rank 1, ...],                   # WindowSampler.state_dict()
      "rng": [{"python", "numpy", "torch"[, "cuda"]} per rank],     # capture_rng_state(), plain lists
      "best": {"step", "loss", "accuracy"} | {},                   # lowest validation loss so far
      "validation": {"step", "loss", "accuracy", ...} | None,      # the latest validation
      "dataset": {"path", "num_utterances", "sample_rate", "num_channels"},
    }

Files are written to a temporary name in the same directory, flushed and fsynced, then renamed over the
target, so a kill at any moment leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from safetensors import SafetensorError

from cpcaudio.config import CPCConfig
from cpcaudio.devices import resolve_device
from cpcaudio.errors import CheckpointError, ConfigError
from cpcaudio.files import atomic_write_bytes, remove_stale_temporaries  # noqa: F401  (re-exported)

CHECKPOINT_FORMAT = "cpcaudio-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]


def save_checkpoint(path: PathLike, payload: dict[str, Any]) -> None:
    """Atomically save ``payload`` (must contain ``config`` and ``model``) with format headers added."""
    from cpcaudio import __version__

    record = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "package_version": __version__,
        **payload,
    }
    atomic_write_bytes(path, lambda file: torch.save(record, file))


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device, None] = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint without executing any pickled code.

    Raises:
        CheckpointError: the file is missing, truncated, not a cpcaudio checkpoint, from another format
            version, or holds pickled objects other than tensors and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the .pt file written by 'cpcaudio train'")
    record = read_torch_file(path, map_location=map_location)
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a cpcaudio checkpoint (no '{CHECKPOINT_FORMAT}' header); pass a .pt file written by "
            "'cpcaudio train' (or 'cpcaudio convert' for a CPC_audio / libri-light one)"
        )
    version = record.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, this cpcaudio reads version "
            f"{CHECKPOINT_FORMAT_VERSION}; load it with the cpcaudio release that wrote it "
            f"(package {record.get('package_version', 'unknown')})"
        )
    for key in ("config", "model"):
        if key not in record:
            raise CheckpointError(f"checkpoint {path} lacks '{key}'; it was not written by cpcaudio train")
    return record


def read_torch_file(
    path: PathLike, map_location: Union[str, torch.device, None] = "cpu", mmap: bool = False
) -> Any:
    """``torch.load(path, weights_only=True)`` (never unpickling code), every bad file one line.

    The loader of every checkpoint path (native ones here, CPC_audio / libri-light ones in
    :mod:`cpcaudio.interop`). ``torch.load`` hands a path ending in ``.safetensors`` to the safetensors
    library, so such a file must be a real safetensors file.

    Args:
        path: an existing file.
        map_location: as ``torch.load``'s.
        mmap: memory-map a zip-format torch file (its tensors are not read until used).

    Raises:
        CheckpointError: the file is truncated, is no torch (or safetensors) file, or holds pickled objects
            other than tensors and plain values; the message names the file and the fix.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files; the error says it all
            warnings.simplefilter("ignore")
            if mmap and zipfile.is_zipfile(path):
                return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
            return torch.load(path, map_location=map_location, weights_only=True)
    except SafetensorError as error:
        if _is_pickle(path):
            raise CheckpointError(
                f"checkpoint {path} is a torch file named .safetensors (torch reads that name as safetensors); "
                "rename it to .pt"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} is named .safetensors but is not a readable safetensors file "
            f"({_first_line(error)}); pass the .pt checkpoint 'cpcaudio train' wrote, or an intact copy"
        ) from None
    except pickle.UnpicklingError as error:
        if not _is_pickle(path):
            raise CheckpointError(
                f"checkpoint {path} is truncated or not a torch file (no pickle data); use an intact copy, "
                "e.g. the run's last.pt"
            ) from None
        refused = _refused_global(str(error))
        raise CheckpointError(
            f"checkpoint {path} holds a pickled object{refused} that could run code when loaded; refusing to "
            "load it. Use a checkpoint written by 'cpcaudio train' (tensors and plain values only)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError, TypeError,
            AttributeError, UnicodeDecodeError, MemoryError) as error:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a torch file ({_first_line(error)}); "
            "use an intact copy, e.g. the run's last.pt"
        ) from None


def _is_pickle(path: Path) -> bool:
    """A torch file (a zip archive holding a pickle) or a bare pickle (starts with the PROTO opcode)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as file:
        return file.read(1) == b"\x80"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _refused_global(message: str) -> str:
    """`` (posix.system)`` from torch's "Trying to load unsupported GLOBAL posix.system ..." (or "")."""
    match = re.search(r"GLOBAL ([\w.]+)", message)
    return f" ({match.group(1)})" if match else ""


def capture_rng_state(device: Optional[Union[str, torch.device]] = None) -> dict[str, Any]:
    """The global random states of python, numpy, torch (and CUDA when ``device`` is CUDA) as plain values.

    numpy's and python's states are converted to lists of ints so that the result can be stored in a
    ``weights_only`` checkpoint; :func:`restore_rng_state` converts them back.
    """
    version, python_state, gauss = random.getstate()
    key, numpy_keys, position, has_gauss, cached_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
        "numpy": {
            "key": key,
            "state": [int(v) for v in numpy_keys],
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def restore_rng_state(state: dict[str, Any], device: Optional[Union[str, torch.device]] = None) -> None:
    """Set the global random states saved by :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["key"],
            np.asarray(numpy["state"], dtype=np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), torch.device(device))


def config_from_checkpoint(record: dict[str, Any], path: PathLike = "checkpoint") -> CPCConfig:
    """The :class:`CPCConfig` stored in a loaded checkpoint record."""
    try:
        return CPCConfig.from_dict(record["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {error}") from None


def load(path: PathLike, device: Optional[Union[str, torch.device]] = None) -> "torch.nn.Module":
    """Load a trained :class:`cpcaudio.CPCModel` from a checkpoint, in eval mode, on ``device``.

    Args:
        path: a checkpoint written by ``cpcaudio train`` (``last.pt``, ``best.pt``, ...), or one of
            CPC_audio's (``checkpoint_N.pt`` beside ``checkpoint_args.json``, or its run folder) or a
            libri-light / torch.hub ``{"config", "weights"}`` file (see :mod:`cpcaudio.interop`).
        device: where to put the model (default: CUDA if available, else MPS, else CPU).

    Returns:
        The model, ready for ``model.extract(...)``.
    """
    from cpcaudio.interop import foreign_layout
    from cpcaudio.interop import load_model as load_foreign_model
    from cpcaudio.model import CPCModel

    if foreign_layout(path) is not None:
        return load_foreign_model(path, device=device)
    record = load_checkpoint(path)
    model = CPCModel(config_from_checkpoint(record, path))
    try:
        model.load_state_dict(record["model"])
    except RuntimeError as error:
        details = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = details[1] if len(details) > 1 else _first_line(error)
        more = f" (and {len(details) - 2} more)" if len(details) > 2 else ""
        raise CheckpointError(
            f"checkpoint {path} does not match its own config: {detail}{more}; the file was altered, use an intact copy"
        ) from None
    return model.to(resolve_device(device)).eval()
