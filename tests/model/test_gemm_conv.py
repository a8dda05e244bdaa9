"""The encoder's time-major convolution as one matrix product (cpcaudio.model.gemm_conv) against nn.Conv1d."""

from __future__ import annotations

import copy

import pytest
import torch

from cpcaudio import CPCConfig, CPCModel
from cpcaudio.extract.features import encode_padded
from cpcaudio.model.cpu_kernels import fast_paths, onednn_available
from cpcaudio.model.gemm_conv import choose_method, gemm_conv1d

GEOMETRIES = [  # (in, out, kernel, stride, padding, length): the paper's layers, stride 1, k not a multiple of s
    (1, 16, 10, 5, 3, 203), (8, 16, 8, 4, 2, 101), (8, 16, 4, 2, 1, 50), (3, 5, 3, 1, 1, 20), (4, 6, 5, 2, 0, 31),
    (4, 6, 7, 3, 2, 33), (2, 3, 2, 5, 1, 40), (6, 4, 1, 1, 0, 9), (8, 16, 4, 2, 0, 51), (8, 16, 8, 4, 3, 23),
    (8, 16, 8, 4, 0, 8),
]  # fmt: skip


@pytest.mark.parametrize("channels_first", [False, True])
@pytest.mark.parametrize("in_channels,out_channels,kernel,stride,padding,length", GEOMETRIES)
def test_gemm_conv_equals_conv1d_with_gradients(in_channels, out_channels, kernel, stride, padding, length,
                                                channels_first):  # fmt: skip
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=padding).double()
    signal = torch.randn(3, in_channels, length, dtype=torch.float64, requires_grad=True)
    expected = conv(signal)  # (B, Cout, T)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [signal, conv.weight, conv.bias], grad)
    source = signal.detach().clone().requires_grad_()
    x = source if channels_first else source.transpose(1, 2)  # (B, Cin, L) or a (B, L, Cin) view
    got = gemm_conv1d(x, conv, channels_first=channels_first)  # (B, T, Cout)
    assert got.shape == (3, expected.shape[2], out_channels) and got.is_contiguous()
    got_grads = torch.autograd.grad(got, [source, conv.weight, conv.bias], grad.transpose(1, 2))
    torch.testing.assert_close(got, expected.transpose(1, 2), rtol=0, atol=1e-12)
    for value, reference in zip(got_grads, expected_grads):
        torch.testing.assert_close(value, reference, rtol=0, atol=1e-12)


def test_gemm_conv_passes_gradcheck():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(3, 4, 8, stride=4, padding=2).double()
    x = torch.randn(2, 37, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: gemm_conv1d(x, _with(conv, w, b)), (x, conv.weight, conv.bias))


def _with(conv: torch.nn.Conv1d, weight: torch.Tensor, bias: torch.Tensor) -> torch.nn.Conv1d:
    """A copy of ``conv`` whose parameters are the given tensors (for gradcheck's inputs)."""
    copy = torch.nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding).double()
    del copy.weight, copy.bias
    copy.weight, copy.bias = weight, bias  # type: ignore[assignment]
    return copy


def test_float32_product_path_agrees_with_conv1d():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(64, 96, 8, stride=4, padding=2)
    signal = torch.randn(3, 64, 403)
    expected = conv(signal).transpose(1, 2)
    got = gemm_conv1d(signal.transpose(1, 2), conv)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("in_channels,out_channels,kernel,stride,padding,length", GEOMETRIES)
