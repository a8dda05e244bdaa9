"""Speaker verification in the speaker probe: EER and minDCF on hand-computed scores, the seeded trial list,
the centred cosine scores, and ``cpcaudio probe --task speaker`` reporting ``eer`` and ``min_dcf`` for the
model and every baseline, with the DET plot."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
import soundfile
from helpers import tiny_config
from typer.testing import CliRunner

from cpcaudio.cli.main import app
from cpcaudio.evaluate import baselines, draw_trials, equal_error_rate, min_dcf, run_probe
from cpcaudio.evaluate.problems import ProbeInputs
from cpcaudio.evaluate.verification import cosine_scores, utterance_embeddings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 16000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scored(targets: list[float], nontargets: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.array(targets + nontargets, float), np.array([True] * len(targets) + [False] * len(nontargets))


# ---- EER and minDCF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "targets, nontargets, expected",
    [
        ([1.0, 2.0], [0.0, -1.0], 0.0),  # perfectly separated
        ([-1.0, -2.0], [0.0, 1.0], 1.0),  # perfectly inverted
        # thresholds 0.9, 0.8, 0.75, 0.7: (FAR, FRR) = (0, 3/4), (0, 1/2), (1/4, 1/2), (1/4, 1/4): they meet at 1/4
        ([0.9, 0.8, 0.7, 0.2], [0.75, 0.3, 0.1, 0.0], 0.25),
        # (0, 2/3), (1/3, 2/3), (1/3, 1/3)
        ([0.9, 0.6, 0.3], [0.7, 0.2, 0.1], 1 / 3),
        # (0, 1/2), (1/4, 1/2), (1/4, 0): FAR = FRR halfway down the vertical segment, at 1/4
        ([0.9, 0.5], [0.6, 0.1, 0.0, -0.1], 0.25),
        # ties: from (0, 1) straight to (1/2, 0) at threshold 0.5; the line FAR = FRR crosses it at (1/3, 1/3)
        ([0.5, 0.5], [0.5, 0.0], 1 / 3),
    ],
)
def test_equal_error_rate_of_hand_computed_scores(targets, nontargets, expected):
    scores, target = scored(targets, nontargets)
    assert equal_error_rate(scores, target) == pytest.approx(expected, abs=1e-12)
    order = np.random.default_rng(0).permutation(target.size)  # trial order does not matter
    assert equal_error_rate(scores[order], target[order]) == pytest.approx(expected, abs=1e-12)


def test_min_dcf_of_hand_computed_scores():
    # (FAR, FRR) at the thresholds: (0, 1), (0, 2/3), (0, 1/3), (1/2, 1/3), (1/2, 0), (1, 0)
    scores, target = scored([0.9, 0.8, 0.4], [0.7, 0.1])
    # P_target 0.01: cost / 0.01 = FRR + 99 FAR, least at (0, 1/3)
    assert min_dcf(scores, target) == pytest.approx(1 / 3)
    # P_target 0.9: cost / 0.1 = 9 FRR + FAR, least at (1/2, 0)
    assert min_dcf(scores, target, p_target=0.9) == pytest.approx(0.5)
    # P_target 0.01, C_fa 1, C_miss 200: cost = 2 FRR + 0.99 FAR, divided by 0.99 (accept all): least at (1/2, 0)
    assert min_dcf(scores, target, c_miss=200.0) == pytest.approx(0.5)
    perfect, labels = scored([1.0, 2.0], [0.0])
    assert min_dcf(perfect, labels) == 0.0
    inverted, labels = scored([-1.0], [0.0, 1.0])
    assert min_dcf(inverted, labels) == 1.0  # no better than rejecting every trial


def test_eer_and_min_dcf_refuse_trials_of_one_kind():
    with pytest.raises(ValueError, match="need target and non-target trials"):
        equal_error_rate(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="need target and non-target trials"):
        min_dcf(np.array([0.1, 0.2]), np.array([False, False]))
    with pytest.raises(ValueError, match="0 < p_target < 1"):
        min_dcf(*scored([1.0], [0.0]), p_target=1.0)


# ---- trials --------------------------------------------------------------------------------------------


def pairs_of(trials, target: bool) -> list[tuple[int, int]]:
    chosen = trials.target == target
    return list(zip(trials.first[chosen].tolist(), trials.second[chosen].tolist()))


def test_trials_are_every_same_speaker_pair_and_as_many_seeded_different_speaker_pairs():
    labels = list("aaabbbbccddde") + [None]  # 13 labelled utterances of 5 speakers, one unlabelled
    utterances = list(range(100, 114))
    speaker = dict(zip(utterances, labels))
    trials = draw_trials(utterances, labels, seed=3)
    same = {p for p in combinations(utterances[:13], 2) if speaker[p[0]] == speaker[p[1]]}
    different = {p for p in combinations(utterances[:13], 2) if speaker[p[0]] != speaker[p[1]]}
    assert len(same) == 3 + 6 + 1 + 3 and len(different) == 78 - 13
    targets, nontargets = pairs_of(trials, True), pairs_of(trials, False)
    assert set(targets) == same and len(targets) == len(same)  # every one, once
    assert targets == sorted(targets)
    assert len(nontargets) == len(same) == len(set(nontargets)) and set(nontargets) <= different
    assert all(a != b for a, b in zip(trials.first, trials.second))
    assert list(trials.target) == [True] * 13 + [False] * 13
    assert (trials.num_target, trials.num_nontarget, trials.nontarget_available) == (13, 13, 65)
    assert trials.speakers == 5 and 113 not in trials.utterances
    assert "13 target and 13 non-target trials of 13 test utterances of 5 speakers" == trials.note()

    again = draw_trials(utterances, labels, seed=3)
    for name in ("first", "second", "target"):
        np.testing.assert_array_equal(getattr(again, name), getattr(trials, name))
    assert pairs_of(draw_trials(utterances, labels, seed=4), False) != nontargets


def test_different_speaker_pairs_are_drawn_uniformly():
    labels = list("aabbbcd")
    utterances = list(range(7))
    different = [p for p in combinations(utterances, 2) if labels[p[0]] != labels[p[1]]]  # 17 of 21 pairs
    counts = dict.fromkeys(different, 0)
    draws = 600
    for seed in range(draws):
        for pair in pairs_of(draw_trials(utterances, labels, seed), False):
            counts[pair] += 1  # (a KeyError: a pair of one speaker)
    expected = draws * 4 / len(different)  # 4 same-speaker pairs, so 4 of the 17 each time
    assert all(abs(count - expected) < 0.3 * expected for count in counts.values()), counts


def test_all_different_speaker_pairs_are_used_when_there_are_too_few():
    trials = draw_trials([5, 6, 7, 8, 9, 10], list("aaaaab"), seed=0)
    assert trials.num_target == 10 and trials.num_nontarget == 5 == trials.nontarget_available
    assert set(pairs_of(trials, False)) == {(u, 10) for u in range(5, 10)}
    assert "all 5 used" in trials.note()
    lonely = draw_trials([1, 2, 3], ["a", "b", "c"], seed=0)  # one utterance per speaker: no target trial
    assert lonely.num_target == lonely.num_nontarget == 0 and "no verification" in lonely.note()


def test_scores_are_cosines_of_embeddings_centred_by_the_train_mean():
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((int(n), 3)).astype(np.float32) + 5.0 for n in rng.integers(2, 9, size=6)]
    inputs = ProbeInputs(None, np.array([0, 1, 2]), np.array([3, 4, 5]), list("abcabc"), window_samples=1)
    embeddings = utterance_embeddings(frames, "mean", inputs)
    centre = np.mean([f.mean(axis=0) for f in frames[:3]], axis=0)
    np.testing.assert_allclose(embeddings.vectors, [f.mean(axis=0) - centre for f in frames[3:]], atol=1e-5)
    np.testing.assert_array_equal(embeddings.utterances, [3, 4, 5])
    trials = draw_trials([3, 4, 5], list("aab"), seed=0)
    scores, kept = cosine_scores(embeddings, trials)
    assert kept.all() and scores.shape == (2,)
    v = embeddings.vectors
    assert scores[0] == pytest.approx(v[0] @ v[1] / np.linalg.norm(v[0]) / np.linalg.norm(v[1]))


# ---- end to end ----------------------------------------------------------------------------------------


def tone_corpus(root, test_fraction: float):
    """4 'speakers' (a pitch each, with noise), 6 utterances of 0.5 s each, prepared as a folder dataset."""
    from cpcaudio.data import PreparedDataset, prepare

    rng = np.random.default_rng(0)
    for number, speaker in enumerate(("anna", "bert", "cleo", "dora")):
        for index in range(6):
            t = np.arange(RATE // 2) / RATE
            pitch = 140.0 * (number + 1) * (1 + 0.02 * index)
            signal = 0.3 * np.sin(2 * np.pi * pitch * t) + 0.3 * np.sin(4 * np.pi * pitch * t)
            signal += 0.03 * rng.standard_normal(t.size)
            path = root / "src" / speaker / f"{speaker}_{index}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, signal.astype(np.float32), RATE, subtype="PCM_16")
    prepare("folder", root / "src", root / "data", workers=1, test_fraction=test_fraction)
    return PreparedDataset.open(root / "data")


def test_probe_speaker_reports_eer_and_min_dcf_of_the_model_and_every_baseline(tmp_path, tiny_checkpoint):
    dataset = tone_corpus(tmp_path, test_fraction=0.5)  # 3 test utterances per speaker: 4 x 3 target trials
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["probe", str(dataset.path), "--task", "speaker", "--checkpoint",
                                      str(tiny_checkpoint), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "results.json").read_text())
    section = report["verification"]
    assert section["trials"]["target"] == 12 and section["trials"]["nontarget"] == 12
    assert section["trials"]["test_utterances"] == 12 and section["trials"]["nontarget_available"] == 66 - 12
    assert section["min_dcf"] == {"p_target": 0.01, "c_miss": 1.0, "c_fa": 1.0, "normalised": True}
    rows = {row["features"]: row for row in section["results"]}
    assert list(rows) == ["model", "mfcc", "logmel", "random"]
    for name, row in rows.items():
        assert 0.0 <= row["eer"] <= 1.0 and 0.0 <= row["min_dcf"] <= 1.0, name
        assert (row["target_trials"], row["nontarget_trials"], row["trials_without_embedding"]) == (12, 12, 0)
        assert row["det"]["false_alarm"][0] == 0.0 and row["det"]["miss"][-1] == 0.0
    assert rows["mfcc"]["eer"] <= 0.1 and rows["logmel"]["eer"] <= 0.1  # four pitches: told apart
    assert rows["mfcc"]["mean_target_score"] > rows["mfcc"]["mean_nontarget_score"]
    assert {r["protocol"] for r in report["results"]} == {"utterance", "window", "window-mean"}  # unchanged
    assert (out / "det.png").read_bytes()[:8] == PNG_MAGIC
    markdown = (out / "results.md").read_text()
    assert "## verification: cosine scores" in markdown and f"| mfcc | {100 * rows['mfcc']['eer']:.1f}% |" in markdown
    assert "## verification" in result.output and "12 target and 12 non-target trials" in result.output


def test_no_same_speaker_test_pair_gives_no_eer_and_no_det_plot(tmp_path):
    dataset = tone_corpus(tmp_path, test_fraction=0.1)  # one test utterance per speaker
    model = baselines.random_model(tiny_config(), seed=0)
    report = run_probe(dataset, "speaker", model=model, baselines_requested="mfcc", device="cpu", out=tmp_path / "r")
    section = report["verification"]
    assert section["trials"]["target"] == 0 and "no verification" in section["trials"]["note"]
    assert [(r["features"], r["eer"], r["min_dcf"]) for r in section["results"]] == [("model", None, None),
                                                                                       ("mfcc", None, None)]
    assert not (tmp_path / "r" / "det.png").exists()
    assert "| mfcc | n/a | n/a | 0 / 0 |" in (tmp_path / "r" / "results.md").read_text()

