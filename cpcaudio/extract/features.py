"""Frozen features from a CPC model: ``extract()`` for one signal or a padded batch, of any length.

Long signals are cut into chunks whose result equals processing the whole signal (to float rounding):

* **Encoder.** Each chunk reads a hop-aligned slice that holds the receptive fields of the frames it
  owns and keeps only those frames (:mod:`cpcaudio.extract.chunks` says why this is exact).
* **Context network.** The GRU/LSTM state after the last frame of a chunk is handed to the next chunk.
* **Padded batches.** Every encoder layer's output is zeroed beyond each sequence's valid length, which is
  exactly the zero padding that sequence would get if it were processed alone; so a padded batch gives the
  same frames as one-at-a-time processing, including the last frames of the shorter sequences.
* **``normalization: layer``** (GroupNorm over channels *and time* of each sequence) makes every frame
  depend on the whole sequence, so such models are never chunked and padded batches are processed one
  sequence at a time. ``batch`` normalisation uses its running statistics (the model is put in eval mode)
  and ``channel`` normalisation is per time step; both are chunk- and batch-exact.

The model runs under ``torch.inference_mode()`` and in eval mode (restored afterwards); the features are
returned as float32, on the CPU unless asked otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from cpcaudio.devices import DeviceLike
from cpcaudio.errors import UsageError
from cpcaudio.extract.chunks import WHOLE, chunk_frames_for, plan_chunks
from cpcaudio.extract.resampling import resample
from cpcaudio.geometry import layer_lengths

if TYPE_CHECKING:  # pragma: no cover
    from cpcaudio.evaluate.units import KMeansUnits
    from cpcaudio.model import CPCModel

LAYERS = ("context", "encoder", "all")

Signal = Union[torch.Tensor, np.ndarray]
Lengths = Union[Sequence[int], np.ndarray, torch.Tensor]
# run(signal (B, C, T), lengths (B,), chunk_frames) -> [z] or [z, c], each (B, frames, dim)
_Run = Callable[[torch.Tensor, torch.Tensor, int], list[torch.Tensor]]


@dataclass
class Features:
    """What :func:`extract` returns.

    Attributes:
        frames: the requested layer, float32: (time, dim) for one signal, (batch, time, dim) for a batch
            (zero beyond each sequence's ``frame_lengths``). ``layer="all"`` concatenates the encoder
            output and the context along ``dim`` (encoder first).
        frame_lengths: valid frames: a 0-d int64 tensor for one signal, (batch,) for a batch.
        frame_rate: frames per second (``sample_rate / downsample_rate``).
        downsample_rate: samples of the model's ``sample_rate`` per frame (160 for the paper's encoder).
        hidden_states: per-layer outputs, same layout as ``frames``: ``[encoder z]`` for
            ``layer="encoder"``, ``[encoder z, context c]`` otherwise (what s3prl-style code consumes).
        layer: the requested layer name.
        sample_rate: the model's sample rate; inputs at another rate were resampled to it.
        units: only with ``extract(..., units=kmeans)``: the unit (nearest k-means centre) of each frame of
            ``frames``, int64 (time,) for one signal or (batch, time) for a batch, -1 beyond each sequence's
            ``frame_lengths``; None otherwise.
    """

    frames: torch.Tensor
    frame_lengths: torch.Tensor
    frame_rate: float
    downsample_rate: int
    hidden_states: list[torch.Tensor]
    layer: str
    sample_rate: int
    units: Optional[torch.Tensor] = None


# ---- encoder with per-sequence lengths -------------------------------------------------------------------


def _zero_beyond(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero x (batch, channels, time) at time >= lengths (batch,)."""
    keep = torch.arange(x.shape[-1], device=x.device).view(1, 1, -1) < lengths.view(-1, 1, 1)
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype, device=x.device))