def test_float32_time_major_path_equals_conv1d_with_gradients(in_channels, out_channels, kernel, stride, padding,
                                                              length):  # fmt: skip
    """In float32 on CPU the time-major layers run oneDNN's convolution over channels-last memory (blocks
    layers) or the thin framed product (short windows); both against nn.Conv1d, gradients included, with
    an in-place ReLU on the output as the encoder applies it."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(in_channels, out_channels, kernel, stride=stride, padding=padding)
    signal = torch.randn(3, in_channels, length, requires_grad=True)
    expected = conv(signal).relu()  # (B, Cout, T)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [signal, conv.weight, conv.bias], grad)
    source = signal.detach().transpose(1, 2).contiguous().requires_grad_()  # (B, L, Cin), dense time-major
    got = gemm_conv1d(source, conv)
    if onednn_available() and choose_method(in_channels, out_channels, kernel, stride) == "blocks":
        assert type(got.grad_fn).__name__ == "_OnednnNwcConvBackward"
    assert got.shape == (3, expected.shape[2], out_channels) and got.is_contiguous()
    got = got.relu_()  # in place: allowed on every path's output
    got_grads = torch.autograd.grad(got, [source, conv.weight, conv.bias], grad.transpose(1, 2))
    torch.testing.assert_close(got, expected.transpose(1, 2), rtol=1e-4, atol=1e-5)
    references = (expected_grads[0].transpose(1, 2), *expected_grads[1:])
    for value, reference in zip(got_grads, references):
        torch.testing.assert_close(value, reference, rtol=1e-4, atol=1e-4)


def test_method_choice_frames_short_windows_and_blocks_wide_layers():
    assert choose_method(1, 512, 10, 5) == "frames"  # the paper's first layer: 10 values per frame
    assert choose_method(512, 512, 8, 4) == "blocks"
    assert choose_method(512, 512, 4, 2) == "blocks"
    assert choose_method(512, 512, 4, 4) == "blocks"  # one slice: no extra products at all


def test_too_short_input_is_a_clear_error():
    conv = torch.nn.Conv1d(2, 3, 8, stride=4)
    with pytest.raises(ValueError, match="at least 8 input steps"):
        gemm_conv1d(torch.randn(1, 5, 2), conv)


@pytest.mark.parametrize("normalization", ["batch", "channel", "channel-unbiased", "none", "layer"])
def test_encoder_time_major_path_equals_the_channels_first_one(normalization):
    config = CPCConfig.from_dict({"encoder": {"hidden_dim": 32, "normalization": normalization}})
    torch.manual_seed(0)
    model = CPCModel(config).train()
    signal = torch.randn(3, 1, 3200)
    # gradients on: every norm with a time-major form trains time-major, layer norm keeps nn.Conv1d
    assert model.encoder.runs_time_major(signal) == (normalization != "layer")
    with fast_paths(False):
        assert not model.encoder.runs_time_major(signal)
    with torch.no_grad():
        assert model.encoder.runs_time_major(signal) == (normalization != "layer")
    if normalization == "layer":
        return
    outcomes = []
    for time_major in (True, False):
        encoder = copy.deepcopy(model.encoder)  # each path updates its own batch-norm statistics
        if time_major:  # called directly, with gradients: its backward is tested too
            latents = encoder.forward_time_major(signal).transpose(1, 2)  # (B, C, T)
        else:  # the plain PyTorch formulation (nn.Conv1d on (batch, channels, time)) as the reference
            with fast_paths(False):
                latents, _ = encoder(signal)
        latents.square().sum().backward()
        grads = {name: p.grad for name, p in encoder.named_parameters()}
        outcomes.append((latents.detach(), grads, dict(encoder.named_buffers())))
    (fast, fast_grads, fast_buffers), (plain, plain_grads, plain_buffers) = outcomes
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    largest = max(float(g.abs().max()) for g in plain_grads.values())
    for name, grad in fast_grads.items():
        # floor: a conv bias before batch norm has a gradient of exactly 0 in theory, rounding noise here
        scale = plain_grads[name].abs().max().clamp(min=1e-3 * largest)
        assert (grad - plain_grads[name]).abs().max() / scale < 1e-3, name
    for name, buffer in fast_buffers.items():  # running statistics of batch norm, over (batch, time)
        torch.testing.assert_close(buffer, plain_buffers[name], rtol=1e-4, atol=1e-5)


def test_padded_batch_encoding_is_the_same_on_both_paths():
    config = CPCConfig.from_dict({"encoder": {"hidden_dim": 32, "normalization": "channel"}})
    torch.manual_seed(0)
    model = CPCModel(config).eval()
    signal = torch.randn(3, 1, 3200)
    lengths = torch.tensor([3200, 2011, 997])
    with torch.no_grad():
        fast = encode_padded(model, signal, lengths)
        with fast_paths(False):
            plain = encode_padded(model, signal, lengths)
        alone = encode_padded(model, signal[2:, :, :997], None)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast[2, : alone.shape[1]], alone[0], rtol=1e-4, atol=1e-4)
    assert fast[2, alone.shape[1] :].abs().max() == 0
