"""Read CPC_audio and libri-light checkpoints as cpcaudio models.

Two layouts, both ``torch.save`` files of tensors and plain values (read with ``weights_only=True``):

* **train** (CPC_audio's ``cpc/train.py``): ``checkpoint_N.pt`` = ``{"gEncoder": model state,
  "cpcCriterion": prediction heads' state, "optimizer": ..., "best": best model state}``, with the run's
  options in ``checkpoint_args.json`` beside it. A folder of such files stands for its latest
  ``checkpoint_N.pt`` (as CPC_audio's own loader picks it). The weights are ``gEncoder``'s.
* **hub** (libri-light's checkpoints, CPC_audio's ``hubconf.py``): ``{"config": options, "weights":
  model state}``; no prediction heads.

The options become a :class:`~cpcaudio.config.CPCConfig` (:mod:`cpcaudio.interop.cpc_audio_options`) and
the weights are renamed onto cpcaudio's modules; every weight of the file must find its place and every
cpcaudio weight (the heads aside) must be filled, or a one-line :class:`CheckpointError` names the
first key that does not fit. Prediction heads: CPC_audio scores a candidate by ``mean_c(W_k c * z)``,
cpcaudio by the dot product, so linear heads are stored as ``W_k / dim(z)`` (the scores, hence the loss,
are the same); ``ffd`` heads include CPC_audio's run-time He scaling. Heads that cannot be carried over
(transformers, ...) are freshly initialised, and the import records why training cannot resume.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch

from cpcaudio.config import CPCConfig
from cpcaudio.errors import CheckpointError, UsageError
from cpcaudio.interop.cpc_audio_options import ImportedOptions, config_from_cpc_audio

TRAIN_LAYOUT = "cpc_audio-train"
HUB_LAYOUT = "cpc_audio-hub"
ARGS_FILE = "checkpoint_args.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")

PathLike = Union[str, os.PathLike]
StateDict = dict[str, torch.Tensor]


@dataclass
class ForeignCheckpoint:
    """A foreign checkpoint in cpcaudio's terms; unpacks as ``config, state_dict, info = ...``.

    Attributes:
        config: the model's :class:`CPCConfig`.
        state_dict: weights for ``CPCModel(config).load_state_dict`` (strict).
        info: plain values: ``format`` (layout), ``source`` (file read), ``heads`` (``converted`` or
            ``initialised``), ``cpc_audio_heads`` (CPC_audio's ``rnnMode``, or None), ``trainable``,
            ``training_refused`` (why not, or ""), ``notes`` (training options not carried exactly) and
            ``cpc_audio_options`` (every option, defaults filled in).
    """

    config: CPCConfig
    state_dict: StateDict
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.config, self.state_dict, self.info))


# ---- files -----------------------------------------------------------------------------------------------


def foreign_layout(path: PathLike) -> Optional[str]:
    """:data:`TRAIN_LAYOUT`, :data:`HUB_LAYOUT`, or None (a cpcaudio checkpoint, or nothing readable).

    Cheap: the file is memory-mapped, its tensors are not read. Unreadable files give None, so that the
    native loader reports them.
    """
    path = Path(path)
    if path.is_dir():
        return TRAIN_LAYOUT if _latest_checkpoint(path) is not None else None
    if not path.is_file():
        return None
    try:
        record = _torch_load(path, mmap=True)
    except CheckpointError:
        return None
    return _layout_of(record)


def _layout_of(record: Any) -> Optional[str]:
    if not isinstance(record, dict) or record.get("format") == "cpcaudio-checkpoint":
        return None
    if isinstance(record.get("gEncoder"), dict):
        return TRAIN_LAYOUT
    if isinstance(record.get("config"), dict) and isinstance(record.get("weights"), dict):
        return HUB_LAYOUT
    return None


def _latest_checkpoint(directory: Path) -> Optional[Path]:
    numbered = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))]
    return max(numbered)[1] if numbered else None


def _torch_load(path: Path, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)``; CheckpointError (one line naming the file and the fix) for pickled
    code, a broken file or a file named ``.safetensors`` that is none (the one reader of every checkpoint)."""
    from cpcaudio.train.checkpoint import read_torch_file  # here: cpcaudio.train imports this module

    return read_torch_file(path, mmap=mmap)


def _read_options(checkpoint: Path) -> dict[str, Any]:
    args_path = checkpoint.parent / ARGS_FILE
    if not args_path.is_file():
        raise CheckpointError(
            f"CPC_audio checkpoint {checkpoint} has no {ARGS_FILE} beside it; CPC_audio's train.py writes the "
            f"model's options there, copy it into {checkpoint.parent}"
        )
    try:
        options = json.loads(args_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{args_path} is not readable JSON ({error})") from None
    if not isinstance(options, dict):
        raise CheckpointError(f"{args_path} must hold a JSON object of options, got {type(options).__name__}")
    return options


def _strip_parallel(state: dict[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix that ``DataParallel`` adds when every key has it."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return dict(state)


# ---- weights ---------------------------------------------------------------------------------------------


def _fresh_state(config: CPCConfig) -> StateDict:
    """A freshly initialised cpcaudio model's state (seed 0, the global RNG untouched)."""
    from cpcaudio.model import CPCModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CPCModel(config).state_dict()


def _model_weights(model_state: dict[str, Any], target: StateDict, source: str) -> StateDict:
    """CPC_audio's ``gEncoder.conv{i}``/``gEncoder.batchNorm{i}``/``gAR.baseNet`` onto cpcaudio's names."""
    renamed: StateDict = {}
    for key, value in model_state.items():
        match = re.match(r"^gEncoder\.(conv|batchNorm)(\d+)\.(.+)$", key)
        if match:
            module = "conv" if match.group(1) == "conv" else "norm"
            name = f"encoder.layers.{match.group(2)}.{module}.{match.group(3)}"
        elif key.startswith("gAR.baseNet."):
            name = "context_network.rnn." + key[len("gAR.baseNet."):]
        else:
            name = ""
        if name not in target:
            raise CheckpointError(
                f"CPC_audio checkpoint {source} holds weight {key!r}, which the model its options describe lacks"
            )
        renamed[name] = _fit(value, target[name], key, source)
    missing = [name for name in target if not name.startswith("heads.") and name not in renamed]
    if missing:
        raise CheckpointError(
            f"CPC_audio checkpoint {source} lacks the weight cpcaudio calls {missing[0]!r} "
            f"({len(missing)} missing in all); its options do not match its weights"
        )
    return renamed


def _fit(value: Any, target: torch.Tensor, key: str, source: str) -> torch.Tensor:
    """``value`` reshaped to ``target``'s shape (CPC_audio's ChannelNorm stores (1, C, 1)), or an error."""
    if not isinstance(value, torch.Tensor) or value.numel() != target.numel():
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointError(
            f"CPC_audio checkpoint {source}: weight {key!r} has shape {shape}, its options imply "
            f"{tuple(target.shape)}"
        )
    return value.detach().reshape(target.shape).to(target.dtype).clone()


def _head_weights(criterion: dict[str, Any], imported: ImportedOptions, source: str) -> StateDict:
    """CPC_audio's per-step predictors fused into cpcaudio's heads, scores unchanged (see module doc)."""
    predictor = imported.config.predictor
    steps, latent_dim = predictor.num_steps, imported.config.encoder.hidden_dim
    prefix = "wPrediction.predictors."
    names = [key for key in criterion if key.startswith(prefix)]
    found = {int(key[len(prefix):].split(".")[0]) for key in names}
    if found != set(range(steps)) or len(names) != len(criterion):
        extra = sorted(set(criterion) - set(names))
        detail = f"also holds {extra[0]!r}" if extra else f"has predictors {sorted(found)}"
        raise CheckpointError(
            f"CPC_audio checkpoint {source}: cpcCriterion {detail}, but its options say nPredicts {steps}"
        )

    def weight(k: int, name: str) -> torch.Tensor:
        key = f"{prefix}{k}.{name}"
        if key not in criterion:
            raise CheckpointError(
                f"CPC_audio checkpoint {source}: cpcCriterion lacks {key!r} for rnnMode {imported.heads!r}"
            )
        return criterion[key].detach().float()

    if imported.heads == "linear":
        projection = torch.cat([weight(k, "weight") for k in range(steps)]) / latent_dim  # (K*C, H)
        return {"heads.projection.weight": projection, "heads.projection.bias": torch.zeros(projection.shape[0])}
    # ffd: lin2(relu(lin1(c))), each EqualizedLinear multiplying its output by sqrt(2 / fan_in) at run time.
    first = [weight(k, "lin1.module.weight") for k in range(steps)]  # (hidden, H) each
    second = [weight(k, "lin2.module.weight") for k in range(steps)]  # (C, hidden) each
    gain1, gain2 = math.sqrt(2.0 / first[0].shape[1]), math.sqrt(2.0 / second[0].shape[1])
    scale2 = gain2 / latent_dim
    return {
        "heads.hidden.weight": torch.cat(first) * gain1,  # (K*hidden, H)
        "heads.hidden.bias": torch.cat([weight(k, "lin1.module.bias") for k in range(steps)]) * gain1,
        "heads.output.weight": (torch.cat(second) * scale2).unsqueeze(-1),  # (K*C, hidden, 1)
        "heads.output.bias": torch.cat([weight(k, "lin2.module.bias") for k in range(steps)]) * scale2,
    }


# ---- public ----------------------------------------------------------------------------------------------


def load_foreign_checkpoint(path: PathLike) -> ForeignCheckpoint:
    """Read a CPC_audio ``train.py`` checkpoint (file or folder) or a libri-light / torch.hub file.

    Args:
        path: ``checkpoint_N.pt`` (with ``checkpoint_args.json`` beside it), its folder, or a hub file.

    Returns:
        :class:`ForeignCheckpoint` (``config, state_dict, info``).

    Raises:
        CheckpointError: not one of these layouts, the options file is missing, an option cpcaudio cannot
            express, or weights that do not match the options (each in one line).
    """
    path = Path(path)
    file = _latest_checkpoint(path) if path.is_dir() else path
    if file is None:
        raise CheckpointError(f"{path} is a folder without CPC_audio checkpoints (checkpoint_N.pt)")
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    record = _torch_load(file)
    layout = _layout_of(record)
    if layout is None:
        raise CheckpointError(
            f"{file} is neither a CPC_audio train.py checkpoint (gEncoder, cpcCriterion) nor a libri-light / "
            "torch.hub one (config, weights); pass CPC_audio's checkpoint_N.pt (or its run folder) or a "
            "libri-light .pt file"
        )
    if layout == TRAIN_LAYOUT:
        options, model_state, criterion = _read_options(file), record["gEncoder"], record.get("cpcCriterion")
        imported = config_from_cpc_audio(options, str(file), checkpoint_dir=file.parent)
    else:
        options, model_state, criterion = record["config"], record["weights"], None
        imported = config_from_cpc_audio(options, str(file))
    target = _fresh_state(imported.config)
    state = {**target, **_model_weights(_strip_parallel(model_state), target, str(file))}
    refused = imported.training_refused
    heads = "initialised"
    if criterion is None:
        refused = "the file holds no prediction heads (libri-light / torch.hub files keep the encoder and context only)"
    if not refused:
        state.update(_head_weights(_strip_parallel(criterion), imported, str(file)))
        heads = "converted"
    info = {
        "format": layout,
        "source": str(file),
        "heads": heads,
        "cpc_audio_heads": imported.heads,
        "trainable": not refused,
        "training_refused": refused,
        "notes": list(imported.notes),
        "cpc_audio_options": _plain(imported.options),
    }
    return ForeignCheckpoint(config=imported.config, state_dict=state, info=info)


def load_model(path: PathLike, device: Union[str, torch.device, None] = None) -> torch.nn.Module:
    """Any checkpoint as a ready :class:`~cpcaudio.model.CPCModel` (eval mode, on ``device``).

    CPC_audio and libri-light files are imported (:func:`load_foreign_checkpoint`); anything else goes to
    :func:`cpcaudio.load`. The import record is kept as ``model.imported_from`` (None for native files).
    """
    from cpcaudio.devices import resolve_device
    from cpcaudio.model import CPCModel

    if foreign_layout(path) is None:
        from cpcaudio.train.checkpoint import load

        if Path(path).is_dir():
            raise CheckpointError(
                f"{path} is a folder without CPC_audio checkpoints (checkpoint_N.pt); pass a checkpoint file"
            )

        model = load(path, device=resolve_device(device))
        model.imported_from = None
        return model
    foreign = load_foreign_checkpoint(path)
    model = CPCModel(foreign.config)
    model.load_state_dict(foreign.state_dict)
    model.imported_from = foreign.info
    return model.to(resolve_device(device)).eval()


def convert_checkpoint(source: PathLike, out: PathLike, overwrite: bool = False) -> dict[str, Any]:
    """Write a foreign checkpoint as a native cpcaudio one (``cpcaudio.load`` reads it); returns the info.

    The native file holds ``config``, ``model``, ``step`` 0 and ``imported_from`` (the info), which
    :func:`refuse_training` reads.

    Raises:
        UsageError: ``out`` exists and ``overwrite`` is not set, or ``source`` is already a cpcaudio file.
        CheckpointError: as :func:`load_foreign_checkpoint`.
    """
    from cpcaudio.train.checkpoint import save_checkpoint

    out = Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it")
    if foreign_layout(source) is None and Path(source).is_file() and _is_native(Path(source)):
        raise UsageError(f"{source} is already a cpcaudio checkpoint; nothing to convert")
    foreign = load_foreign_checkpoint(source)
    save_checkpoint(
        out,
        {"config": foreign.config.to_dict(), "model": foreign.state_dict, "step": 0, "imported_from": foreign.info},
    )
    return foreign.info


def refuse_training(record: dict[str, Any], path: PathLike = "checkpoint") -> None:
    """Raise a one-line UsageError when ``record`` (a loaded native checkpoint) came from an import whose
    prediction heads could not be carried over; do nothing otherwise."""
    info = record.get("imported_from") or {}
    if info.get("training_refused"):
        raise UsageError(
            f"{path} was imported from {info.get('source', 'a CPC_audio checkpoint')} and cannot be trained "
            f"further: {info['training_refused']}"
        )


def _is_native(path: Path) -> bool:
    try:
        record = _torch_load(path, mmap=True)
    except CheckpointError:
        return False
    return isinstance(record, dict) and record.get("format") == "cpcaudio-checkpoint"


def _plain(value: Any) -> Any:
    """JSON-like plain values (what a ``weights_only`` checkpoint may hold)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
