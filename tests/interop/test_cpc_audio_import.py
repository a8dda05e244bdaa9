"""Importing CPC_audio checkpoints: the shared files CPC_audio's own code wrote reproduce its features, and
checkpoints of other configurations (written here in CPC_audio's layout and names) reproduce an independent
reference of CPC_audio's forward pass, written from its definition in cpc/model.py and checked first
against the shared reference features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

import cpcaudio
import soundfile as sf
import torch
import torch.nn.functional as F
from helpers import shared_data
from typer.testing import CliRunner

from cpcaudio.train.checkpoint import load as load_native
from cpcaudio.cli.main import app
from cpcaudio.errors import CheckpointError, UsageError
from cpcaudio.interop import (
    HUB_LAYOUT,
    TRAIN_LAYOUT,
    convert_checkpoint,
    foreign_layout,
    load_foreign_checkpoint,
    load_model,
    refuse_training,
)

RELATIVE = 1e-4
SHARED_MODELS = {"default": "checkpoint_2.pt", "original_cpc": "checkpoint_2.pt", "librilight": "checkpoint.pt"}
LAYERS = ((10, 5, 3), (8, 4, 2), (4, 2, 1), (4, 2, 1), (4, 2, 1))  # CPCEncoder: (kernel, stride, padding)


# ---- an independent reference of CPC_audio's model ---------------------------------------------------------


def cpc_audio_forward(weights: dict[str, torch.Tensor], options: dict[str, Any], signal: np.ndarray):
    """CPC_audio's CPCModel in eval mode on one signal (time,): returns (c, z), each (frames, dim) numpy.

    Encoder: five Conv1d -> norm -> ReLU; ``layerNorm`` is mean and *unbiased* variance over channels,
    eps 1e-5, then a (1, C, 1) scale and shift; ``batchNorm`` uses the running statistics; ``ID`` is none.
    Context: a batch-first GRU/LSTM of ``nLevelsGRU`` layers from a zero state.
    """
    x = torch.from_numpy(np.asarray(signal, dtype=np.float32)).view(1, 1, -1)
    norm = options.get("normMode", "layerNorm")
    with torch.no_grad():
        for i, (kernel, stride, padding) in enumerate(LAYERS):
            x = F.conv1d(x, weights[f"gEncoder.conv{i}.weight"], weights[f"gEncoder.conv{i}.bias"], stride, padding)
            prefix = f"gEncoder.batchNorm{i}."
            if norm == "layerNorm":
                x = (x - x.mean(1, keepdim=True)) * torch.rsqrt(x.var(1, keepdim=True) + 1e-5)
                x = x * weights[prefix + "weight"] + weights[prefix + "bias"]
            elif norm == "batchNorm":
                x = F.batch_norm(
                    x, weights[prefix + "running_mean"], weights[prefix + "running_var"],
                    weights[prefix + "weight"], weights[prefix + "bias"], training=False, eps=1e-5,
                )
            x = F.relu(x)
        z = x.transpose(1, 2)  # (1, T, C)
        cell = {"GRU": torch.nn.GRU, "LSTM": torch.nn.LSTM}[options.get("arMode", "LSTM")]
        hidden, layers = options.get("hiddenGar", 256), options.get("nLevelsGRU", 1)
        rnn = cell(z.shape[-1], hidden, num_layers=layers, batch_first=True)
        rnn.load_state_dict({k[len("gAR.baseNet."):]: v for k, v in weights.items() if k.startswith("gAR.baseNet.")})
        c = rnn(z)[0]
    return c[0].numpy(), z[0].numpy()


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def read_utterances(folder: Path) -> list[tuple[str, np.ndarray, int]]:
    """(index, int16 samples / 32768 as float32, rate) of each line of ``folder/utterances.txt``."""
    utterances = []
    for line in (folder / "utterances.txt").read_text().splitlines():
        index, relative = line.split()
        samples, rate = sf.read(shared_data(relative), dtype="int16")
        utterances.append((index, samples.astype(np.float32) / 32768, rate))
    return utterances


def speech(name: str = "timit_sample/dr1-fvmh0/sa1.wav") -> tuple[np.ndarray, int]:
    samples, rate = sf.read(shared_data(name), dtype="int16")
    return samples.astype(np.float32) / 32768, rate


def extract_cz(model: Any, signal: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    z, c = model.extract(signal, rate, layer="all").hidden_states
    return c.numpy(), z.numpy()


# ---- the shared files written by CPC_audio --------------------------------------------------------------


@pytest.mark.parametrize("loader", ["interop", "cpcaudio.load"])
@pytest.mark.parametrize("name", sorted(SHARED_MODELS))
def test_shared_cpc_audio_models_reproduce_cpc_audio_features(name, loader):
    folder = shared_data(f"cpc_audio_checkpoints/{name}")
    load = load_model if loader == "interop" else cpcaudio.load
    model = load(folder / SHARED_MODELS[name], device="cpu")
    reference = np.load(folder / "reference_features.npz")
    assert model.config.encoder.input_normalization == "none"
    for index, signal, rate in read_utterances(folder):
        c, z = extract_cz(model, signal, rate)
        assert relative_error(z, reference[f"z_{index}"]) < RELATIVE
        assert relative_error(c, reference[f"c_{index}"]) < RELATIVE
        assert c.shape[0] == signal.size // 160  # one frame per 10 ms


@pytest.mark.parametrize("name", sorted(SHARED_MODELS))
def test_reference_forward_agrees_with_cpc_audio_itself(name):
    """The reference used for the synthetic configurations below reproduces CPC_audio's own features."""
    folder = shared_data(f"cpc_audio_checkpoints/{name}")
    record = torch.load(folder / SHARED_MODELS[name], weights_only=True)
    weights = record["gEncoder"] if "gEncoder" in record else record["weights"]
    options = json.loads((folder / "checkpoint_args.json").read_text()) if "gEncoder" in record else record["config"]
    reference = np.load(folder / "reference_features.npz")
    index, signal, _ = read_utterances(folder)[0]
    c, z = cpc_audio_forward(weights, options, signal)
    assert relative_error(z, reference[f"z_{index}"]) < 1e-5
    assert relative_error(c, reference[f"c_{index}"]) < 1e-5


