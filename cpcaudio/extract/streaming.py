"""Streaming extraction: push samples as they arrive, get each frame as soon as it is final.

:class:`StreamingExtractor` gives exactly the frames of :func:`cpcaudio.extract.extract` on the whole
signal (to float rounding), whatever the sizes of the pieces pushed, in constant memory:

* **Encoder.** Frame ``t`` reads the samples ``[offset + t * hop, ... + receptive_field)``
  (:class:`~cpcaudio.geometry.FrameGeometry`). A frame is emitted once its whole receptive field has
  arrived; it is computed from a slice that starts on a multiple of the hop at or before its first
  sample (or at sample 0), so the conv grids line up and the zero padding at the slice's edges never
  reaches it (the argument of :mod:`cpcaudio.extract.chunks`). The frames whose field runs past the end
  of the signal (the right-hand padding) come out of :meth:`StreamingExtractor.flush`, computed with the
  signal's true end. Only the samples from the next frame's slice start on are kept: fewer than
  ``receptive_field + hop`` besides the newest piece.
* **Context network.** The GRU/LSTM state after the last emitted frame is carried to the next.
* **Normalisation.** ``batch`` (running statistics, eval mode), ``channel``, ``channel-unbiased`` and
  ``none`` act per frame and stream exactly. ``layer`` (GroupNorm over the whole sequence) makes every
  frame depend on the end of the signal: such models are refused.
* **Input standardisation** (``encoder.input_normalization: sequence``): :func:`extract` standardises a
  signal with its own mean and standard deviation, which a stream cannot know before its end. The
  extractor therefore requires them as ``input_statistics=(mean, std)`` (one value per channel), e.g.
  from a first pass with :class:`RunningStatistics` (constant memory, float64 sums), and refuses such a
  model without them; models with ``input_normalization: none`` (e.g. every CPC_audio import) need none.

Example::

    stream = StreamingExtractor(model)                     # model at 16 kHz, input_normalization none
    for block in blocks:                                   # any sizes, even 1 sample
        frames = stream.push(block)                        # (new frames, dim), possibly (0, dim)
    frames = stream.flush()                                # the last frames
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch

from cpcaudio.errors import UsageError
from cpcaudio.geometry import conv_output_length
from cpcaudio.model.input_norm import EPSILON

if TYPE_CHECKING:  # pragma: no cover
    from cpcaudio.model import CPCModel

Samples = Union[torch.Tensor, np.ndarray]
LAYERS = ("context", "encoder", "all")
MAX_FRAMES_PER_STEP = 1000  # frames computed in one encoder call (10 s for the paper's encoder): bounds memory


class RunningStatistics:
    """Mean and (biased) standard deviation per channel of a signal seen block by block (float64 sums).

    Example::

        statistics = RunningStatistics()
        for block in blocks:            # (time,) or (channels, time)
            statistics.update(block)
        stream = StreamingExtractor(model, input_statistics=statistics.result())
    """

    def __init__(self) -> None:
        self.count = 0
        self._sum: Optional[np.ndarray] = None
        self._sum_squares: Optional[np.ndarray] = None
        self._shift: Optional[np.ndarray] = None  # first block's mean: keeps the sums well conditioned

    def update(self, block: Samples) -> None:
        """Add a block (time,) or (channels, time)."""
        array = _as_array(block).astype(np.float64)  # (C, n)
        if self._shift is None:
            self._shift = array.mean(axis=1) if array.shape[1] else np.zeros(array.shape[0])
            self._sum = np.zeros(array.shape[0])
            self._sum_squares = np.zeros(array.shape[0])
        centred = array - self._shift[:, None]
        self._sum += centred.sum(axis=1)
        self._sum_squares += (centred**2).sum(axis=1)
        self.count += array.shape[1]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)``, each (channels,) float64."""
        if self.count == 0 or self._shift is None:
            raise UsageError("RunningStatistics saw no samples; update() it with the signal first")
        mean_offset = self._sum / self.count
        variance = np.maximum(self._sum_squares / self.count - mean_offset**2, 0.0)
        return self._shift + mean_offset, np.sqrt(variance)


