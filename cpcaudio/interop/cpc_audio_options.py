"""CPC_audio's training options (``checkpoint_args.json`` or a hub file's ``config``) as a :class:`CPCConfig`.

CPC_audio (facebookresearch/CPC_audio, ``cpc/cpc_default_config.py``) describes a model by argparse
options; a file holds those its run set, and CPC_audio fills the rest with its defaults
(:data:`CPC_AUDIO_DEFAULTS`, the same values). Every option that shapes the features maps onto a config
key or is refused in one line naming it; options that only shape training either map, are noted, or make
the import *features-only* (the prediction heads are not carried over, so training cannot resume):

================  ==========================================================================================
CPC_audio         cpcaudio
================  ==========================================================================================
encoder_type      ``cpc`` only (``mfcc``, ``lfb``: refused)
hiddenEncoder     ``encoder.hidden_dim`` (layers: kernels 10,8,4,4,4, strides 5,4,2,2,2, paddings 3,2,1,1,1)
normMode          ``layerNorm`` -> ``channel-unbiased`` (its ChannelNorm: unbiased variance over channels,
                  eps 1e-5, affine); ``batchNorm`` -> ``batch``; ``ID`` -> ``none``; ``instanceNorm``: refused
arMode            ``GRU`` -> ``gru``, ``LSTM`` -> ``lstm`` (``RNN``, ``no_ar``, ``transformer``: refused)
nLevelsGRU        ``context.num_layers``;  hiddenGar: ``context.hidden_dim``
cpc_mode          null: forward; ``reverse`` (context read right to left): refused; ``none``: no heads
rnnMode           ``linear`` -> ``linear`` heads; ``ffd`` -> ``mlp`` heads of width hiddenEncoder; others
                  (``transformer``, ``LSTM``, ``conv4``...): features only
nPredicts         ``predictor.num_steps``;  negativeSamplingExt: ``predictor.num_negatives``
samplingType      ``samespeaker`` / ``uniform`` / ``sequential`` -> ``data.sampler`` (``sequential`` keeps
                  the recurrent state across CPC_audio's training batches; extraction always starts from
                  a zero state, as CPC_audio's freshly loaded model does); ``samesequence``: noted
sizeWindow        ``data.window_size``; learningRate, beta1, beta2, epsilon: ``optim``
================  ==========================================================================================

CPC_audio feeds raw samples (no input standardisation: ``encoder.input_normalization = "none"``) at
16 kHz, one channel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cpcaudio.config import CPCConfig
from cpcaudio.errors import CheckpointError, ConfigError

# CPC_audio's defaults for the options read here (cpc/cpc_default_config.py at commit b98a1bd).
CPC_AUDIO_DEFAULTS: dict[str, Any] = {
    "hiddenEncoder": 256,
    "hiddenGar": 256,
    "nPredicts": 12,
    "negativeSamplingExt": 128,
    "learningRate": 2e-4,
    "schedulerStep": -1,
    "schedulerRamp": None,
    "beta1": 0.9,
    "beta2": 0.999,
    "epsilon": 1e-8,
    "sizeWindow": 20480,
    "samplingType": "samespeaker",
    "cpc_mode": None,
    "encoder_type": "cpc",
    "normMode": "layerNorm",
    "speakerEmbedding": 0,
    "arMode": "LSTM",
    "nLevelsGRU": 1,
    "rnnMode": "transformer",
    "dropout": False,
    "abspos": False,
    "supervised": False,
    "load": None,
}

# The encoder CPCEncoder builds, whatever the options (cpc/model.py).
CPC_AUDIO_KERNELS = (10, 8, 4, 4, 4)
CPC_AUDIO_STRIDES = (5, 4, 2, 2, 2)
CPC_AUDIO_PADDINGS = (3, 2, 1, 1, 1)
CPC_AUDIO_SAMPLE_RATE = 16000

_NORMS = {"layerNorm": "channel-unbiased", "batchNorm": "batch", "ID": "none"}
_CONTEXTS = {"GRU": "gru", "LSTM": "lstm"}
_SAMPLERS = {"samespeaker": "same-speaker", "uniform": "uniform", "sequential": "sequential"}
_HEADS = {"linear": "linear", "ffd": "mlp"}


@dataclass
class ImportedOptions:
    """What :func:`config_from_cpc_audio` makes of CPC_audio's options.

    Attributes:
        config: the cpcaudio config of the same model.
        heads: CPC_audio's kind of prediction network (``rnnMode``), or None when the run had none.
        training_refused: why training cannot continue from this import ("" when it can).
        notes: training options carried over approximately or not at all (one sentence each).
        options: CPC_audio's options, defaults filled in (plain JSON values).
    """

    config: CPCConfig
    heads: Optional[str]
    training_refused: str
    notes: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def resolved_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """CPC_audio's options with its defaults filled in, as plain JSON values (tuples become lists)."""
    merged = {**CPC_AUDIO_DEFAULTS, **dict(options)}
    return {key: list(value) if isinstance(value, tuple) else value for key, value in merged.items()}


