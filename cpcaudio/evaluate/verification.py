"""Speaker verification of frozen features: trials, cosine scores, the equal error rate and minDCF.

No training: each test utterance becomes one embedding, each trial (a pair of test utterances) one score,
and the scores of same-speaker (target) and different-speaker (non-target) trials are compared.

* **Embedding**: the utterance protocol's vector (the mean over the utterance's frames of the probed
  layer; raw values: resampled to a common length and flattened), minus the mean embedding of the
  training utterances of the same feature source (*centring*, the mean normalisation of cosine scoring
  in VoxCeleb-style evaluations: MFCC or log-mel means share a large common offset that would make every
  cosine close to 1). No other normalisation.
* **Score**: the cosine of the two centred embeddings (0 where one of them is the zero vector).
* **Trials** (:func:`draw_trials`): every same-speaker pair of test utterances (each unordered pair once,
  no utterance with itself) and as many different-speaker pairs, drawn uniformly without replacement
  with the seed; when fewer different-speaker pairs exist than same-speaker pairs, all of them are used
  and the report says so. The same trials score every feature source.
* **EER** (:func:`equal_error_rate`): the error rate where the false-acceptance rate (FAR, non-targets
  accepted) equals the false-rejection rate (FRR, targets rejected), on the ROC of scikit-learn's
  ``roc_curve``, linearly interpolated between the two operating points around the crossing.
* **minDCF** (:func:`min_dcf`): the detection cost ``C_miss * P_miss * P_target + C_fa * P_fa *
  (1 - P_target)`` at the best threshold, divided by the cost of the best trivial system
  ``min(C_miss * P_target, C_fa * (1 - P_target))`` (normalised, as in NIST SRE and VoxCeleb), with
  ``P_target = 0.01`` and ``C_miss = C_fa = 1``; 1.0 is no better than accepting or rejecting everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from sklearn.metrics import roc_curve

from cpcaudio.evaluate.problems import ProbeInputs, pool

P_TARGET = 0.01  # prior of a target trial in minDCF (NIST SRE 2008+ / VoxCeleb)
C_MISS = 1.0  # cost of a rejected target trial in minDCF
C_FA = 1.0  # cost of an accepted non-target trial in minDCF
DET_POINTS = 200  # at most this many (FAR, FRR) points of each DET curve are kept in the report

EMBEDDING_NOTE = (
    "the utterance protocol's vector (mean over the utterance's frames; raw values: resampled and flattened), "
    "centred by the mean embedding of the training utterances of the same features"
)
SCORING_NOTE = "cosine of the two centred embeddings"
TRIALS_NOTE = (
    "every same-speaker pair of test utterances (unordered, no self-pairs) and as many different-speaker "
    "pairs drawn uniformly without replacement with the seed (all of them when fewer exist)"
)
EER_NOTE = "where FAR = FRR on the ROC (sklearn.metrics.roc_curve), interpolated linearly between its two nearest points"


@dataclass(frozen=True)
class Trials:
    """Verification trials over test utterances.

    Attributes:
        first, second: (n_trials,) int64 dataset indices of the two utterances of each trial (``first``
            before ``second`` in the test order).
        target: (n_trials,) bool, same speaker; the target trials come first.
        utterances: (n_utterances,) int64 the labelled test utterances the trials were drawn from.
        speakers: number of distinct speakers among them.
        nontarget_available: number of different-speaker pairs among them.
        seed: the seed of the non-target draw.
    """

    first: np.ndarray
    second: np.ndarray
    target: np.ndarray
    utterances: np.ndarray
    speakers: int
    nontarget_available: int
    seed: int

    @property
    def num_target(self) -> int:
        return int(self.target.sum())

    @property
    def num_nontarget(self) -> int:
        return int(self.target.size - self.target.sum())

    def note(self) -> str:
        """One line: the counts, and whether every different-speaker pair had to be used."""
        if self.num_target == 0 or self.num_nontarget == 0:
            return (
                f"no verification: the {self.utterances.size} labelled test utterances give {self.num_target} "
                f"same-speaker and {self.nontarget_available} different-speaker pairs; it needs at least one "
                "of each (two test utterances of one speaker and two speakers in the test split)"
            )
        text = (
            f"{self.num_target} target and {self.num_nontarget} non-target trials of {self.utterances.size} test "
            f"utterances of {self.speakers} speakers"
        )
        if self.num_nontarget < self.num_target:
            text += f" (fewer different-speaker pairs than same-speaker pairs exist: all {self.num_nontarget} used)"
        return text


def draw_trials(utterances: Sequence[int], labels: Sequence[Any], seed: int) -> Trials:
    """Every same-speaker pair of ``utterances`` and as many different-speaker pairs, seeded.

    Args:
        utterances: (n,) dataset indices of the test utterances, in test order.
        labels: (n,) the speaker of each (None: unlabelled, left out).
        seed: seeds the uniform draw, without replacement, of the different-speaker pairs.

    Returns:
        The trials: target pairs sorted by position, then the drawn non-target pairs sorted by position;
        each unordered pair at most once, never an utterance with itself. Memory stays O(n + trials):
        the non-target pairs are drawn by index, never all listed.
    """
    if len(utterances) != len(labels):
        raise ValueError(f"draw_trials needs one label per utterance, got {len(utterances)} and {len(labels)}")
    kept = [(int(u), label) for u, label in zip(utterances, labels) if label is not None]
    index = np.array([u for u, _ in kept], dtype=np.int64)
    codes_of: dict[Any, int] = {}
    codes = np.array([codes_of.setdefault(label, len(codes_of)) for _, label in kept], dtype=np.int64)
    n = index.size
    # same-speaker pairs (a < b): within each speaker's positions, every pair
    first_t, second_t = [], []
    later_same = np.zeros(n, dtype=np.int64)  # same-speaker utterances after each position
    for code in range(len(codes_of)):
        positions = np.flatnonzero(codes == code)
        later_same[positions] = np.arange(positions.size - 1, -1, -1)
        a, b = np.triu_indices(positions.size, k=1)
        first_t.append(positions[a])
        second_t.append(positions[b])
    target_a = np.concatenate(first_t) if first_t else np.zeros(0, np.int64)
    target_b = np.concatenate(second_t) if second_t else np.zeros(0, np.int64)
    order = np.lexsort((target_b, target_a))
    target_a, target_b = target_a[order], target_b[order]
    # different-speaker pairs: row a holds the later positions b of another speaker; draw their linear index
    per_row = (n - 1 - np.arange(n)) - later_same
    available = int(per_row.sum())
    wanted = min(target_a.size, available)
    rng = np.random.default_rng(seed)
    drawn = np.sort(rng.choice(available, size=wanted, replace=False)) if wanted < available else np.arange(available)
    starts = np.concatenate([[0], np.cumsum(per_row)[:-1]]) if n else np.zeros(0, np.int64)
    rows = np.searchsorted(starts, drawn, side="right") - 1
    nontarget_a = rows.astype(np.int64)
    nontarget_b = np.empty(drawn.size, dtype=np.int64)
    for row in np.unique(rows):
        chosen = rows == row
        others = np.flatnonzero(codes[row + 1 :] != codes[row]) + row + 1
        nontarget_b[chosen] = others[drawn[chosen] - starts[row]]
    return Trials(
        first=index[np.concatenate([target_a, nontarget_a])],
        second=index[np.concatenate([target_b, nontarget_b])],
        target=np.concatenate([np.ones(target_a.size, bool), np.zeros(nontarget_a.size, bool)]),
        utterances=index,
        speakers=len(codes_of),
        nontarget_available=available,
        seed=int(seed),
    )


def trials_digest(trials: Trials, utterance_ids: Sequence[str]) -> str:
    """SHA-1 of the trial list as lines ``target|nontarget ID ID``: equal digests, equal trials."""
    lines = (
        f"{'target' if t else 'nontarget'} {utterance_ids[int(a)]} {utterance_ids[int(b)]}\n"
        for a, b, t in zip(trials.first, trials.second, trials.target)
    )
    digest = hashlib.sha1()
    for line in lines:
        digest.update(line.encode())
    return digest.hexdigest()


@dataclass
class UtteranceEmbeddings:
    """Centred embeddings of the test utterances of one feature source.

    Attributes:
        utterances: (n,) int64 dataset indices of the test utterances that have frames.
        vectors: (n, dim) float64 their embeddings, centred.
        no_frames: test utterances left out because the source gave them no frame.
    """

    utterances: np.ndarray
    vectors: np.ndarray
    no_frames: int


def utterance_embeddings(frames: list[np.ndarray], how: str, inputs: ProbeInputs) -> UtteranceEmbeddings:
    """The centred embedding of every test utterance (module docstring).

    Args:
        frames: (frames, dim) of every utterance of ``inputs.utterances`` (train, then test), in that order.
        how: the utterance protocol's pooling (``mean``, or ``flatten`` for raw values).
        inputs: the probe's inputs.
    """
    length = max((f.shape[0] for f in frames), default=1)
    vectors = [pool(f, how, length) for f in frames]
    is_train = inputs.is_train
    train = [v for v, tr in zip(vectors, is_train) if tr and v is not None]
    test_rows = [r for r, tr in enumerate(is_train) if not tr and vectors[r] is not None]
    dim = next((v.size for v in vectors if v is not None), 0)
    centre = np.mean(np.stack(train).astype(np.float64), axis=0) if train else np.zeros(dim)
    test = np.stack([vectors[r] for r in test_rows]).astype(np.float64) if test_rows else np.zeros((0, dim))
    return UtteranceEmbeddings(
        utterances=inputs.utterances[test_rows].astype(np.int64),
        vectors=test - centre,
        no_frames=int((~is_train).sum()) - len(test_rows),
    )


def cosine_scores(embeddings: UtteranceEmbeddings, trials: Trials) -> tuple[np.ndarray, np.ndarray]:
    """(scores (m,), scored (n_trials,) bool): the cosine of each trial whose two utterances both have an
    embedding (``scored``), in trial order."""
    row_of = {int(u): r for r, u in enumerate(embeddings.utterances)}
    scored = np.array([int(a) in row_of and int(b) in row_of for a, b in zip(trials.first, trials.second)], bool)
    norms = np.linalg.norm(embeddings.vectors, axis=1, keepdims=True)
    unit = np.divide(embeddings.vectors, norms, out=np.zeros_like(embeddings.vectors), where=norms > 0)
    a = np.array([row_of[int(u)] for u in trials.first[scored]], dtype=np.int64)
    b = np.array([row_of[int(u)] for u in trials.second[scored]], dtype=np.int64)
    return np.einsum("nd,nd->n", unit[a], unit[b]) if a.size else np.zeros(0), scored


def _error_rates(scores: np.ndarray, target: np.ndarray, drop_intermediate: bool) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at every threshold of the ROC, from reject-all (0, 1) to accept-all (1, 0)."""
    scores, target = np.asarray(scores, dtype=np.float64), np.asarray(target, dtype=bool)
    if scores.shape != target.shape or scores.ndim != 1:
        raise ValueError(f"scores and target must be (n_trials,) arrays of one length, got {scores.shape} and {target.shape}")
    if target.all() or not target.any():
        raise ValueError(f"EER and minDCF need target and non-target trials, got {int(target.sum())} of {target.size} targets")
    far, tpr, _ = roc_curve(target, scores, drop_intermediate=drop_intermediate)
    return far, 1.0 - tpr


