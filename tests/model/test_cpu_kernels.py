"""The CPU fast paths compute what the plain PyTorch formulation computes, and the allocator setting does
what it claims (page faults of a repeated large allocation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from cpcaudio import CPCConfig, CPCModel
from cpcaudio.model.cpu_kernels import fast_paths, linear, onednn_available
from cpcaudio.model.cpu_kernels import framed_conv1d
from cpcaudio.model.encoder import ChannelNorm
from cpcaudio.model.loss import sample_negatives


def test_linear_matches_f_linear_on_a_strided_view_with_gradients():
    torch.manual_seed(0)
    steps = torch.randn(6, 70, 3, 40, requires_grad=True)  # (B, T, K, C): the loss feeds one step's view
    weight = torch.randn(150, 40, requires_grad=True)  # 420 x 40 x 150 multiply-adds: above MIN_ONEDNN_MACS
    bias = torch.randn(150, requires_grad=True)
    grad = torch.randn(420, 150)
    results = []
    for enabled in (True, False):
        with fast_paths(enabled):
            rows = steps[:, :, 1].reshape(420, 40)  # a view with row stride 3 * 40
            out = linear(rows, weight, bias)
        fast_taken = type(out.grad_fn).__name__.startswith("_OneDNN")
        assert fast_taken == (enabled and onednn_available())
        out.backward(grad)
        results.append([out.detach()] + [t.grad.clone() for t in (steps, weight, bias)])
        for t in (steps, weight, bias):
            t.grad = None
    expected = F.linear(steps[:, :, 1].reshape(420, 40), weight, bias).detach()
    assert torch.allclose(results[0][0], expected, rtol=1e-5, atol=1e-4)
    for fast, plain in zip(results[0], results[1]):
        assert torch.allclose(fast, plain, rtol=1e-5, atol=1e-4)
    assert results[0][1][:, :, [0, 2]].abs().sum() == 0  # only the used step gets gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channel_norm_matches_layer_norm_even_far_from_zero_mean(dtype):
    torch.manual_seed(0)
    norm = ChannelNorm(24).to(dtype)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(3, 24, 33, dtype=dtype) * 0.5 + 100.0).requires_grad_()  # mean >> std
    grad = torch.randn(3, 24, 33, dtype=dtype)
    out = norm(x)
    out.backward(grad)
    got = [out.detach(), x.grad.clone(), norm.weight.grad.clone(), norm.bias.grad.clone()]
    # Reference: the fused layer_norm over the channel axis, in float64 (PyTorch's own float32
    # layer_norm is off by about 1e-5 of the largest entry here: the input itself is that coarse).
    x_ref = x.detach().double().requires_grad_()
    w_ref = norm.weight.detach().double().requires_grad_()
    b_ref = norm.bias.detach().double().requires_grad_()
    ref = F.layer_norm(x_ref.transpose(1, 2), (24,), w_ref, b_ref, norm.eps).transpose(1, 2)
    ref.backward(grad.double())
    tolerance = 5e-5 if dtype == torch.float32 else 1e-12  # relative to each tensor's largest entry
    for value, expected in zip(got, [ref.detach(), x_ref.grad, w_ref.grad, b_ref.grad]):
        assert (value.double() - expected).abs().max() <= tolerance * expected.abs().max()


def test_channel_norm_function_passes_gradcheck():
    from cpcaudio.model.cpu_kernels import _ChannelNormFunction

    torch.manual_seed(0)
    inputs = (
        torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True),
        torch.randn(5, dtype=torch.float64, requires_grad=True),
        torch.randn(5, dtype=torch.float64, requires_grad=True),
        1e-5,
    )
    assert torch.autograd.gradcheck(_ChannelNormFunction.apply, inputs)


@pytest.mark.parametrize(
    "in_channels,kernel,stride,padding,length",
    [(1, 10, 5, 3, 20480), (6, 3, 1, 1, 100), (2, 4, 2, 0, 17), (1, 7, 3, 0, 7), (3, 5, 5, 2, 41)],
)
def test_framed_conv_matches_conv1d(in_channels, kernel, stride, padding, length):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(in_channels, 16, kernel, stride=stride, padding=padding)
    signal = torch.randn(3, in_channels, length)
    expected = conv(signal)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    expected_grads = [conv.weight.grad.clone(), conv.bias.grad.clone()]
    conv.zero_grad()
    got = framed_conv1d(signal, conv)
    got.backward(grad)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
    for value, reference in zip([conv.weight.grad, conv.bias.grad], expected_grads):
        assert torch.allclose(value, reference, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("normalization", ["channel", "batch"])
def test_model_step_is_the_same_with_and_without_fast_paths(normalization):
    config = CPCConfig.from_dict(
        {
            "encoder": {"hidden_dim": 32, "normalization": normalization},
            "context": {"hidden_dim": 24},
            "predictor": {"num_steps": 3, "num_negatives": 8},
        }
    )
    torch.manual_seed(0)
    model = CPCModel(config)
    signal = torch.randn(4, 1, 6400)  # 160 frames in the pool: the loss's products take the oneDNN path
    frames = model.num_frames(6400)
    negatives = sample_negatives(torch.full((4,), frames), frames, 3, 8)
    outcomes = []
    for enabled in (True, False):
        model.zero_grad()
        with fast_paths(enabled):
            out = model(signal, negative_indices=negatives)
            out.loss.backward()
        outcomes.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fast_loss, fast_grads), (plain_loss, plain_grads) = outcomes
    assert torch.allclose(fast_loss, plain_loss, rtol=1e-5)
    for name, grad in fast_grads.items():
        scale = plain_grads[name].abs().max().clamp(min=1e-3)
        assert (grad - plain_grads[name]).abs().max() / scale < 1e-3, name


PAGE_FAULT_PROBE = """
import json, resource, sys
import torch
from cpcaudio.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
faults = []
for _ in range(15):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB, written once, freed
    del block
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_keep_freed_memory_stops_refaulting_large_blocks():
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MALLOC_") and key not in ("LD_PRELOAD", "GLIBC_TUNABLES")
    }
    runs = {}
    for mode in ("keep", "system"):
        completed = subprocess.run(
            [sys.executable, "-c", PAGE_FAULT_PROBE, mode], capture_output=True, text=True, env=environment, check=True
        )
        runs[mode] = json.loads(completed.stdout)
    if not runs["keep"]["applied"]:
        pytest.skip("not glibc: keep_freed_memory does nothing here")
    pages = 64 * 2**20 // 4096
    # glibc's default maps the block afresh, and the kernel zero-fills every page, each time.
    assert min(runs["system"]["faults"][-3:]) > pages // 2
    # Kept: once the heap holds a free block that fits (a few rounds of fragmentation), no more faults.
    assert max(runs["keep"]["faults"][-3:]) < pages // 20