def test_the_three_shared_models_are_three_configurations():
    configs = {}
    for name, file in SHARED_MODELS.items():
        foreign = load_foreign_checkpoint(shared_data(f"cpc_audio_checkpoints/{name}") / file)
        configs[name] = foreign
    assert configs["default"].config.encoder.normalization == "channel-unbiased"
    assert configs["original_cpc"].config.encoder.normalization == "batch"
    assert (configs["librilight"].config.context.kind, configs["librilight"].config.context.num_layers) == ("lstm", 2)
    assert configs["original_cpc"].info["heads"] == "converted" and configs["original_cpc"].info["trainable"]
    assert not configs["default"].info["trainable"] and "rnnMode" in configs["default"].info["training_refused"]
    assert configs["librilight"].info["format"] == HUB_LAYOUT and not configs["librilight"].info["trainable"]


def test_linear_heads_score_candidates_as_cpc_audio_does():
    """CPC_audio's score is mean_c(W_k c * z); the converted heads give the same number as a dot product."""
    folder = shared_data("cpc_audio_checkpoints/original_cpc")
    model = load_model(folder / "checkpoint_2.pt", device="cpu")
    criterion = torch.load(folder / "checkpoint_2.pt", weights_only=True)["cpcCriterion"]
    signal, rate = read_utterances(folder)[0][1:]
    c, z = (torch.from_numpy(a) for a in extract_cz(model, signal, rate))
    with torch.no_grad():
        predictions = model.heads(c[None])[0]  # (T, K, C)
    for k in (0, 5, 11):
        window = c.shape[0] - 12
        want = ((c[:window] @ criterion[f"wPrediction.predictors.{k}.weight"].T) * z[k + 1 : k + 1 + window]).mean(-1)
        got = (predictions[:window, k] * z[k + 1 : k + 1 + window]).sum(-1)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# ---- other configurations, written in CPC_audio's layout --------------------------------------------------