def equal_error_rate(scores: np.ndarray, target: np.ndarray) -> float:
    """The equal error rate of verification ``scores`` (higher: more likely the same speaker).

    Args:
        scores: (n_trials,) float scores.
        target: (n_trials,) bool, True for same-speaker trials (both kinds must occur).

    Returns:
        The rate where FAR and FRR cross on the ROC, linearly interpolated between the last point with
        FAR < FRR and the first with FAR >= FRR (0.0 for perfectly separated scores).
    """
    far, frr = _error_rates(scores, target, drop_intermediate=False)
    gap = far - frr  # rises from -1 (reject all) to 1 (accept all)
    i = int(np.argmax(gap >= 0))  # i >= 1: the first point is (0, 1)
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    return float(far[i - 1] + t * (far[i] - far[i - 1]))


def min_dcf(
    scores: np.ndarray, target: np.ndarray, p_target: float = P_TARGET, c_miss: float = C_MISS, c_fa: float = C_FA
) -> float:
    """The normalised minimum detection cost of verification ``scores`` (module docstring).

    Args:
        scores: (n_trials,) float scores.
        target: (n_trials,) bool, True for same-speaker trials (both kinds must occur).
        p_target, c_miss, c_fa: the target prior and the two costs.

    Returns:
        ``min over thresholds of (c_miss * P_miss * p_target + c_fa * P_fa * (1 - p_target))`` divided by
        ``min(c_miss * p_target, c_fa * (1 - p_target))``; at most 1 (the trivial thresholds count).
    """
    if not 0.0 < p_target < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"min_dcf needs 0 < p_target < 1 and positive costs, got {p_target}, {c_miss}, {c_fa}")
    far, frr = _error_rates(scores, target, drop_intermediate=False)
    cost = c_miss * frr * p_target + c_fa * far * (1.0 - p_target)
    return float(cost.min() / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def det_points(scores: np.ndarray, target: np.ndarray, max_points: int = DET_POINTS) -> dict[str, list[float]]:
    """The DET curve as ``{"false_alarm": [...], "miss": [...]}`` (FAR, FRR), at most ``max_points``
    of the ROC's corners (evenly spaced along the curve, both ends kept), rounded to 6 digits."""
    far, frr = _error_rates(scores, target, drop_intermediate=True)
    keep = np.unique(np.linspace(0, far.size - 1, min(far.size, max_points)).round().astype(int))
    return {"false_alarm": [round(float(v), 6) for v in far[keep]], "miss": [round(float(v), 6) for v in frr[keep]]}


def verification_result(name: str, embeddings: UtteranceEmbeddings, trials: Trials) -> dict[str, Any]:
    """The verification record of feature source ``name``: ``eer``, ``min_dcf`` (None without target or
    non-target trials), trial counts, mean scores and the DET curve."""
    scores, scored = cosine_scores(embeddings, trials)
    target = trials.target[scored]
    record: dict[str, Any] = {
        "features": name,
        "eer": None,
        "min_dcf": None,
        "target_trials": int(target.sum()),
        "nontarget_trials": int(target.size - target.sum()),
        "trials_without_embedding": int((~scored).sum()),
        "test_utterances_without_frames": embeddings.no_frames,
    }
    if target.any() and not target.all():
        record.update(
            eer=equal_error_rate(scores, target),
            min_dcf=min_dcf(scores, target),
            mean_target_score=float(scores[target].mean()),
            mean_nontarget_score=float(scores[~target].mean()),
            det=det_points(scores, target),
        )
    return record


def verification_section(trials: Trials, results: list[dict[str, Any]], utterance_ids: Sequence[str]) -> dict[str, Any]:
    """The report's ``verification`` entry: how embeddings, scores, trials and costs were made, and one
    result per feature source (:func:`verification_result`)."""
    return {
        "embedding": EMBEDDING_NOTE,
        "scoring": SCORING_NOTE,
        "eer": EER_NOTE,
        "min_dcf": {"p_target": P_TARGET, "c_miss": C_MISS, "c_fa": C_FA, "normalised": True},
        "trials": {
            "rule": TRIALS_NOTE,
            "seed": trials.seed,
            "test_utterances": int(trials.utterances.size),
            "speakers": trials.speakers,
            "target": trials.num_target,
            "nontarget": trials.num_nontarget,
            "nontarget_available": trials.nontarget_available,
            "sha1": trials_digest(trials, utterance_ids),
            "note": trials.note(),
        },
        "results": results,
    }


def verification_of(report: dict[str, Any]) -> Optional[dict[str, Any]]:
    """A probe report's ``verification`` entry when it has a result with an EER (else None)."""
    section = report.get("verification")
    if not section or not any(r.get("eer") is not None for r in section["results"]):
        return None
    return section
