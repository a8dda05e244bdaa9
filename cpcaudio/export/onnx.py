"""Export a CPC model (encoder + context network) to ONNX, and check the export against ``extract``.

The graph::

    signal   float32 (batch, channels, samples)   at the model's sample rate (model.config.data.sample_rate)
    context  float32 (batch, frames, context dim) c, the paper's features (``layer="context"``)
    latents  float32 (batch, frames, encoder dim) z (``layer="encoder"``)

with ``frames = model.num_frames(samples)``; ``batch`` and ``samples`` are dynamic. It computes what
:func:`cpcaudio.extract.extract` computes for one whole signal (no chunking, so memory grows with the
length): models with ``input_normalization: sequence`` standardise each signal with its own statistics
inside the graph. Every signal of a batch is taken as full length (no padding mask): batch only signals
of equal length, or run them one at a time.

The export uses PyTorch's TorchScript-based exporter (``dynamo=False``): the ``torch.export``-based one
has written GRUs with ``linear_before_reset=0`` (onnxscript #2852), outputs silently off by ~0.1.
:func:`check_onnx` runs the file with onnxruntime and compares numbers, so such a bug cannot pass
unseen. The model's CPU fast paths are switched off while tracing (they are not ONNX operators).
"""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
from torch import nn

from cpcaudio.errors import DataError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from cpcaudio.model import CPCModel

DEFAULT_OPSET = 17
INPUT_NAME = "signal"
OUTPUT_NAMES = ("context", "latents")
EXPORT_EXTRA = "pip install 'cpcaudio[export]' (onnx and onnxruntime)"