def config_from_cpc_audio(
    options: Mapping[str, Any], source: str, checkpoint_dir: Optional[Path] = None
) -> ImportedOptions:
    """Map CPC_audio's options onto a :class:`CPCConfig`.

    Args:
        options: the training options (``checkpoint_args.json``, or a hub file's ``config``).
        source: the file name used in error messages.
        checkpoint_dir: the folder of a ``train.py`` checkpoint (to tell a resumed run's ``load`` from a
            model assembled from other runs), or None.

    Raises:
        CheckpointError: an option whose features cpcaudio cannot compute, named in one line.
    """
    args = resolved_options(options)

    def refuse(option: str, why: str) -> CheckpointError:
        return CheckpointError(f"CPC_audio checkpoint {source}: {option} {args.get(option)!r} {why}")

    if args["encoder_type"] != "cpc":
        raise refuse("encoder_type", "(a fixed front end instead of CPC's conv encoder) has no cpcaudio equivalent")
    if args["normMode"] not in _NORMS:
        raise refuse(
            "normMode",
            "has no cpcaudio equivalent (cpcaudio normalises the encoder per time step, per batch, over the "
            "whole sequence or not at all)",
        )
    if args["arMode"] not in _CONTEXTS:
        raise refuse("arMode", "has no cpcaudio equivalent; cpcaudio's context network is a GRU or an LSTM")
    if args["cpc_mode"] not in (None, "none"):
        raise refuse("cpc_mode", "(a context network reading right to left) has no cpcaudio equivalent")
    _check_load(args, source, checkpoint_dir, refuse)
    heads, refused, notes = _heads_and_training(args)
    sampler = _SAMPLERS.get(args["samplingType"], "uniform")
    if args["samplingType"] not in _SAMPLERS:
        notes.append(
            f"samplingType {args['samplingType']!r} (each batch from one sequence) has no cpcaudio sampler; "
            "data.sampler is uniform"
        )
    if args["samplingType"] == "sequential":
        notes.append(
            "samplingType 'sequential': CPC_audio's model carries its recurrent state from one call to the next, "
            "even across files; cpcaudio starts every signal from a zero state (as a freshly loaded CPC_audio "
            "model's first call), and StreamingExtractor carries it across the pieces of one signal"
        )
    notes.extend(_schedule_notes(args))
    try:
        config = CPCConfig.from_dict(
            {
                "encoder": {
                    "in_channels": 1,
                    "hidden_dim": int(args["hiddenEncoder"]),
                    "kernel_sizes": list(CPC_AUDIO_KERNELS),
                    "strides": list(CPC_AUDIO_STRIDES),
                    "paddings": list(CPC_AUDIO_PADDINGS),
                    "normalization": _NORMS[args["normMode"]],
                    "input_normalization": "none",
                },
                "context": {
                    "kind": _CONTEXTS[args["arMode"]],
                    "hidden_dim": int(args["hiddenGar"]),
                    "num_layers": int(args["nLevelsGRU"]),
                },
                "predictor": {
                    "num_steps": int(args["nPredicts"]),
                    "num_negatives": int(args["negativeSamplingExt"]),
                    "negative_sampling": "batch",
                    "head": _HEADS.get(heads or "", "linear"),
                    "head_hidden_dim": int(args["hiddenEncoder"]),
                },
                "optim": {
                    "learning_rate": float(args["learningRate"]),
                    "betas": [float(args["beta1"]), float(args["beta2"])],
                    "eps": float(args["epsilon"]),
                },
                "data": {
                    "sample_rate": CPC_AUDIO_SAMPLE_RATE,
                    "window_size": int(args["sizeWindow"]),
                    "sampler": sampler,
                    **_batch_size(args),
                },
            }
        )
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"CPC_audio checkpoint {source} has options cpcaudio cannot use: {error}") from None
    return ImportedOptions(config=config, heads=heads, training_refused=refused, notes=notes, options=args)


