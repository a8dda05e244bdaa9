"""WindowSampler: no straddling, padding, modes, determinism, exact resume, sharding, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from cpcaudio.data import PreparedDataset, WindowSampler, prepare
from cpcaudio.errors import DataError, UsageError

RATE = 16000
WINDOW = 1600
# (speaker, number of samples): a mix of long utterances and ones shorter than a window.
UTTERANCES = [
    ("s1", 5000), ("s1", 900), ("s1", 3300), ("s2", 4100), ("s2", 1600), ("s3", 7000), ("s3", 1200), ("s3", 2400)
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PreparedDataset:
    """Utterances whose samples encode (utterance, position), with labels that encode the frame index."""
    root = tmp_path_factory.mktemp("sampler")
    source = root / "src"
    for number, (speaker, length) in enumerate(UTTERANCES):
        folder = source / speaker
        folder.mkdir(parents=True, exist_ok=True)
        samples = (number * 3000 + np.arange(length) % 3000).astype(np.int16)  # unique per (utt, pos) mod 3000
        soundfile.write(str(folder / f"u{number}.wav"), samples, RATE, subtype="PCM_16")
        frames = -(-length // 160)
        symbols = [f"p{j % 7}" for j in range(frames)]  # frame j gets phone p{j mod 7}
        lines = [f"{j * 0.01:.4f} {min((j + 1) * 0.01, length / RATE):.6f} {s}" for j, s in enumerate(symbols)]
        (folder / f"u{number}.phn").write_text("\n".join(lines) + "\n")
    result = prepare("textgrid", source, root / "ds", workers=1, test_fraction=0.0)
    return PreparedDataset.open(result.path)


def _collect(sampler: WindowSampler, count: int) -> list:
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def _same(a, b) -> bool:
    return all(
        torch.equal(getattr(a, name), getattr(b, name))
        for name in ("signal", "lengths", "utterance_index", "start", "speaker")
    )


def _expected_window(dataset: PreparedDataset, utterance: int, start: int, window: int) -> np.ndarray:
    """The window computed from the source pattern, independently of the reader."""
    number = int(dataset.utterance_ids[utterance].split("/u")[1])
    length = UTTERANCES[number][1]
    out = np.zeros(window, dtype=np.float32)
    stop = min(start + window, length)
    out[: stop - start] = (number * 3000 + np.arange(start, stop) % 3000) / 32768.0
    return out


@pytest.mark.parametrize("mode", ["uniform", "same-speaker", "sequential"])
def test_windows_never_straddle_and_padding_is_masked(dataset, mode):
    sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=4, mode=mode, seed=3, split=None)
    for batch in _collect(sampler, 25):
        assert batch.signal.shape == (4, 1, WINDOW) and batch.signal.dtype == torch.float32
        for row in range(4):
            utterance, start, length = int(batch.utterance_index[row]), int(batch.start[row]), int(batch.lengths[row])
            assert 0 <= start and start + length <= dataset.lengths[utterance]
            assert length == min(WINDOW, dataset.lengths[utterance] - start)
            expected = _expected_window(dataset, utterance, start, WINDOW)
            np.testing.assert_array_equal(batch.signal[row, 0].numpy(), expected)
            assert batch.speaker[row] == dataset.speaker_indices[utterance]
        assert torch.equal(batch.mask, torch.arange(WINDOW)[None, :] < batch.lengths[:, None])


def test_skip_short_utterances(dataset):
    sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=8, seed=1, split=None, short_utterances="skip")
    drawn = set()
    for batch in _collect(sampler, 30):
        drawn.update(batch.utterance_index.tolist())
        assert (batch.lengths == WINDOW).all()
    long_enough = {i for i in range(len(dataset)) if dataset.lengths[i] >= WINDOW}
    assert drawn == long_enough
    with pytest.raises(DataError, match="short_utterances='pad'"):
        WindowSampler(dataset, window_size=10_000, split=None, short_utterances="skip")


def test_deterministic_for_a_seed(dataset):
    make = lambda seed: WindowSampler(dataset, window_size=WINDOW, batch_size=4, seed=seed, split=None)  # noqa: E731
    first, second, other = _collect(make(7), 10), _collect(make(7), 10), _collect(make(8), 10)
    assert all(_same(a, b) for a, b in zip(first, second))
    assert not all(_same(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("mode", ["uniform", "same-speaker", "sequential"])
def test_exact_resume_from_state(dataset, mode):
    kwargs = dict(window_size=WINDOW, batch_size=3, mode=mode, seed=11, split=None)
    reference = _collect(WindowSampler(dataset, **kwargs), 12)
    interrupted = WindowSampler(dataset, **kwargs)
    _collect(interrupted, 5)
    state = interrupted.state_dict()
    assert state["step"] == 5 and all(isinstance(v, (int, str, type(None))) for v in state.values())
    resumed = WindowSampler(dataset, **kwargs)
    resumed.load_state_dict(state)
    continued = _collect(resumed, 7)
    assert all(_same(a, b) for a, b in zip(continued, reference[5:]))
    assert [b.step for b in continued] == list(range(5, 12))
    with pytest.raises(UsageError, match="seed=11"):
        WindowSampler(dataset, **{**kwargs, "seed": 12}).load_state_dict(state)


def test_rank_shards_are_disjoint_and_cover_everything(dataset):
    world = 3
    shares = [
        WindowSampler(dataset, window_size=WINDOW, seed=5, split=None, rank=r, world_size=world) for r in range(world)
    ]
    sets = [set(s.utterances.tolist()) for s in shares]
    assert sum(len(s) for s in sets) == len(dataset) and set.union(*sets) == set(range(len(dataset)))
    for rank, sampler in enumerate(shares):
        again = WindowSampler(dataset, window_size=WINDOW, seed=5, split=None, rank=rank, world_size=world)
        assert set(again.utterances.tolist()) == sets[rank]
        for batch in _collect(sampler, 10):
            assert set(batch.utterance_index.tolist()) <= sets[rank]
    with pytest.raises(UsageError, match="rank"):
        WindowSampler(dataset, rank=3, world_size=3, split=None)


def test_same_speaker_batches(dataset):
    sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=6, mode="same-speaker", seed=2, split=None)
    speakers_seen = set()
    for batch in _collect(sampler, 30):
        assert len(set(batch.speaker.tolist())) == 1
        speakers_seen.add(int(batch.speaker[0]))
    assert speakers_seen == set(range(len(dataset.speaker_vocabulary)))


def test_sequential_covers_every_sample_once_per_epoch(dataset):
    sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=4, mode="sequential", seed=0, split=None)
    expected_windows = sum(-(-length // WINDOW) for _, length in UTTERANCES)
    assert sampler.windows_per_epoch == expected_windows
    covered = {i: np.zeros(int(dataset.lengths[i]), dtype=int) for i in range(len(dataset))}
    seen = 0
    for batch in _collect(sampler, -(-expected_windows // 4)):
        for row in range(4):
            if seen == expected_windows:
                break
            u, s, n = int(batch.utterance_index[row]), int(batch.start[row]), int(batch.lengths[row])
            covered[u][s : s + n] += 1
            seen += 1
    assert all((c == 1).all() for c in covered.values())
    assert sampler.epoch == 1


def test_uniform_draws_in_proportion_to_length(dataset):
    sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=64, seed=0, split=None)
    counts = np.zeros(len(dataset))
    for batch in _collect(sampler, 60):
        np.add.at(counts, batch.utterance_index.numpy(), 1)
    share = dataset.lengths / dataset.lengths.sum()
    np.testing.assert_allclose(counts / counts.sum(), share, atol=0.02)


def test_window_frame_labels_follow_the_utterance_labels(dataset):
    sampler = WindowSampler(dataset, window_size=WINDOW, batch_size=4, seed=9, split=None, with_labels=True)
    hop = dataset.label_hop
    for batch in _collect(sampler, 10):
        assert batch.frame_labels.shape == (4, WINDOW // hop)
        for row in range(4):
            utterance, start, length = int(batch.utterance_index[row]), int(batch.start[row]), int(batch.lengths[row])
            labels = dataset.frame_labels(utterance)
            for j, value in enumerate(batch.frame_labels[row].tolist()):
                center = start + j * hop + hop / 2
                if center >= start + length:
                    assert value == -1
                else:  # the label of the source frame containing the window frame's centre
                    symbol = f"p{int(center // hop) % 7}"
                    stored = dataset.phone_vocabulary[labels[int(center // hop)]]
                    assert dataset.phone_vocabulary[value] == symbol == stored


def test_dataset_without_labels_refuses_with_labels(tmp_path):
    source = tmp_path / "src" / "spk"
    source.mkdir(parents=True)
    soundfile.write(str(source / "a.wav"), np.zeros(4000, dtype=np.int16), RATE)
    dataset = PreparedDataset.open(prepare("folder", tmp_path / "src", tmp_path / "ds", workers=1).path)
    with pytest.raises(UsageError, match="no frame labels"):
        WindowSampler(dataset, with_labels=True, split=None)
    batch = next(iter(WindowSampler(dataset, window_size=WINDOW, batch_size=2, split=None)))
    assert batch.frame_labels is None and batch.signal.shape == (2, 1, WINDOW)


def test_sampler_in_dataloader_worker_processes(dataset):
    """The dataset re-opens its files after pickling (DataLoader workers with spawn or fork)."""
    import pickle

    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone.signal(2), dataset.signal(2))
    assert Path(clone.path) == Path(dataset.path)
