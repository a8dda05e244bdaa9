"""Configuration of a CPC model and its training, as nested dataclasses.

Defaults keep the CPC paper's geometry (van den Oord et al., 2018, as implemented by CPC_audio: a 5-layer
strided conv encoder, kernels 10,8,4,4,4, strides 5,4,2,2,2, one frame per 10 ms at 16 kHz; a one-layer GRU
with 256 units; K = 12 linear prediction heads; 128 negatives; windows of 20480 samples) but learn faster
at small budgets (measured, README "Defaults"): 256 encoder channels (paper 512), mixed-speaker batches
(paper: same-speaker), Adam at 5e-4 with 100 warm-up steps and gradient clipping at 1.0 (paper 2e-4,
neither); negatives from the whole batch, as the paper. The paper's configuration is the preset ``paper``
(``cpcaudio/configs/paper.yaml``; :func:`cpcaudio.presets.load_preset`).

A config travels inside every checkpoint, and round-trips through YAML or JSON. ``apply_overrides``
implements the CLI's ``--set section.key=value``; every key and value is validated, and the error names
the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from cpcaudio.config_parsing import all_keys as _all_keys
from cpcaudio.config_parsing import build_dataclass as _build
from cpcaudio.config_parsing import parse_assignment as _parse_assignment
from cpcaudio.config_parsing import parse_problem as _parse_problem
from cpcaudio.config_parsing import suggest as _suggest
from cpcaudio.config_parsing import to_plain as _to_plain
from cpcaudio.errors import ConfigError
from cpcaudio.geometry import default_paddings

Normalization = Literal["batch", "channel", "layer", "none", "channel-unbiased"]
InputNormalization = Literal["sequence", "none"]
NegativeSampling = Literal["batch", "same-sequence", "mixed"]
ContextKind = Literal["gru", "lstm"]
HeadKind = Literal["linear", "mlp", "transformer"]
SamplerMode = Literal["uniform", "same-speaker", "sequential"]
ShortUtterances = Literal["pad", "skip"]
Schedule = Literal["constant", "cosine", "step"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
AugmentTarget = Literal["past", "both"]
UtteranceLoss = Literal["none", "nt-xent", "triplet", "margin"]  # cpcaudio.model.contrastive.UTTERANCE_LOSSES
UtteranceViews = Literal["crop", "augment", "channels"]
UtterancePooling = Literal["mean", "last"]
TripletNegative = Literal["hardest", "random"]


@dataclass
class EncoderConfig:
    """Strided 1-D convolution stack mapping raw signal (batch, channels, time) to latents z."""

    in_channels: int = 1  # channels of the input signal (1 for mono audio, 6 for a 6-axis IMU, ...)
    hidden_dim: int = 256  # output channels of every conv layer = dimension of z (paper: 512)
    kernel_sizes: tuple[int, ...] = (10, 8, 4, 4, 4)  # one entry per layer
    strides: tuple[int, ...] = (5, 4, 2, 2, 2)  # product = samples per frame (160 = 10 ms at 16 kHz)
    paddings: Optional[tuple[int, ...]] = None  # None: (k - s + 1) // 2 per layer, CPC_audio's (3,2,1,1,1)
    normalization: Normalization = "channel"  # per time step across channels (CPC_audio: channel-unbiased)
    input_normalization: InputNormalization = "sequence"  # standardise each input sequence; "none": raw

    def resolved_paddings(self) -> tuple[int, ...]:
        """Paddings actually used (``paddings`` or the default derived from kernels and strides)."""
        if self.paddings is not None:
            return tuple(self.paddings)
        return default_paddings(self.kernel_sizes, self.strides)

    def validate(self) -> None:
        _positive(self, "in_channels", "hidden_dim")
        if len(self.kernel_sizes) == 0:
            raise ConfigError("encoder.kernel_sizes must list at least one layer, e.g. [10, 8, 4, 4, 4]")
        if len(self.strides) != len(self.kernel_sizes):
            raise ConfigError(
                f"encoder.strides has {len(self.strides)} entries but encoder.kernel_sizes has "
                f"{len(self.kernel_sizes)}; give one stride per layer"
            )
        if any(k < 1 for k in self.kernel_sizes) or any(s < 1 for s in self.strides):
            raise ConfigError("encoder.kernel_sizes and encoder.strides must be positive integers")
        if self.paddings is not None:
            if len(self.paddings) != len(self.kernel_sizes):
                raise ConfigError(
                    f"encoder.paddings has {len(self.paddings)} entries for {len(self.kernel_sizes)} "
                    "layers; give one per layer or null for the default"
                )
            if any(p < 0 for p in self.paddings):
                raise ConfigError("encoder.paddings must be >= 0")


@dataclass
class ContextConfig:
    """Autoregressive network summarising z_<=t into c_t."""

    kind: ContextKind = "gru"  # recurrent cell
    hidden_dim: int = 256  # dimension of c_t
    num_layers: int = 1  # stacked recurrent layers

    def validate(self) -> None:
        _positive(self, "hidden_dim", "num_layers")


@dataclass
class PredictorConfig:
    """Prediction heads W_k and the InfoNCE loss."""

    num_steps: int = 12  # K: predict z_{t+1} .. z_{t+K}
    num_negatives: int = 128  # N negatives per (sequence, time, step)
    negative_sampling: NegativeSampling = "batch"  # pool the negatives are drawn from (mixed: half own window)
    head: HeadKind = "linear"  # W_k: linear, one hidden layer (mlp), or a causal transformer layer (CPC_audio's)
    head_hidden_dim: int = 512  # hidden width when head == "mlp"
    # head == "transformer" (cpcaudio.model.heads.TransformerHeads); CPC_audio's values:
    head_attention_heads: int = 8  # attention heads per step; must divide encoder.hidden_dim
    head_feedforward_dim: int = 2048  # width of the feed-forward layer
    head_dropout: float = 0.1  # dropout of the attention weights and the feed-forward hidden layer (training)
    # MoCo-style queue of extra negatives (cpcaudio.model.queue):
    queue_size: int = 0  # latents of earlier batches kept as extra negatives (momentum encoder's); 0: off
    momentum: float = 0.999  # momentum encoder update: theta_k <- m * theta_k + (1 - m) * theta_q per step
    queue_negatives: int = 0  # queue entries scored per (sequence, time, step), drawn uniformly; 0: all of them

    def validate(self) -> None:
        _positive(self, "num_steps", "num_negatives", "head_hidden_dim", "head_attention_heads", "head_feedforward_dim")
        if not 0.0 <= self.head_dropout < 1.0:  # (NaN fails too)
            raise ConfigError(f"predictor.head_dropout must be in [0, 1), got {self.head_dropout}; e.g. 0.1")
        _non_negative(self, "queue_size", "queue_negatives")
        if not 0.0 <= self.momentum <= 1.0:  # (NaN fails too)
            raise ConfigError(f"predictor.momentum must be in [0, 1], got {self.momentum}; e.g. 0.999 (the default)")
        if self.queue_negatives > self.queue_size:
            raise ConfigError(
                f"predictor.queue_negatives={self.queue_negatives} exceeds predictor.queue_size={self.queue_size}; "
                "draw at most the queue's size, or set predictor.queue_negatives=0 (score the whole queue)"
            )


@dataclass
class OptimConfig:
    """Optimisation: Adam as in the paper, optional warm-up and decay."""

    learning_rate: float = 5e-4  # Adam step size (paper: 2e-4)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam moment decay rates
    eps: float = 1e-8  # Adam epsilon
    weight_decay: float = 0.0  # decoupled weight decay (AdamW) when > 0
    warmup_steps: int = 100  # linear warm-up from 0 to learning_rate (paper: 0)
    schedule: Schedule = "constant"  # decay after warm-up
    step_size: int = 10000  # schedule == "step": decay every step_size steps
    step_gamma: float = 0.5  # schedule == "step": multiply the rate by this
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping (paper: 0)
    accumulate: int = 1  # micro-batches per optimiser step

    def validate(self) -> None:
        _positive(self, "learning_rate", "eps", "accumulate", "step_size")
        _non_negative(self, "weight_decay", "warmup_steps", "grad_clip")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError("optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.999]")
        if not 0.0 < self.step_gamma <= 1.0:
            raise ConfigError("optim.step_gamma must be in (0, 1]")


@dataclass
class DataConfig:
    """What the model sees: sample rate, window size and batching."""

    sample_rate: int = 16000  # samples per second of the (prepared) signal
    window_size: int = 20480  # samples per training window (1.28 s at 16 kHz)
    batch_size: int = 8  # windows per batch (per process under torchrun)
    sampler: SamplerMode = "uniform"  # windows from any speaker (paper/CPC_audio: same-speaker)
    short_utterances: ShortUtterances = "pad"  # utterances shorter than a window: pad+mask or skip
    num_workers: int = 0  # loader processes making training batches (windows + augmentation); 0: main process

    def validate(self) -> None:
        _positive(self, "sample_rate", "window_size", "batch_size")
        _non_negative(self, "num_workers")


@dataclass
class TrainConfig:
    """The training loop: length, validation, logging, precision."""

    max_steps: int = 100000  # optimiser steps
    validate_every: int = 1000  # steps between validations (and checkpoints)
    validation_batches: int = 50  # batches per validation
    log_every: int = 10  # steps between metric lines
    seed: int = 0  # seeds python, numpy and torch
    precision: Precision = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False  # torch.compile the model and loss
    max_epochs: float = 0.0  # > 0: train this many passes over the training audio instead of max_steps
    max_minutes: float = 0.0  # > 0: also stop at the first step this invocation's wall time reaches it; 0: off
    checkpoint_every: int = 0  # steps between last.pt writes; 0: at every validation
    checkpoint_minutes: float = 10.0  # also write last.pt when this many minutes passed since the last; 0: off
    train_split: str = "train"  # dataset split trained on
    validation_split: str = "auto"  # held-out split; auto: "valid" if the dataset has one, else "test"
    sync_batch_norm: bool = False  # under DDP: SyncBatchNorm (all ranks' statistics) instead of per-rank

    def validate(self) -> None:
        _positive(self, "max_steps", "validate_every", "validation_batches", "log_every")
        _non_negative(self, "max_epochs", "max_minutes", "checkpoint_every", "checkpoint_minutes")


@dataclass
class AugmentConfig:
    """Time-domain augmentation of the training windows (Kharitonov et al., 2020); see cpcaudio.augment.

    Each effect applies to a window with its probability, its parameters drawn uniformly from its range.
    The defaults, once enabled, are the paper's best combination (pitch, reverberation, additive noise).
    """

    enabled: bool = False  # augment the training windows (validation never is); false: off
    target: AugmentTarget = "past"  # past: only the context's encoder input; both: targets and negatives too
    pitch_probability: float = 0.5  # share of windows pitch-shifted (duration kept)
    pitch_cents: tuple[float, float] = (-300.0, 300.0)  # shift range; 100 cents = 1 semitone
    reverb_probability: float = 0.5  # share of windows reverberated (synthetic room response)
    reverb_decay_seconds: tuple[float, float] = (0.1, 0.6)  # RT60 range (time to decay by 60 dB): room size
    reverb_wet: tuple[float, float] = (0.2, 0.6)  # share of reverberant energy: distance from the source
    noise_probability: float = 0.5  # share of windows with additive noise
    noise_snr_db: tuple[float, float] = (10.0, 20.0)  # signal-to-noise ratio range in dB
    noise_dir: str = ""  # folder of noise audio files; "": generated coloured noise
    noise_exponent: tuple[float, float] = (0.0, 2.0)  # generated noise power ~ 1/f^e: 0 white, 1 pink, 2 brown
    bandreject_probability: float = 0.0  # share of windows with one frequency band removed
    bandreject_centre_hz: tuple[float, float] = (200.0, 6000.0)  # band centre range, drawn on the mel scale
    bandreject_width_octaves: tuple[float, float] = (0.1, 0.5)  # band width range
    dropout_probability: float = 0.0  # share of windows with time dropout (segments set to zero)
    dropout_fraction: tuple[float, float] = (0.02, 0.1)  # share of the window's samples zeroed
    dropout_segment_ms: tuple[float, float] = (10.0, 100.0)  # length range of each zeroed segment

    def validate(self) -> None:
        for name in ("pitch", "reverb", "noise", "bandreject", "dropout"):
            _interval(self, f"{name}_probability", 0.0, 1.0)
        for name, lowest, highest in (
            ("pitch_cents", -1200.0, 1200.0), ("reverb_decay_seconds", 1e-3, 10.0), ("reverb_wet", 0.0, 1.0),
            ("noise_snr_db", -30.0, 100.0), ("noise_exponent", 0.0, 3.0), ("bandreject_centre_hz", 1.0, 1e6),
            ("bandreject_width_octaves", 1e-3, 4.0), ("dropout_fraction", 0.0, 0.9),
            ("dropout_segment_ms", 0.1, 1e4),
        ):  # fmt: skip
            _interval(self, name, lowest, highest)


@dataclass
class UtteranceConfig:
    """An utterance-level contrastive objective beside CPC's InfoNCE, or alone; see cpcaudio.model.utterance.

    Two views of every training window are pooled into one vector each, projected, and contrasted across
    the batch (:mod:`cpcaudio.model.contrastive`). The loss trained is InfoNCE (when ``cpc``) plus
    ``weight`` times this loss. With ``loss: none`` (the default) every other key is ignored.
    """

    loss: UtteranceLoss = "none"  # none: off; nt-xent (SimCLR), triplet, or margin (pairwise contrastive)
    weight: float = 1.0  # factor of the utterance loss in the total loss
    cpc: bool = True  # also train CPC's InfoNCE; false: the utterance loss alone (no prediction heads)
    views: UtteranceViews = "crop"  # crop: 2 windows of one utterance; augment: 2 augmentations; channels
    pooling: UtterancePooling = "mean"  # context frames -> one vector: mean of the valid ones, or the last
    projection_dim: int = 128  # output of the projection MLP (hidden width = its input's); 0: no projection
    temperature: float = 0.1  # nt-xent: cosine similarities are divided by it
    queue_size: int = 1024  # nt-xent + predictor.queue_size > 0: momentum keys of past windows as negatives; 0: off
    margin: float = 1.0  # triplet and margin: distance margin (distances of unit vectors lie in [0, 2])
    triplet_negative: TripletNegative = "hardest"  # triplet: the closest other window, or a random one
    channel_groups: tuple[tuple[int, ...], ...] = ()  # views=channels: each group's input channels (own encoder)

    def validate(self) -> None:
        if self.loss == "none":
            return
        _positive(self, "weight", "temperature", "margin")
        _non_negative(self, "projection_dim", "queue_size")
        groups = [channel for group in self.channel_groups for channel in group]
        if self.views != "channels":
            if groups:
                raise ConfigError(
                    f"utterance.channel_groups is only read with utterance.views=channels (views={self.views})"
                )
            return
        if len(self.channel_groups) < 2 or any(len(group) == 0 for group in self.channel_groups):
            raise ConfigError(
                "utterance.views=channels needs >= 2 non-empty utterance.channel_groups, e.g. [[0,1,2],[3,4,5]]"
            )
        if min(groups) < 0 or len(set(groups)) != len(groups):
            raise ConfigError(
                f"utterance.channel_groups must hold distinct channel indices >= 0, got {_plain_groups(self)}"
            )

    def check_with(self, config: CPCConfig) -> None:
        """The checks across sections (the channel indices are checked by the model, once the data set them)."""
        if self.loss == "none":
            return
        if config.data.batch_size < 2:
            raise ConfigError("utterance.loss contrasts the windows of a batch: set data.batch_size >= 2")
        if self.views == "augment" and not config.augment.enabled:
            raise ConfigError(
                "utterance.views=augment draws its views with the augment section: set augment.enabled=true"
            )
        if self.views != "channels":
            return
        count = len(self.channel_groups)
        widths = {"encoder.hidden_dim": config.encoder.hidden_dim, "context.hidden_dim": config.context.hidden_dim}
        for key, width in widths.items():
            if width % count:
                raise ConfigError(
                    f"{key}={width} is shared out among the {count} channel groups: make it a multiple of {count}"
                )


def _plain_groups(section: UtteranceConfig) -> str:
    return "[" + ", ".join("[" + ", ".join(map(str, group)) + "]" for group in section.channel_groups) + "]"


@dataclass
class CPCConfig:
    """Everything needed to rebuild and retrain a CPC model; saved in every checkpoint."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    utterance: UtteranceConfig = field(default_factory=UtteranceConfig)

    def validate(self) -> CPCConfig:
        """Check every section; raise :class:`ConfigError` naming the bad key. Returns ``self``."""
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()
        self.utterance.check_with(self)
        return self

    # ---- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), suitable for JSON, YAML and checkpoints."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CPCConfig:
        """Build from a nested dict; unknown keys and wrong types raise :class:`ConfigError`.

        Keys that earlier versions wrote but that no longer exist (:data:`RETIRED_KEYS`) are dropped,
        so old checkpoints and config files still load.
        """
        return _build(cls, _without_retired_keys(data), prefix="").validate()

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically (temporary file + rename)."""
        path = Path(path)
        text = (
            yaml.safe_dump(self.to_dict(), sort_keys=False)
            if path.suffix in (".yaml", ".yml")
            else json.dumps(self.to_dict(), indent=2) + "\n"
        )
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(text)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path) -> CPCConfig:
        """Read a YAML or JSON file written by :meth:`save` (or by hand; partial files are fine)."""
        return cls.load_with_mapping(path)[0]

    @classmethod
    def load_with_mapping(cls, path: str | Path) -> tuple[CPCConfig, dict[str, Any]]:
        """:meth:`load`, plus the file's own mapping of sections (which keys the file sets)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the YAML
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from None
        try:
            if path.suffix == ".json":
                data = json.loads(text)
            else:
                data = yaml.safe_load(text) if text.strip() else {}
        except (yaml.YAMLError, json.JSONDecodeError) as error:
            raise ConfigError(f"config file {path} is not valid YAML/JSON: {_parse_problem(error)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
        try:
            return cls.from_dict(data), data
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None

    def with_overrides(self, assignments: Iterable[str]) -> CPCConfig:
        """A copy with ``section.key=value`` assignments applied (values parsed as YAML)."""
        data = self.to_dict()
        for assignment in assignments:
            key, value = _parse_assignment(assignment)
            section_name, _, field_name = key.partition(".")
            section = data.get(section_name)
            if not isinstance(section, dict) or not field_name:
                raise ConfigError(
                    f"unknown config key '{key}': use section.key with a section among "
                    f"{', '.join(data)}{_suggest(key, _all_keys(data))}"
                )
            if field_name not in section:
                raise ConfigError(
                    f"unknown config key '{key}'; keys of '{section_name}': {', '.join(section)}"
                    f"{_suggest(key, _all_keys(data))}"
                )
            section[field_name] = value
        return CPCConfig.from_dict(data)


def apply_overrides(config: CPCConfig, assignments: Iterable[str]) -> CPCConfig:
    """Functional form of :meth:`CPCConfig.with_overrides`."""
    return config.with_overrides(assignments)


# ---- helpers ---------------------------------------------------------------------------------------

# section.key -> why it went. Written by earlier versions (so found in their checkpoints), read by none.
RETIRED_KEYS: dict[str, str] = {}


def _without_retired_keys(data: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        return data
    cleaned = dict(data)
    for key in RETIRED_KEYS:
        section_name, _, field_name = key.partition(".")
        section = cleaned.get(section_name)
        if isinstance(section, Mapping) and field_name in section:
            cleaned[section_name] = {name: value for name, value in section.items() if name != field_name}
    return cleaned



def _positive(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        _finite(section, name, value, "> 0")
        if value <= 0:
            raise ConfigError(f"{_section_name(section)}.{name} must be > 0, got {value}")


def _non_negative(section: Any, *names: str) -> None:
    for name in names:
        value = getattr(section, name)
        _finite(section, name, value, ">= 0")
        if value < 0:
            raise ConfigError(f"{_section_name(section)}.{name} must be >= 0, got {value}")


def _interval(section: Any, name: str, lowest: float, highest: float) -> None:
    """A number, or an increasing (low, high) range, inside [lowest, highest]."""
    value = getattr(section, name)
    values = value if isinstance(value, tuple) else (value,)
    what = "a range [low, high] with low <= high" if isinstance(value, tuple) else "a number"
    if not all(math.isfinite(v) and lowest <= v <= highest for v in values) or list(values) != sorted(values):
        key = f"{_section_name(section)}.{name}"
        raise ConfigError(
            f"{key} must be {what} inside [{lowest:g}, {highest:g}], got {_plain(value)}; "
            f"e.g. {key}={_plain(getattr(type(section)(), name))} (the default)"
        )


def _plain(value: Any) -> str:
    return f"[{', '.join(f'{v:g}' for v in value)}]" if isinstance(value, tuple) else f"{value:g}"


def _finite(section: Any, name: str, value: Any, bound: str) -> None:
    """Refuse NaN and infinity (which pass or fail ``<`` comparisons silently) naming the key and the default."""
    if isinstance(value, float) and not math.isfinite(value):
        default = getattr(type(section)(), name)
        raise ConfigError(
            f"{_section_name(section)}.{name} must be a finite number {bound}, got {value}; "
            f"e.g. {_section_name(section)}.{name}={default} (the default)"
        )


_SECTION_NAMES = {
    EncoderConfig: "encoder",
    ContextConfig: "context",
    PredictorConfig: "predictor",
    OptimConfig: "optim",
    DataConfig: "data",
    TrainConfig: "train",
    AugmentConfig: "augment",
    UtteranceConfig: "utterance",
}


def _section_name(section: Any) -> str:
    return _SECTION_NAMES.get(type(section), type(section).__name__)