def encode_padded(model: "CPCModel", signal: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """Run the conv encoder so that each sequence of a padded batch sees exactly its own zero padding.

    Args:
        model: a :class:`~cpcaudio.model.CPCModel`.
        signal: (batch, channels, time).
        lengths: (batch,) valid samples (<= time), or None when every sequence fills ``time``.

    Returns:
        latents (batch, frames, encoder.hidden_dim); frames past a sequence's own frame count are zero.
    """
    encoder = model.encoder
    if lengths is None or bool((lengths >= signal.shape[-1]).all()):
        latents, _ = encoder(signal)  # (B, C, T)
        return latents.transpose(1, 2)  # (B, T, C)
    config = encoder.config
    x = _zero_beyond(signal, lengths)
    steps = layer_lengths(lengths, config.kernel_sizes, config.strides, encoder.paddings)  # (B,) per layer
    if encoder.runs_time_major(x):
        return encoder.forward_time_major(x, valid_steps=steps)  # (B, T, C)
    for layer, valid in zip(encoder.layers, steps):
        x = _zero_beyond(layer(x), valid)  # (B, hidden, layer steps)
    return x.transpose(1, 2)  # (B, T, C)


# ---- extraction ----------------------------------------------------------------------------------------


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _prepare_input(
    model: "CPCModel", signal: Signal, sample_rate: int, lengths: Optional[Lengths]
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Validate, resample and move to the model: returns (signal (B, C, T), lengths (B,), is_single)."""
    in_channels = model.config.encoder.in_channels
    if not isinstance(signal, (torch.Tensor, np.ndarray)):
        raise TypeError(f"signal must be a torch.Tensor or numpy array, got {type(signal).__name__}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise UsageError(f"sample_rate must be a positive integer (samples per second), got {sample_rate!r}")
    if signal.is_complex() if isinstance(signal, torch.Tensor) else np.iscomplexobj(signal):
        raise TypeError("signal must be real-valued")
    single = signal.ndim in (1, 2)
    if signal.ndim == 1:
        signal = signal[None]
    if signal.ndim == 2:
        if signal.shape[0] != in_channels:
            raise UsageError(
                f"a 2-D signal is one sequence (channels, time) and this model takes {in_channels} "
                f"channel(s), got shape {tuple(signal.shape)}; pass a batch as (batch, channels, time)"
            )
        if lengths is not None:
            raise UsageError("lengths is for a padded batch (batch, channels, time); one signal needs none")
        signal = signal[None]
    if signal.ndim != 3 or signal.shape[1] != in_channels:
        raise UsageError(
            f"expected one signal (time,) or (channels, time), or a batch (batch, {in_channels}, time); "
            f"got shape {tuple(signal.shape)}"
        )
    batch, _, time = signal.shape
    if lengths is None:
        lengths_list = [time] * batch
    else:
        lengths_list = [int(n) for n in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
        if len(lengths_list) != batch:
            raise UsageError(f"lengths has {len(lengths_list)} entries for a batch of {batch}")
        if any(n < 0 or n > time for n in lengths_list):
            raise UsageError(f"lengths must lie in [0, {time}] (the padded time axis), got {lengths_list}")
    device, dtype = _model_device_dtype(model)
    model_rate = model.config.data.sample_rate
    if isinstance(signal, np.ndarray):  # float32, C-ordered and writable (torch refuses read-only memory)
        signal = np.require(signal, dtype=np.float32, requirements=["C", "W"])
    if int(sample_rate) != model_rate:
        array = signal.detach().cpu().float().numpy() if isinstance(signal, torch.Tensor) else signal
        pieces = [resample(array[i, :, :n], int(sample_rate), model_rate) for i, n in enumerate(lengths_list)]
        lengths_list = [piece.shape[-1] for piece in pieces]
        padded = np.zeros((batch, in_channels, max(lengths_list, default=0)), dtype=np.float32)
        for i, piece in enumerate(pieces):
            padded[i, :, : piece.shape[-1]] = piece
        signal = padded
    tensor = torch.from_numpy(signal) if isinstance(signal, np.ndarray) else signal
    max_length = max(lengths_list, default=0)
    tensor = tensor[..., :max_length].to(device=device, dtype=dtype)
    return tensor, torch.tensor(lengths_list, dtype=torch.long, device=device), single


def extract(
    model: "CPCModel",
    signal: Signal,
    sample_rate: int,
    layer: str = "context",
    lengths: Optional[Lengths] = None,
    chunk_seconds: Optional[float] = None,
    output_device: DeviceLike = "cpu",
    units: Optional["KMeansUnits"] = None,
) -> Features:
    """Frozen features of one signal or of a padded batch, exactly as if each were processed whole.

    Args:
        model: a :class:`~cpcaudio.model.CPCModel` (e.g. from :func:`cpcaudio.load`).
        signal: one signal (time,) (mono) or (channels, time), or a padded batch (batch, channels, time);
            float values, torch tensor or numpy array, on any device.
        sample_rate: samples per second of ``signal``; resampled with soxr when it differs from
            ``model.config.data.sample_rate``.
        layer: ``"context"`` (c, the paper's features), ``"encoder"`` (z) or ``"all"`` (z and c concatenated).
        lengths: (batch,) valid samples per sequence of a padded batch (padding at the end); None: all valid.
        chunk_seconds: seconds of signal per chunk (None: 10 s; ``math.inf``: whole signal at once).
            The result does not depend on it (beyond float rounding), only the memory use does.
        output_device: where the returned tensors live (default CPU); None keeps them on the model's device.
        units: a fitted k-means codebook (:class:`cpcaudio.evaluate.units.KMeansUnits`, e.g. from
            ``KMeansUnits.load`` on what ``cpcaudio units`` wrote) of this model's ``layer``: the result then
            carries ``units``, the unit of each frame.

    Returns:
        :class:`Features`: ``frames`` (time, dim) or (batch, time, dim), ``frame_lengths``, ``frame_rate``,
        ``downsample_rate``, ``hidden_states``, and ``units`` (time,) or (batch, time) when asked.

    Raises:
        UsageError: a bad ``layer``, shape, ``lengths``, ``sample_rate`` or ``chunk_seconds``, or ``units``
            fitted on another layer or width (checked before the model runs).
    """
    if layer not in LAYERS:
        raise UsageError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")
    if units is not None:
        _check_units(model, units, layer)
    hop = model.encoder.geometry.hop
    model_rate = model.config.data.sample_rate
    chunk_frames = chunk_frames_for(chunk_seconds, model_rate, hop)
    run: _Run = functools.partial(
        _extract_chunked, model, with_context=layer != "encoder", output_device=output_device
    )
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            tensor, sample_lengths, single = _prepare_input(model, signal, sample_rate, lengths)
            tensor = model.normalize_input(tensor, sample_lengths)  # whole-signal statistics, before chunking
            if model.config.encoder.normalization == "layer" and len(sample_lengths) > 0:
                states = _one_sequence_at_a_time(run, tensor, sample_lengths)
            else:
                states = run(tensor, sample_lengths, chunk_frames)
    finally:
        model.train(was_training)
    frame_lengths = torch.tensor([model.num_frames(int(n)) for n in sample_lengths.tolist()], dtype=torch.long)
    if layer == "context":
        frames = states[1]
    elif layer == "encoder":
        frames = states[0]
    else:
        frames = torch.cat(states, dim=-1)
    if single:
        states = [state[0] for state in states]
        frames = frames[0]
        frame_lengths = frame_lengths[0]
    features = Features(
        frames=frames,
        frame_lengths=frame_lengths,
        frame_rate=model_rate / hop,
        downsample_rate=hop,
        hidden_states=states,
        layer=layer,
        sample_rate=model_rate,
    )
    if units is not None:
        features.units = units.units_of(features)
    return features


def _layer_width(model: "CPCModel", layer: str) -> int:
    """Feature width of ``layer`` (``all``: encoder and context side by side)."""
    encoder, context = model.config.encoder.hidden_dim, model.config.context.hidden_dim
    return {"encoder": encoder, "context": context, "all": encoder + context}[layer]


def _check_units(model: "CPCModel", units: "KMeansUnits", layer: str) -> None:
    """Refuse, before any work, a codebook that cannot quantise this model's ``layer`` features."""
    if not (hasattr(units, "units_of") and hasattr(units, "check_layer") and hasattr(units, "dim")):
        kind = type(units).__name__
        raise TypeError(f"units must be a fitted k-means (cpcaudio.evaluate.units.KMeansUnits), got {kind}")
    units.check_layer(layer)
    width = _layer_width(model, layer)
    if units.dim != width:
        raise UsageError(
            f"units: this k-means has {units.dim}-dim centres but the model's {layer} features are {width}-dim; "
            f"use a k-means fitted on this model's {layer} features"
        )


def _one_sequence_at_a_time(run: _Run, signal: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """``normalization: layer`` (GroupNorm over time: every frame depends on the whole sequence): each
    sequence whole, on its own, then padded back into one batch."""
    per_item = [run(signal[i : i + 1, :, :n], lengths[i : i + 1], WHOLE) for i, n in enumerate(lengths.tolist())]
    max_frames = max(states[0].shape[1] for states in per_item)
    padded = [[F.pad(state, (0, 0, 0, max_frames - state.shape[1])) for state in states] for states in per_item]
    return [torch.cat(layer_states) for layer_states in zip(*padded)]  # (B, frames, dim) per layer


def _extract_chunked(
    model: "CPCModel",
    signal: torch.Tensor,
    lengths: torch.Tensor,
    chunk_frames: int,
    with_context: bool,
    output_device: DeviceLike,
) -> list[torch.Tensor]:
    """[z] or [z, c] of signal (batch, channels, time), each (batch, max_frames, dim) float32 on
    ``output_device`` and zero past each length: the encoder chunk by chunk (see :func:`plan_chunks`),
    the recurrent state carried from chunk to chunk."""
    geometry = model.encoder.geometry
    batch, _, num_samples = signal.shape
    total_frames = model.num_frames(num_samples)
    out_device = signal.device if output_device is None else torch.device(output_device)
    dims = [model.config.encoder.hidden_dim] + ([model.config.context.hidden_dim] if with_context else [])
    outputs = [torch.zeros(batch, total_frames, dim, dtype=torch.float32, device=out_device) for dim in dims]
    state = None
    for chunk in plan_chunks(geometry, num_samples, total_frames, chunk_frames):
        piece = signal[:, :, chunk.sample_start : chunk.sample_stop]  # (B, C, chunk samples)
        piece_lengths = (lengths - chunk.sample_start).clamp(min=0, max=piece.shape[-1])
        latents = encode_padded(model, piece, piece_lengths)  # (B, frames of the slice, C)
        first = chunk.frame_start - chunk.sample_start // geometry.hop
        count = chunk.frame_stop - chunk.frame_start
        assert latents.shape[1] >= first + count, (chunk, latents.shape)
        latents = latents[:, first : first + count]  # (B, count, C): the frames this chunk owns
        outputs[0][:, chunk.frame_start : chunk.frame_stop] = latents.float().to(out_device)
        if with_context:
            context, state = model.context_network(latents, state)  # (B, count, H)
            outputs[1][:, chunk.frame_start : chunk.frame_stop] = context.float().to(out_device)
    frame_lengths = [model.num_frames(int(n)) for n in lengths.tolist()]
    max_frames = max(frame_lengths, default=0)
    for output in outputs:
        for i, n in enumerate(frame_lengths):
            output[i, n:] = 0.0
    return [output[:, :max_frames] for output in outputs]
