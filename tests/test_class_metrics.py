"""Class agreement (Hungarian accuracy, ARI, NMI) and rotation within classes score known cases right."""

from __future__ import annotations

import numpy as np
import pytest

from cryovae.analysis.metrics import class_agreement, rotation_within_classes
from cryovae.geometry import wrap_degrees

RNG = np.random.default_rng(3)


def test_permuted_labels_are_perfect():
    truth = RNG.integers(1, 5, 400)
    relabel = {1: 7, 2: 3, 3: 1, 4: 9}  # any numbers, any order
    pred = np.array([relabel[t] for t in truth])
    res = class_agreement(truth, pred)
    assert res.accuracy == 1.0 and res.ari == pytest.approx(1.0) and res.nmi == pytest.approx(1.0)
    assert res.matching == {7: 1, 3: 2, 1: 3, 9: 4}
    assert res.recall() == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert (np.count_nonzero(res.confusion, axis=1) == 1).all()


def test_known_confusion_gives_the_hand_computed_accuracy():
    # true 1: 10 particles, 8 predicted "b", 2 "a"; true 2: 6, 5 "a", 1 "b"; true 3: 4, all "c"
    truth = np.repeat([1, 1, 2, 2, 3], [8, 2, 5, 1, 4])
    pred = np.repeat([20, 10, 10, 20, 30], [8, 2, 5, 1, 4])
    res = class_agreement(truth, pred)
    assert res.accuracy == pytest.approx((8 + 5 + 4) / 20)
    assert res.matching == {20: 1, 10: 2, 30: 3}
    np.testing.assert_array_equal(res.confusion, [[2, 8, 0], [5, 1, 0], [0, 0, 4]])
    assert list(res.true_classes) == [1, 2, 3] and list(res.pred_classes) == [10, 20, 30]
    assert res.recall() == pytest.approx({1: 0.8, 2: 5 / 6, 3: 1.0})
    # the matching is the best one-to-one, not "each predicted class to its majority":
    # both predicted classes below hold a majority of true class 1, only one may take it
    res = class_agreement(np.repeat([1, 1, 2], [6, 5, 3]), np.repeat([1, 2, 2], [6, 5, 3]))
    assert res.matching == {1: 1, 2: 2} and res.accuracy == pytest.approx((6 + 3) / 14)
    table = res.confusion_table()
    assert list(table.index) == ["true 1", "true 2"] and table.loc["true 1", "predicted 2"] == 5


def test_more_or_fewer_predicted_classes_than_true():
    truth = np.repeat([1, 2, 3], 10)
    # a true class split in two: the smaller half is unmatched and counts as wrong
    split = np.repeat([1, 2, 3, 4], [10, 10, 7, 3])
    res = class_agreement(truth, split)
    assert res.confusion.shape == (3, 4) and len(res.matching) == 3 and 4 not in res.matching
    assert res.accuracy == pytest.approx(27 / 30)
    # two true classes merged: one of them has no predicted class
    merged = np.repeat([1, 2, 2], 10)
    res = class_agreement(truth, merged)
    assert res.confusion.shape == (3, 2) and res.accuracy == pytest.approx(20 / 30)
    assert sorted(res.recall().values()) == [0.0, 1.0, 1.0]
    assert 0 < res.ari < 1 and 0 < res.nmi < 1


def test_random_prediction_scores_near_chance():
    truth = RNG.integers(1, 5, 4000)
    res = class_agreement(truth, RNG.integers(1, 5, 4000))
    assert abs(res.ari) < 0.02 and res.nmi < 0.02
    assert res.accuracy < 0.3  # chance is 0.25 (plus what the best matching buys)


def test_to_dict_is_plain_json():
    import json

    d = class_agreement([1, 1, 2], [2, 2, 1]).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["matching"] == {"1": 2, "2": 1} and d["accuracy"] == 1.0


@pytest.mark.parametrize("truth,pred", [([1, 2], [1]), ([], []), ([1.5, 2], [1, 2]), ([1, np.nan], [1, 2])])
def test_bad_labels_raise(truth, pred):
    with pytest.raises(ValueError):
        class_agreement(np.array(truth), np.array(pred))


def test_rotation_within_classes_allows_one_offset_per_class():
    classes = np.repeat([1, 2, 3], 300)
    true = RNG.uniform(-180, 180, 900)
    offsets = {1: 10.0, 2: -100.0, 3: 170.0}
    pred = wrap_degrees(true + np.array([offsets[c] for c in classes]) + RNG.normal(0, 3, 900))
    res = rotation_within_classes(pred, true, classes)
    assert res["circular_correlation"] > 0.98 and res["median_error_deg"] < 4
    for c, off in offsets.items():
        assert abs(wrap_degrees(res["per_class"][str(c)]["offset_deg"] - off)) < 2
    # pooled over classes, the different offsets hide the good poses from one global correlation
    from cryovae.analysis.metrics import circular_correlation

    assert circular_correlation(np.radians(pred), np.radians(true)) < 0.6
    # unrelated angles score near zero
    assert abs(rotation_within_classes(RNG.uniform(-180, 180, 900), true, classes)["circular_correlation"]) < 0.15
