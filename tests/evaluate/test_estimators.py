"""Linear probes as scikit-learn estimators: the estimator contract, separable vs shuffled labels,
standardisation, the validation part, and TS2Vec's SVM rules."""

from __future__ import annotations

import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

from cpcaudio.evaluate import LinearProbe, SVMProbe


@parametrize_with_checks([LinearProbe(), SVMProbe(c_grid=(0.1, 10.0), cv=3, max_iter=20000)])
def test_probes_follow_the_scikit_learn_estimator_contract(estimator, check):
    check(estimator)


def labelled_blobs(num_samples: int, num_classes: int, dim: int, seed: int, signal: float):
    """Features whose first ``num_classes`` dimensions carry the class (one-hot x signal) in noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, num_samples)
    x = rng.standard_normal((num_samples, dim)).astype(np.float32)
    x[:, :num_classes] += signal * np.eye(num_classes, dtype=np.float32)[y]
    return x, y


def test_probe_reaches_full_accuracy_when_the_features_carry_the_label():
    x, y = labelled_blobs(1200, 5, 16, seed=0, signal=6.0)
    x[:, 5:] *= 50.0  # large nuisance scales: standardisation must not let them drown the signal
    probe = LinearProbe(random_state=0).fit(x[:600], y[:600])
    assert probe.score(x[600:], y[600:]) > 0.99
    assert set(probe.validation_scores_) == {1e-1, 1e-2, 1e-3, 1e-4, 1e-5}
    assert probe.weight_decay_ in probe.validation_scores_
    probabilities = probe.predict_proba(x[600:])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probe.classes_[probabilities.argmax(axis=1)], probe.predict(x[600:]))


def test_probe_stays_near_chance_on_shuffled_labels():
    x, y = labelled_blobs(3000, 5, 16, seed=1, signal=6.0)
    shuffled = np.random.default_rng(2).permutation(y)
    probe = LinearProbe(random_state=0).fit(x[:1500], shuffled[:1500])
    accuracy = probe.score(x[1500:], shuffled[1500:])
    assert abs(accuracy - 0.2) < 0.06, accuracy  # 5 classes: chance is 20 %


def test_probe_standardises_with_training_statistics_only():
    x, y = labelled_blobs(400, 3, 4, seed=3, signal=4.0)
    probe = LinearProbe().fit(x + 100.0, y)
    np.testing.assert_allclose(probe.scaler_.mean_, (x + 100.0).mean(axis=0), rtol=1e-5)
    before = probe.scaler_.mean_.copy()
    probe.predict(x * 3.0)  # predicting must not refit the scaler
    np.testing.assert_array_equal(probe.scaler_.mean_, before)


def test_validation_part_holds_out_whole_groups():
    x, y = labelled_blobs(500, 4, 6, seed=4, signal=3.0)
    groups = np.repeat(np.arange(50), 10)
    mask = LinearProbe(validation_fraction=0.2, random_state=0)._validation_mask(y, groups)
    assert mask is not None
    for group in range(50):
        assert mask[groups == group].all() or not mask[groups == group].any()
    assert mask.sum() == 100  # 10 of 50 groups
    probe = LinearProbe().fit(x, y, groups=groups)
    assert len(probe.validation_scores_) == 5


def test_probe_on_too_little_data_uses_the_median_penalty_without_validation():
    probe = LinearProbe(weight_decays=(1.0, 0.1, 0.01)).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    assert probe.validation_scores_ == {}
    assert probe.weight_decay_ == 0.1
    assert (probe.predict([[0.0], [3.0]]) == [0, 1]).all()


def test_svm_probe_follows_ts2vec_rules():
    x, y = labelled_blobs(40, 4, 8, seed=5, signal=4.0)
    small = SVMProbe().fit(x, y)  # 10 per class but 40 < 50 samples: one hard-margin SVM
    assert small.C_ == float("inf")
    x, y = labelled_blobs(200, 4, 8, seed=6, signal=2.5)
    searched = SVMProbe().fit(x[:100], y[:100])
    assert searched.C_ in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0, 10000.0, float("inf"))
    assert searched.score(x[100:], y[100:]) > 0.75