def random_weights(options: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """A CPC_audio CPCModel state dict (its names and shapes) with random, non-trivial values."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    width, norm = options["hiddenEncoder"], options["normMode"]
    weights: dict[str, torch.Tensor] = {}
    channels = 1
    for i, (kernel, _, _) in enumerate(LAYERS):
        weights[f"gEncoder.conv{i}.weight"] = randn(width, channels, kernel, scale=(channels * kernel) ** -0.5)
        weights[f"gEncoder.conv{i}.bias"] = randn(width, scale=0.1)
        prefix = f"gEncoder.batchNorm{i}."
        if norm == "layerNorm":
            weights[prefix + "weight"] = 1 + randn(1, width, 1, scale=0.2)
            weights[prefix + "bias"] = randn(1, width, 1, scale=0.2)
        elif norm == "batchNorm":
            weights[prefix + "weight"] = 1 + randn(width, scale=0.2)
            weights[prefix + "bias"] = randn(width, scale=0.2)
            weights[prefix + "running_mean"] = randn(width, scale=0.1).abs()
            weights[prefix + "running_var"] = torch.rand(width, generator=generator) * 0.05 + 0.01
            weights[prefix + "num_batches_tracked"] = torch.tensor(3)
        channels = width
    gates = {"GRU": 3, "LSTM": 4}[options["arMode"]] * options["hiddenGar"]
    inputs = width
    for layer in range(options["nLevelsGRU"]):
        scale = options["hiddenGar"] ** -0.5
        weights[f"gAR.baseNet.weight_ih_l{layer}"] = randn(gates, inputs, scale=scale)
        weights[f"gAR.baseNet.weight_hh_l{layer}"] = randn(gates, options["hiddenGar"], scale=scale)
        weights[f"gAR.baseNet.bias_ih_l{layer}"] = randn(gates, scale=scale)
        weights[f"gAR.baseNet.bias_hh_l{layer}"] = randn(gates, scale=scale)
        inputs = options["hiddenGar"]
    return weights


def random_criterion(options: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """CPC_audio's cpcCriterion state for linear (``nn.Linear(H, C, bias=False)``) or ffd heads."""
    generator = torch.Generator().manual_seed(seed)
    width, hidden = options["hiddenEncoder"], options["hiddenGar"]
    state = {}
    for k in range(options["nPredicts"]):
        prefix = f"wPrediction.predictors.{k}."
        if options["rnnMode"] == "linear":
            state[prefix + "weight"] = torch.randn(width, hidden, generator=generator)
        else:  # ffd: two EqualizedLinear layers, hidden width = hiddenEncoder
            state[prefix + "lin1.module.weight"] = torch.randn(width, hidden, generator=generator)
            state[prefix + "lin1.module.bias"] = torch.randn(width, generator=generator) * 0.1
            state[prefix + "lin2.module.weight"] = torch.randn(width, width, generator=generator)
            state[prefix + "lin2.module.bias"] = torch.randn(width, generator=generator) * 0.1
    return state


def write_train_run(
    folder: Path, options: dict[str, Any], seed: int = 0, number: int = 2, weights: Optional[dict] = None
) -> Path:
    """A CPC_audio train.py run folder: checkpoint_<number>.pt + checkpoint_args.json + checkpoint_logs.json."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = random_weights(options, seed) if weights is None else weights
    criterion = random_criterion(options, seed + 1) if options.get("rnnMode") in ("linear", "ffd") else {}
    path = folder / f"checkpoint_{number}.pt"
    torch.save({"gEncoder": weights, "cpcCriterion": criterion, "optimizer": {"state": {}, "param_groups": []},
                "best": weights}, path)
    (folder / "checkpoint_args.json").write_text(json.dumps(options))
    (folder / "checkpoint_logs.json").write_text(json.dumps({"epoch": list(range(number + 1)), "saveStep": 1}))
    return path


OTHER_CONFIGURATIONS = {
    # another width, a 3-layer GRU, batch norm, 5 linear heads, sequential sampling (train.py layout)
    "gru3-batchnorm": dict(hiddenEncoder=48, hiddenGar=40, arMode="GRU", nLevelsGRU=3, normMode="batchNorm",
                           nPredicts=5, rnnMode="linear", samplingType="sequential", negativeSamplingExt=16),
    # ChannelNorm at another width, ffd heads
    "gru-layernorm-ffd": dict(hiddenEncoder=40, hiddenGar=24, arMode="GRU", nLevelsGRU=1, normMode="layerNorm",
                              nPredicts=3, rnnMode="ffd", samplingType="uniform"),
    # no normalisation, 2-layer LSTM (written in the hub layout below)
    "lstm2-id": dict(hiddenEncoder=24, hiddenGar=56, arMode="LSTM", nLevelsGRU=2, normMode="ID", nPredicts=7),
}


@pytest.mark.parametrize("name", sorted(OTHER_CONFIGURATIONS))
def test_other_configurations_reproduce_the_reference(tmp_path, name):
    options = OTHER_CONFIGURATIONS[name]
    weights = random_weights(options, seed=7)
    if name == "lstm2-id":
        path = tmp_path / "hub.pt"
        torch.save({"config": options, "weights": weights}, path)
        assert foreign_layout(path) == HUB_LAYOUT
    else:
        path = write_train_run(tmp_path / name, options, weights=weights)
        assert foreign_layout(path) == TRAIN_LAYOUT
    model = load_model(path, device="cpu")
    assert model.config.encoder.hidden_dim == options["hiddenEncoder"]
    assert model.config.context.num_layers == options["nLevelsGRU"]
    assert model.config.predictor.num_steps == options["nPredicts"]
    for utterance in ("timit_sample/dr1-fvmh0/sa1.wav", "timit_sample/dr2-marc0/sa2.wav"):
        signal, rate = speech(utterance)
        c, z = extract_cz(model, signal, rate)
        c_ref, z_ref = cpc_audio_forward(weights, options, signal)
        assert relative_error(z, z_ref) < RELATIVE
        assert relative_error(c, c_ref) < RELATIVE


def test_ffd_heads_score_as_cpc_audio(tmp_path):
    options = OTHER_CONFIGURATIONS["gru-layernorm-ffd"]
    path = write_train_run(tmp_path / "run", options)
    model = load_model(path, device="cpu")
    criterion = torch.load(path, weights_only=True)["cpcCriterion"]
    c = torch.randn(30, options["hiddenGar"], generator=torch.Generator().manual_seed(3))
    z = torch.randn(30, options["hiddenEncoder"], generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        predictions = model.heads(c[None])[0]  # (T, K, C)
    for k in range(options["nPredicts"]):
        p = f"wPrediction.predictors.{k}."
        w1, b1 = criterion[p + "lin1.module.weight"], criterion[p + "lin1.module.bias"]
        w2, b2 = criterion[p + "lin2.module.weight"], criterion[p + "lin2.module.bias"]
        hidden = torch.relu((c @ w1.T + b1) * (2 / w1.shape[1]) ** 0.5)  # EqualizedLinear: He scale at run time
        want = (((hidden @ w2.T + b2) * (2 / w2.shape[1]) ** 0.5) * z).mean(-1)
        torch.testing.assert_close((predictions[:, k] * z).sum(-1), want, rtol=1e-5, atol=1e-5)


def test_a_run_folder_means_its_latest_checkpoint(tmp_path):
    options = OTHER_CONFIGURATIONS["gru3-batchnorm"]
    write_train_run(tmp_path / "run", options, seed=1, number=2)
    latest = write_train_run(tmp_path / "run", options, seed=2, number=10)
    foreign = load_foreign_checkpoint(tmp_path / "run")
    assert foreign.info["source"] == str(latest)
    expected = torch.load(latest, weights_only=True)["gEncoder"]["gEncoder.conv0.weight"]
    torch.testing.assert_close(foreign.state_dict["encoder.layers.0.conv.weight"], expected)
    config, state, info = foreign  # unpacks like a tuple
    assert info["trainable"] and config.data.sampler == "sequential"
    assert any("sequential" in note for note in info["notes"])


# ---- what cannot be imported, in one line -----------------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_missing_args_file_is_named(tmp_path):
    path = write_train_run(tmp_path / "run", OTHER_CONFIGURATIONS["gru3-batchnorm"])
    (tmp_path / "run" / "checkpoint_args.json").unlink()
    with pytest.raises(CheckpointError) as error:
        load_model(path, device="cpu")
    assert "checkpoint_args.json" in one_line(error) and str(path) in one_line(error)


@pytest.mark.parametrize(
    "change, option",
    [
        ({"normMode": "instanceNorm"}, "normMode"),
        ({"arMode": "transformer"}, "arMode"),
        ({"arMode": "RNN"}, "arMode"),
        ({"arMode": "no_ar"}, "arMode"),
        ({"cpc_mode": "reverse"}, "cpc_mode"),
        ({"encoder_type": "mfcc"}, "encoder_type"),
        ({"load": ["/elsewhere/checkpoint_3.pt"]}, "load"),
    ],
)
def test_options_cpcaudio_cannot_express_are_refused_by_name(tmp_path, change, option):
    options = {**OTHER_CONFIGURATIONS["gru3-batchnorm"], **change}
    path = write_train_run(tmp_path / "run", options, weights=random_weights(OTHER_CONFIGURATIONS["gru3-batchnorm"], 0))
    with pytest.raises(CheckpointError) as error:
        load_foreign_checkpoint(path)
    assert one_line(error).split(": ", 1)[1].startswith(f"{option} ")


def test_weights_that_contradict_the_options_are_refused(tmp_path):
    options = OTHER_CONFIGURATIONS["gru3-batchnorm"]
    weights = random_weights({**options, "hiddenEncoder": 16}, 0)
    with pytest.raises(CheckpointError) as error:
        load_foreign_checkpoint(write_train_run(tmp_path / "narrow", options, weights=weights))
    assert "gEncoder.conv0.weight" in one_line(error)
    extra = {**random_weights(options, 0), "gAR.baseNet.weight_ih_l0_reverse": torch.zeros(3)}
    with pytest.raises(CheckpointError) as error:
        load_foreign_checkpoint(write_train_run(tmp_path / "bidirectional", options, weights=extra))
    assert "weight_ih_l0_reverse" in one_line(error)


def test_a_run_resumed_in_its_own_folder_is_not_refused_for_load(tmp_path):
    options = {**OTHER_CONFIGURATIONS["gru3-batchnorm"], "load": [str(tmp_path / "run" / "checkpoint_1.pt")]}
    path = write_train_run(tmp_path / "run", options, weights=random_weights(OTHER_CONFIGURATIONS["gru3-batchnorm"], 0))
    assert load_foreign_checkpoint(path).info["trainable"]


# ---- convert, and training from an import ---------------------------------------------------------------


def test_convert_writes_a_native_checkpoint_with_the_same_features(tmp_path):
    folder = shared_data("cpc_audio_checkpoints/default")
    out = tmp_path / "converted.pt"
    info = convert_checkpoint(folder, out)
    native = load_native(out, device="cpu")
    signal, rate = read_utterances(folder)[0][1:]
    reference = np.load(folder / "reference_features.npz")
    c, z = extract_cz(native, signal, rate)
    assert relative_error(c, reference["c_0"]) < RELATIVE and relative_error(z, reference["z_0"]) < RELATIVE
    record = torch.load(out, weights_only=True)
    assert record["imported_from"] == info and record["step"] == 0
    with pytest.raises(UsageError) as error:  # transformer heads: training cannot resume, in one line
        refuse_training(record, out)
    assert "rnnMode" in one_line(error) and "cannot be trained" in one_line(error)
    with pytest.raises(UsageError):
        convert_checkpoint(folder, out)  # exists
    with pytest.raises(UsageError):
        convert_checkpoint(out, tmp_path / "again.pt")  # already native


def test_converted_linear_heads_allow_training(tmp_path):
    path = write_train_run(tmp_path / "run", OTHER_CONFIGURATIONS["gru3-batchnorm"])
    out = tmp_path / "native.pt"
    convert_checkpoint(path, out)
    record = torch.load(out, weights_only=True)
    refuse_training(record, out)  # nothing to refuse
    model = load_native(out, device="cpu")
    loss = model(torch.randn(2, 1, 4000)).loss
    assert torch.isfinite(loss)


def test_native_checkpoints_are_not_foreign(tiny_checkpoint):
    assert foreign_layout(tiny_checkpoint) is None
    assert load_model(tiny_checkpoint, device="cpu").imported_from is None


def test_cli_convert(tmp_path):
    path = write_train_run(tmp_path / "run", OTHER_CONFIGURATIONS["gru3-batchnorm"])
    result = CliRunner().invoke(app, ["convert", str(path), str(tmp_path / "out.pt")])
    assert result.exit_code == 0, result.output
    assert "prediction heads converted (5 linear heads)" in result.output
    assert load_native(tmp_path / "out.pt", device="cpu").config.context.num_layers == 3
    (tmp_path / "run" / "checkpoint_args.json").unlink()
    result = CliRunner().invoke(app, ["convert", str(path), str(tmp_path / "other.pt")])
    assert result.exit_code == CheckpointError.exit_code
    assert result.output.strip().startswith("error:") and "checkpoint_args.json" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("fast", [True, False])
def test_unbiased_channel_norm_is_cpc_audio_channel_norm(fast):
    from cpcaudio.model.cpu_kernels import fast_paths
    from cpcaudio.model.encoder import make_norm

    generator = torch.Generator().manual_seed(0)
    norm = make_norm("channel-unbiased", 16)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(16, generator=generator))
        norm.bias.copy_(0.3 * torch.randn(16, generator=generator))
    x = torch.randn(3, 16, 50, generator=generator) * 0.05 + 0.02
    x.requires_grad_(True)
    with fast_paths(fast):
        got = norm(x)
    want = (x - x.mean(1, keepdim=True)) * torch.rsqrt(x.var(1, keepdim=True) + 1e-5)  # unbiased variance
    want = want * norm.weight.view(1, -1, 1) + norm.bias.view(1, -1, 1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    (got_grads,) = torch.autograd.grad(got.square().sum(), [norm.weight], retain_graph=True)
    (want_grads,) = torch.autograd.grad(want.square().sum(), [norm.weight])
    torch.testing.assert_close(got_grads, want_grads, rtol=1e-4, atol=1e-4)


def test_a_cpc_audio_run_folder_extracts_into_a_store_keyed_by_its_checkpoint_file(tmp_path):
    """A run folder stands for its latest checkpoint_N.pt: the store records that file's sha256 (a folder has
    none), so the folder and the file are the same extraction, and the features are the imported model's."""
    from cpcaudio.extract import FeatureStore, extract_to_store, file_sha256

    folder = shared_data("cpc_audio_checkpoints/default")
    signal, rate = speech()
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "sa1.wav", signal[: rate // 2], rate, subtype="FLOAT")
    summary = extract_to_store(folder, audio, tmp_path / "store", device="cpu")
    meta = json.loads((tmp_path / "store" / "meta.json").read_text())
    assert meta["checkpoint"] == str(folder.resolve())
    assert meta["checkpoint_sha256"] == file_sha256(folder / "checkpoint_2.pt")
    again = extract_to_store(folder / "checkpoint_2.pt", audio, tmp_path / "store", device="cpu")
    assert again.already_complete and summary.num_utterances == 1
    frames = FeatureStore.open(tmp_path / "store").features(0)
    model = load_model(folder, device="cpu")
    expected = model.extract(signal[: rate // 2], rate).frames.numpy()
    np.testing.assert_allclose(frames, expected, rtol=1e-5, atol=1e-6)