def _check_load(args: dict[str, Any], source: str, checkpoint_dir: Optional[Path], refuse: Any) -> None:
    """A model assembled from other runs (``--load`` of several checkpoints, or of another folder's)."""
    load = args.get("load")
    if not load:
        return
    paths = [load] if isinstance(load, str) else list(load)
    elsewhere = checkpoint_dir is None or any(
        Path(os.path.dirname(str(p))).resolve() != checkpoint_dir.resolve() for p in paths
    )
    if len(paths) > 1 or elsewhere:
        raise refuse(
            "load",
            "(this run started from other runs' models, whose architecture its options do not describe) "
            "cannot be imported; import the run it was loaded from",
        )


def _heads_and_training(args: dict[str, Any]) -> tuple[Optional[str], str, list[str]]:
    """(heads kind or None, why training is refused or "", notes)."""
    notes: list[str] = []
    if args.get("supervised"):
        return None, "the run trained a supervised classifier (supervised), not CPC prediction heads", notes
    if args["cpc_mode"] == "none":
        return None, "the run had no prediction heads (cpc_mode 'none')", notes
    heads = str(args["rnnMode"])
    if heads not in _HEADS:
        return heads, (
            f"its prediction heads are CPC_audio {heads!r} networks (rnnMode), which cpcaudio lacks; the "
            "features load, but training cannot resume"
        ), notes
    if int(args.get("speakerEmbedding") or 0) > 0:
        why = "its prediction heads also read a speaker embedding (speakerEmbedding), which cpcaudio lacks"
        return heads, why, notes
    if args.get("dropout"):
        return heads, "its prediction heads apply dropout in training (dropout), which cpcaudio lacks", notes
    return heads, "", notes


def _schedule_notes(args: dict[str, Any]) -> list[str]:
    notes = []
    if args.get("schedulerStep") not in (None, -1) and int(args["schedulerStep"]) > 0:
        notes.append(
            f"schedulerStep {args['schedulerStep']} halves the rate every N epochs in CPC_audio; cpcaudio "
            "counts optimiser steps, so optim.schedule stays constant (set optim.schedule=step to match)"
        )
    if args.get("schedulerRamp"):
        notes.append(
            f"schedulerRamp {args['schedulerRamp']} is a warm-up in epochs; optim.warmup_steps counts steps "
            "and stays 0"
        )
    return notes


def _batch_size(args: dict[str, Any]) -> dict[str, int]:
    per_gpu, gpus = args.get("batchSizeGPU"), args.get("nGPU")
    if isinstance(per_gpu, int) and per_gpu > 0:
        return {"batch_size": per_gpu * (gpus if isinstance(gpus, int) and gpus > 0 else 1)}
    return {}
