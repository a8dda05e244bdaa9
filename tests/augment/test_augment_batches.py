"""The chain's seeded draws and the batch stream: same seed same batch, resume, workers 0 vs 2, past vs both."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from augment_corpus import RATE, WINDOW, make_corpus
from cpcaudio.augment import EFFECTS, AugmentationChain, TrainingBatches
from cpcaudio.config import AugmentConfig
from cpcaudio.data import PreparedDataset, WindowBatch, WindowSampler
from cpcaudio.errors import DataError

EVERYTHING = AugmentConfig(
    enabled=True, pitch_probability=0.5, reverb_probability=0.5, noise_probability=0.5,
    bandreject_probability=0.5, dropout_probability=0.5,
)  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PreparedDataset:
    return PreparedDataset.open(make_corpus(tmp_path_factory.mktemp("augment_batches")))


def sampler_of(dataset: PreparedDataset, seed: int = 0) -> WindowSampler:
    return WindowSampler(dataset, window_size=WINDOW, batch_size=4, mode="uniform", seed=seed)


def take(batches, count: int) -> list[WindowBatch]:
    return [next(batches) for _ in range(count)]


def assert_same_batches(left: list[WindowBatch], right: list[WindowBatch]) -> None:
    assert [b.step for b in left] == [b.step for b in right]
    for a, b in zip(left, right):
        assert torch.equal(a.signal, b.signal) and torch.equal(a.lengths, b.lengths)
        assert (a.context_signal is None) == (b.context_signal is None)
        if a.context_signal is not None:
            assert torch.equal(a.context_signal, b.context_signal)


def test_same_seed_same_augmentation_and_every_input_of_the_draw_matters():
    chain = AugmentationChain(EVERYTHING, RATE)
    window = np.random.default_rng(0).standard_normal((1, WINDOW)).astype(np.float32)
    first = chain.window(window, seed=3, rank=0, step=7, position=2)
    assert np.array_equal(first, chain.window(window, seed=3, rank=0, step=7, position=2))
    for other in ({"seed": 4}, {"rank": 1}, {"step": 8}, {"position": 1}):
        arguments = {"seed": 3, "rank": 0, "step": 7, "position": 2, **other}
        if chain.applied(**arguments) or chain.applied(seed=3, rank=0, step=7, position=2):
            assert not np.array_equal(first, chain.window(window, **arguments)), other
    # Probabilities are honoured: about half the windows get each effect, every effect occurs.
    counts = {name: 0 for name in EFFECTS}
    for step in range(200):
        for name in chain.applied(seed=0, rank=0, step=step, position=0):
            counts[name] += 1
    assert all(70 <= count <= 130 for count in counts.values()), counts


def test_switching_one_effect_does_not_change_the_draws_of_the_others():
    pitch_only = AugmentationChain(replace(EVERYTHING, reverb_probability=0.0, noise_probability=0.0,
                                           bandreject_probability=0.0, dropout_probability=0.0), RATE)  # fmt: skip
    both = AugmentationChain(replace(pitch_only.settings.config, dropout_probability=1.0), RATE)
    for step in range(30):
        assert ("pitch" in pitch_only.applied(0, 0, step, 0)) == ("pitch" in both.applied(0, 0, step, 0))
        assert both.applied(0, 0, step, 0)[-1] == "dropout"


def test_augment_touches_only_the_valid_samples_and_is_off_when_disabled():
    signal = torch.zeros(3, 1, WINDOW)
    lengths = torch.tensor([WINDOW, 2000, 1500])
    for row, length in enumerate(lengths.tolist()):
        signal[row, 0, :length] = torch.from_numpy(np.random.default_rng(row).uniform(0.1, 1, length))
    batch = WindowBatch(signal, lengths, torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long),
                        torch.zeros(3, dtype=torch.long), None, step=5)  # fmt: skip
    always = replace(EVERYTHING, **{f"{name}_probability": 1.0 for name in EFFECTS})
    augmented = AugmentationChain(always, RATE).augment(batch, seed=0, rank=0)
    assert augmented.shape == signal.shape
    for row, length in enumerate(lengths.tolist()):
        assert not augmented[row, 0, length:].any()
        assert not torch.equal(augmented[row, 0, :length], signal[row, 0, :length])
    assert not AugmentationChain(replace(always, enabled=False), RATE).active
    assert not AugmentationChain(replace(EVERYTHING, **{f"{n}_probability": 0.0 for n in EFFECTS}), RATE).active


@pytest.mark.parametrize("target", ["past", "both"])
def test_past_keeps_the_clean_windows_for_the_targets_both_replaces_them(dataset, target):
    plain = take(TrainingBatches(sampler_of(dataset)), 3)
    chain = AugmentationChain(replace(EVERYTHING, target=target), RATE)
    augmented = take(TrainingBatches(sampler_of(dataset), chain, target), 3)
    changed = 0
    for clean, batch in zip(plain, augmented):
        if target == "past":
            assert torch.equal(batch.signal, clean.signal)  # targets and negatives: the clean signal
            assert batch.context_signal is not None and batch.context_signal.shape == clean.signal.shape
            changed += int(not torch.equal(batch.context_signal, clean.signal))
        else:
            assert batch.context_signal is None
            changed += int(not torch.equal(batch.signal, clean.signal))
    assert changed == 3


def test_workers_0_and_2_give_identical_batches_and_resume_mid_stream(dataset):
    chain = AugmentationChain(EVERYTHING, RATE)
    reference_sampler = sampler_of(dataset)
    reference = take(TrainingBatches(reference_sampler, chain), 6)
    assert reference_sampler.state_dict()["step"] == 6

    sampler = sampler_of(dataset)
    with TrainingBatches(sampler, chain, num_workers=2) as batches:
        assert_same_batches(take(batches, 4), reference[:4])
        assert sampler.state_dict()["step"] == 4  # consumed, not made ahead
        state = batches.state_dict()

    resumed = sampler_of(dataset)
    resumed.load_state_dict(state)  # what --resume does with last.pt's sampler state
    with TrainingBatches(resumed, chain, num_workers=2) as batches:
        assert_same_batches(take(batches, 2), reference[4:6])
    other_seed = take(TrainingBatches(sampler_of(dataset, seed=1), chain), 1)[0]
    assert not torch.equal(other_seed.context_signal, reference[0].context_signal)


def test_a_data_error_in_a_worker_reaches_the_main_process_as_one_line(dataset, tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    soundfile.write(folder / "hiss.wav", 0.1 * np.random.default_rng(0).standard_normal(8000), RATE)
    config = replace(EVERYTHING, noise_dir=str(folder), noise_probability=1.0)
    chain = AugmentationChain(config, RATE)
    (folder / "hiss.wav").write_bytes(b"not audio any more")
    with TrainingBatches(sampler_of(dataset), chain, num_workers=2) as batches:
        with pytest.raises(DataError, match="cannot read noise audio") as error:
            next(batches)
    assert "\n" not in str(error.value)