class EncoderAndContext(nn.Module):
    """The traced module: signal (batch, channels, samples) -> (context (B, F, H), latents (B, F, C))."""

    def __init__(self, model: "CPCModel") -> None:
        super().__init__()
        self.model = model

    def forward(self, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: signal (batch, channels, samples). Returns: context (B, F, H) and latents (B, F, C)."""
        signal = self.model.normalize_input(signal)  # whole-signal statistics per sequence, as extract's
        encoded, _ = self.model.encoder(signal)  # (B, C, F)
        latents = encoded.transpose(1, 2)  # (B, F, C)
        context, _ = self.model.context_network(latents)  # (B, F, H)
        return context, latents


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file.
        opset: the ONNX opset.
        sample_rate, hop, receptive_field, offset: the model's input rate and frame geometry (also in the
            file's metadata: ``sample_rate``, ``hop``, ``receptive_field``, ``offset``, ``encoder_dim``,
            ``context_dim``, ``in_channels``).
        max_difference: the largest |onnxruntime - extract| of the check, relative to the largest feature
            magnitude (None when not checked).
    """

    path: Path
    opset: int
    sample_rate: int
    hop: int
    receptive_field: int
    offset: int
    max_difference: Optional[float] = None


def metadata(model: "CPCModel") -> dict[str, str]:
    """The facts a consumer of the ONNX file needs to place its frames in time (strings, ONNX metadata)."""
    geometry, config = model.encoder.geometry, model.config
    return {
        "producer": "cpcaudio",
        "sample_rate": str(config.data.sample_rate),
        "hop": str(geometry.hop),
        "receptive_field": str(geometry.receptive_field),
        "offset": str(geometry.offset),
        "in_channels": str(config.encoder.in_channels),
        "encoder_dim": str(config.encoder.hidden_dim),
        "context_dim": str(config.context.hidden_dim),
        "input_normalization": config.encoder.input_normalization,
    }


def export_onnx(
    model: "CPCModel",
    path: Union[str, os.PathLike],
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    check: bool = True,
) -> OnnxExport:
    """Write ``model``'s encoder and context network as an ONNX graph (see the module docstring).

    Args:
        model: a :class:`~cpcaudio.model.CPCModel` (left unchanged; a CPU copy is traced).
        path: the ``.onnx`` file to write (atomically: a temporary file renamed into place).
        opset: ONNX opset version (17 by default; GRU/LSTM and LayerNormalization need >= 17 here).
        overwrite: replace an existing file.
        check: run the file with onnxruntime on a generated signal and compare with ``extract``.

    Returns:
        :class:`OnnxExport`.

    Raises:
        UsageError: ``path`` exists without ``overwrite``, a bad opset, or the export extra is missing.
        DataError: the check found onnxruntime's output off by more than 1e-4 (relative).
    """
    from cpcaudio.model.cpu_kernels import fast_paths

    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists; pass --overwrite to replace it")
    if not 17 <= int(opset) <= 21:
        raise UsageError(f"opset must be between 17 and 21, got {opset}")
    _require("onnx")
    traced = EncoderAndContext(copy.deepcopy(model).float().cpu().eval())
    geometry = model.encoder.geometry
    example = torch.zeros(1, model.config.encoder.in_channels, 8 * geometry.hop + geometry.receptive_field)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        with fast_paths(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes; the check tests numbers
            torch.onnx.export(
                traced,
                (example,),
                str(temporary),
                **_torchscript_exporter(),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={
                    INPUT_NAME: {0: "batch", 2: "samples"},
                    OUTPUT_NAMES[0]: {0: "batch", 1: "frames"},
                    OUTPUT_NAMES[1]: {0: "batch", 1: "frames"},
                },
                opset_version=int(opset),
            )
        _add_metadata(temporary, metadata(model))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    result = OnnxExport(
        path=path,
        opset=int(opset),
        sample_rate=model.config.data.sample_rate,
        hop=geometry.hop,
        receptive_field=geometry.receptive_field,
        offset=geometry.offset,
    )
    if check:
        result.max_difference = check_onnx(path, model)
    return result


def run_onnx(path: Union[str, os.PathLike], signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported file with onnxruntime (CPU).

    Args:
        path: the ``.onnx`` file.
        signal: (batch, channels, samples) float32.

    Returns:
        context (batch, frames, H) and latents (batch, frames, C), float32.
    """
    onnxruntime = _require("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    context, latents = session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(signal, dtype=np.float32)})
    return context, latents


def check_onnx(
    path: Union[str, os.PathLike], model: "CPCModel", signal: Optional[np.ndarray] = None, tolerance: float = 1e-4
) -> float:
    """Largest difference between onnxruntime's output and ``model.extract``, relative to the largest
    feature magnitude, on ``signal`` ((channels, samples); default: 3 s of a generated chirp).

    Raises:
        DataError: the difference exceeds ``tolerance`` (the export is wrong; do not use the file).
    """
    if signal is None:
        from cpcaudio.toy import generated_signal

        rate = model.config.data.sample_rate
        mono = generated_signal(3 * rate, np.random.default_rng(0), sample_rate=rate)
        signal = np.repeat(mono[None], model.config.encoder.in_channels, axis=0)
    signal = np.asarray(signal, dtype=np.float32)
    context, latents = run_onnx(path, signal[None])
    expected = model.extract(signal, model.config.data.sample_rate, layer="all").hidden_states  # [z, c]
    worst = 0.0
    for got, want in ((latents[0], expected[0]), (context[0], expected[1])):
        want = want.numpy()
        if got.shape != want.shape:
            raise DataError(f"ONNX export {path} gives {got.shape[0]} frames where extract gives {want.shape[0]}")
        scale = max(float(np.abs(want).max()), 1e-12)
        worst = max(worst, float(np.abs(got - want).max()) / scale)
    if worst > tolerance:
        raise DataError(
            f"ONNX export {path} differs from extract by {worst:.2e} (relative), above {tolerance:g}; the "
            "exporter mistranslated the model, do not use the file"
        )
    return worst


def _torchscript_exporter() -> dict[str, bool]:
    """``dynamo=False`` where ``torch.onnx.export`` has the choice (PyTorch >= 2.5); older ones only trace."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def _add_metadata(path: Path, values: dict[str, str]) -> None:
    onnx = _require("onnx")
    graph = onnx.load(str(path))
    for key, value in values.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def _require(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise UsageError(f"ONNX export needs the '{name}' package: {EXPORT_EXTRA}") from None
