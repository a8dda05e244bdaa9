"""ONNX export: onnxruntime's numbers equal ``extract``'s (1e-4 relative) on real speech of several lengths,
for a trained cpcaudio model and for imported CPC_audio models (a GRU one: the recurrent cell the dynamo
exporter has mistranslated, and an LSTM one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import shared_data, tiny_config
from typer.testing import CliRunner

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

from cpcaudio.train.checkpoint import save_checkpoint  # noqa: E402
from cpcaudio.cli.main import app  # noqa: E402
from cpcaudio.errors import UsageError  # noqa: E402
from cpcaudio.export import export_onnx, run_onnx  # noqa: E402
from cpcaudio.interop import load_model  # noqa: E402
from cpcaudio.model import CPCModel  # noqa: E402

RELATIVE = 1e-4
UTTERANCES = ("dr1-fvmh0/sa1.wav", "dr4-maeb0/si1411.wav", "dr3-madc0/sx17.wav")


def timit(name: str) -> np.ndarray:
    samples, rate = sf.read(shared_data(f"timit_sample/{name}"), dtype="float32")
    assert rate == 16000
    return samples


def speech_of_several_lengths() -> list[np.ndarray]:
    signals = [timit(name) for name in UTTERANCES if (shared_data("timit_sample") / name).exists()]
    return signals + [signals[0][:4321], signals[1][: 16000 + 77]]  # 0.27 s and just over 1 s


def trained_tiny_model() -> CPCModel:
    """A tiny cpcaudio model after a few Adam steps on TIMIT windows (so weights and norms are not initial)."""
    torch.manual_seed(0)
    model = CPCModel(tiny_config(context={"num_layers": 2}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    signal = torch.from_numpy(np.concatenate([timit(name) for name in UTTERANCES[:2]]))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        starts = torch.randint(0, signal.numel() - 8000, (4,), generator=generator).tolist()
        batch = torch.stack([signal[s : s + 8000] for s in starts]).unsqueeze(1)  # (4, 1, 8000)
        loss = model(batch, generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def assert_matches_extract(path: Path, model: CPCModel) -> None:
    for signal in speech_of_several_lengths():
        context, latents = run_onnx(path, signal[None, None])
        z, c = model.extract(signal, 16000, layer="all").hidden_states
        for got, want in ((latents[0], z.numpy()), (context[0], c.numpy())):
            assert got.shape == want.shape == (model.num_frames(signal.size), want.shape[1])
            assert np.abs(got - want).max() <= RELATIVE * np.abs(want).max()


def test_trained_cpcaudio_model_exports_exactly(tmp_path):
    model = trained_tiny_model()
    assert model.config.encoder.input_normalization == "sequence"  # standardisation inside the graph too
    result = export_onnx(model, tmp_path / "tiny.onnx")
    assert result.max_difference is not None and result.max_difference < RELATIVE
    assert_matches_extract(tmp_path / "tiny.onnx", model)
    # dynamic batch: two equal-length signals at once give each one's own frames
    pair = np.stack([s[:20000] for s in speech_of_several_lengths()[:2]])[:, None]  # (2, 1, 20000)
    context, _ = run_onnx(tmp_path / "tiny.onnx", pair)
    for row in range(2):
        want = model.extract(pair[row, 0], 16000).frames.numpy()
        assert np.abs(context[row] - want).max() <= RELATIVE * np.abs(want).max()
    graph = onnx.load(str(tmp_path / "tiny.onnx"))
    gru = [node for node in graph.graph.node if node.op_type == "GRU"]
    assert gru and all(
        any(a.name == "linear_before_reset" and a.i == 1 for a in node.attribute) for node in gru
    )  # PyTorch's GRU applies the reset gate after the recurrent matrix product (onnxscript #2852)
    meta = {entry.key: entry.value for entry in graph.metadata_props}
    assert (meta["hop"], meta["sample_rate"], meta["receptive_field"]) == ("160", "16000", "465")


@pytest.mark.parametrize("name, file", [("original_cpc", "checkpoint_2.pt"), ("librilight", "checkpoint.pt")])
def test_imported_cpc_audio_model_exports_exactly(tmp_path, name, file):
    model = load_model(shared_data(f"cpc_audio_checkpoints/{name}") / file, device="cpu")
    export_onnx(model, tmp_path / f"{name}.onnx")
    assert_matches_extract(tmp_path / f"{name}.onnx", model)


def test_export_refuses_to_overwrite_and_bad_opsets(tmp_path, tiny_checkpoint):
    model = load_model(tiny_checkpoint, device="cpu")
    (tmp_path / "taken.onnx").write_bytes(b"")
    with pytest.raises(UsageError, match="already exists"):
        export_onnx(model, tmp_path / "taken.onnx")
    with pytest.raises(UsageError, match="opset"):
        export_onnx(model, tmp_path / "new.onnx", opset=9)
    assert not (tmp_path / "new.onnx").exists()


def test_cli_export(tmp_path):
    model = trained_tiny_model()
    checkpoint = tmp_path / "trained.pt"
    save_checkpoint(checkpoint, {"config": model.config.to_dict(), "model": model.state_dict(), "step": 3})
    result = CliRunner().invoke(app, ["export", str(checkpoint), str(tmp_path / "out.onnx")])
    assert result.exit_code == 0, result.output
    assert "onnxruntime matches extract" in result.output and (tmp_path / "out.onnx").is_file()
    again = CliRunner().invoke(app, ["export", str(checkpoint), str(tmp_path / "out.onnx"), "--no-check"])
    assert again.exit_code == UsageError.exit_code and "already exists" in again.output