class StreamingExtractor:
    """Frame-exact streaming feature extraction (see the module docstring).

    Args:
        model: a :class:`~cpcaudio.model.CPCModel` (any device; it is run in eval mode).
        layer: ``"context"`` (c), ``"encoder"`` (z) or ``"all"`` (z and c concatenated), as in ``extract``.
        input_statistics: ``(mean, std)`` per channel of the whole signal, required when the model
            standardises its input (``encoder.input_normalization: sequence``), refused otherwise.
        sample_rate: the rate of the pushed samples, checked against the model's (None: assumed equal).
    """

    def __init__(
        self,
        model: "CPCModel",
        layer: str = "context",
        input_statistics: Optional[tuple[Sequence[float], Sequence[float]]] = None,
        sample_rate: Optional[int] = None,
    ) -> None:
        config = model.config
        if layer not in LAYERS:
            raise UsageError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")
        if config.encoder.normalization == "layer":
            raise UsageError(
                "this model's encoder uses normalization 'layer' (statistics over the whole sequence), so no "
                "frame is final before the signal ends; stream only models with batch, channel or no normalisation"
            )
        if sample_rate is not None and int(sample_rate) != config.data.sample_rate:
            raise UsageError(
                f"the stream is at {sample_rate} Hz and the model takes {config.data.sample_rate} Hz; resample the "
                "stream first (e.g. soxr.ResampleStream)"
            )
        self.model = model
        self.layer = layer
        self.geometry = model.encoder.geometry
        self.channels = config.encoder.in_channels
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self._scale = self._input_scale(config.encoder.input_normalization, input_statistics)
        self.reset()

    def _input_scale(
        self, mode: str, statistics: Optional[tuple[Sequence[float], Sequence[float]]]
    ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        if mode == "none":
            if statistics is not None:
                raise UsageError("input_statistics given, but this model feeds raw samples (input_normalization: none)")
            return None
        if statistics is None:
            raise UsageError(
                "this model standardises each signal with its own mean and std (encoder.input_normalization: "
                "sequence), which a stream cannot know; pass input_statistics=(mean, std), e.g. from "
                "RunningStatistics over a first pass"
            )
        mean, std = (torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1)) for v in statistics)
        if mean.numel() != self.channels or std.numel() != self.channels:
            raise UsageError(f"input_statistics must hold one mean and one std per channel ({self.channels})")
        as_column = {"dtype": self.dtype, "device": self.device}
        return mean.view(-1, 1).to(**as_column), (std.view(-1, 1) + EPSILON).to(**as_column)

    # ---- state -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the signal: the next push starts a new one."""
        with torch.inference_mode():
            self._buffer = torch.zeros(self.channels, 0, dtype=self.dtype, device=self.device)  # (C, kept samples)
        self._buffer_start = 0  # absolute index of the buffer's first sample
        self._received = 0  # samples pushed so far
        self._next_frame = 0  # first frame not yet emitted
        self._state = None  # recurrent state after frame _next_frame - 1
        self._finished = False

    @property
    def samples_received(self) -> int:
        """Samples pushed since the start (or the last :meth:`reset`)."""
        return self._received

    @property
    def buffered_samples(self) -> int:
        """Samples held now (the left context the next frames need, plus what has not been used yet)."""
        return int(self._buffer.shape[1])

    @property
    def frames_emitted(self) -> int:
        """Frames returned so far."""
        return self._next_frame

    @property
    def dim(self) -> int:
        """Feature dimension of the returned frames."""
        encoder, context = self.model.config.encoder.hidden_dim, self.model.config.context.hidden_dim
        return {"context": context, "encoder": encoder, "all": encoder + context}[self.layer]

    # ---- streaming ---------------------------------------------------------------------------------------
    def push(self, samples: Samples) -> torch.Tensor:
        """Add the next samples; return the frames that became final.

        Args:
            samples: (time,) for a mono model or (channels, time), at the model's sample rate; any length.

        Returns:
            (new frames, dim) float32 on the CPU, possibly (0, dim).
        """
        if self._finished:
            raise UsageError("this stream was flushed; call reset() to start a new signal")
        array = _as_array(samples, self.channels)
        with torch.inference_mode():
            block = torch.from_numpy(array).to(device=self.device, dtype=self.dtype)  # (C, n)
            if self._scale is not None:
                block = (block - self._scale[0]) / self._scale[1]  # as extract's standardisation
            self._buffer = torch.cat([self._buffer, block], dim=1)
        self._received += block.shape[1]
        # Frames whose whole receptive field has arrived: one "conv" of the field's size and the hop,
        # over the received samples with the stack's left padding (-offset) in front.
        geometry = self.geometry
        ready = conv_output_length(self._received - geometry.offset, geometry.receptive_field, geometry.hop, 0)
        return self._emit(ready, at_end=False)

    def flush(self) -> torch.Tensor:
        """End the signal: return its last frames (those that see the right-hand padding).

        Returns:
            (remaining frames, dim) float32 on the CPU; after it, :meth:`push` needs :meth:`reset`.
        """
        if self._finished:
            return torch.zeros(0, self.dim)
        frames = self._emit(self.model.num_frames(self._received), at_end=True)
        self._finished = True
        self._buffer = self._buffer[:, :0]
        return frames

    def _emit(self, stop: int, at_end: bool) -> torch.Tensor:
        """Frames ``[next, stop)`` as (frames, dim); drops the samples no later frame needs."""
        pieces = []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                while self._next_frame < stop:
                    count = min(stop - self._next_frame, MAX_FRAMES_PER_STEP)
                    last_piece = at_end and self._next_frame + count == stop
                    pieces.append(self._frames(self._next_frame, count, last_piece))
                    self._next_frame += count
                    self._drop_unneeded()
        finally:
            self.model.train(was_training)
        if not pieces:
            return torch.zeros(0, self.dim)
        return torch.cat(pieces)

    def _slice_start(self, frame: int) -> int:
        """The hop-aligned sample at or before ``frame``'s first sample (0 at the signal's start)."""
        first = self.geometry.frame_start(frame)
        return 0 if first <= 0 else first - first % self.geometry.hop

    def _frames(self, first_frame: int, count: int, at_end: bool) -> torch.Tensor:
        """Frames ``[first_frame, first_frame + count)`` from the buffer: (count, dim) float32 CPU."""
        geometry = self.geometry
        start = self._slice_start(first_frame)
        if at_end:
            stop = self._received  # the signal's true end: the right-hand padding is the whole signal's
        else:
            stop = geometry.frame_start(first_frame + count - 1) + geometry.receptive_field
        piece = self._buffer[:, start - self._buffer_start : stop - self._buffer_start]  # (C, slice samples)
        encoded, _ = self.model.encoder(piece.unsqueeze(0))  # (1, hidden, slice frames)
        skip = first_frame - start // geometry.hop  # slice frame j is the signal's frame j + start // hop
        assert encoded.shape[-1] >= skip + count, (encoded.shape, skip, count)
        latents = encoded[:, :, skip : skip + count].transpose(1, 2)  # (1, count, hidden)
        outputs = [latents]
        if self.layer != "encoder":
            context, self._state = self.model.context_network(latents, self._state)  # (1, count, H)
            outputs = [context] if self.layer == "context" else [latents, context]
        return torch.cat(outputs, dim=-1)[0].float().cpu()

    def _drop_unneeded(self) -> None:
        keep_from = self._slice_start(self._next_frame)
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[:, keep_from - self._buffer_start :]  # a view; the next push compacts it
            self._buffer_start = keep_from


def stream_frames(
    extractor: StreamingExtractor, blocks: Iterable[Samples]
) -> torch.Tensor:
    """All frames of the signal made of ``blocks`` (pushed in order, then flushed): (frames, dim)."""
    pieces = [extractor.push(block) for block in blocks]
    pieces.append(extractor.flush())
    return torch.cat(pieces)


def _as_array(samples: Samples, channels: Optional[int] = None) -> np.ndarray:
    """(channels, time) float32 C-ordered array from (time,) or (channels, time)."""
    if isinstance(samples, torch.Tensor):
        samples = samples.detach().cpu().numpy()
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"samples must be a numpy array or torch tensor, got {type(samples).__name__}")
    array = samples[None] if samples.ndim == 1 else samples
    if array.ndim != 2 or (channels is not None and array.shape[0] != channels):
        expected = "(time,) or (1, time)" if channels == 1 else f"({channels}, time)"
        raise UsageError(f"push takes samples of shape {expected}, got {tuple(samples.shape)}")
    return np.require(array, dtype=np.float32, requirements=["C"])
