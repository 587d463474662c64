import numpy as np
import pytest

from dtp_deploy.metrics import ConfusionMatrix


def test_iou_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm = ConfusionMatrix(3)
    cm.update(truth, pred)
    # class 0: tp 1, fp 1 (a 2 predicted as 0), fn 1 -> 1/3; class 1: tp 3, fp 1 -> 3/4; class 2: 1/2
    np.testing.assert_allclose(cm.iou(), [1 / 3, 3 / 4, 1 / 2])
    assert cm.miou() == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert cm.accuracy() == pytest.approx(5 / 7)


def test_absent_class_is_ignored_and_shapes_checked():
    cm = ConfusionMatrix(4)
    cm.update(np.zeros((2, 2), int), np.zeros((2, 2), int))
    assert np.isnan(cm.iou()[1]) and cm.miou() == 1.0
    with pytest.raises(ValueError, match="differ in shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_miou_as_mmseg_iou_metric_by_hand():
    """Two images, areas summed over the set. Worked by hand:
    class 0: intersection 1 + 1, prediction 1 + 2, truth 2 + 1 -> 2 / (3 + 3 - 2) = 1/2
    class 1: 1 + 1, prediction 2 + 1, truth 1 + 2 -> 2 / 4 = 1/2
    class 2: 1, prediction 1, truth 2 -> 1 / 2
    class 3: 0 + 2, prediction 1 + 2, truth 0 + 2 -> 2 / 3
    class 4: in neither -> NaN, left out of the mean.
    The ignored pixels (255) predicted 0 and 3 count nowhere. A per-image mean would give
    (3/8 + 2/3) / 2 = 0.52 instead of 0.5417."""
    truth_a, pred_a = np.array([[0, 0, 1], [255, 2, 2]]), np.array([[0, 1, 1], [0, 2, 3]])
    truth_b, pred_b = np.array([[1, 1, 3], [3, 255, 0]]), np.array([[1, 0, 3], [3, 3, 0]])
    cm = ConfusionMatrix(5)
    cm.update(truth_a, pred_a)
    cm.update(truth_b, pred_b)
    np.testing.assert_allclose(cm.iou(), [1 / 2, 1 / 2, 1 / 2, 2 / 3, np.nan])
    assert cm.miou() == pytest.approx((1 / 2 + 1 / 2 + 1 / 2 + 2 / 3) / 4)
    assert cm.accuracy() == pytest.approx(7 / 10)  # aAcc: intersections / scored truth pixels


def test_truth_outside_the_classes_counts_only_its_prediction():
    """mmseg's histc drops a truth value >= K from the truth area, but the pixel's prediction
    still counts in the prediction area (a false positive); only 255 is skipped entirely."""
    cm = ConfusionMatrix(3)
    cm.update(np.array([[0, 7, 255]]), np.array([[0, 0, 1]]))
    # class 0: intersection 1, prediction 2 (one at the stray pixel), truth 1 -> 1/2; 1, 2: NaN
    np.testing.assert_allclose(cm.iou(), [1 / 2, np.nan, np.nan])
    assert cm.accuracy() == 1.0
    assert cm.stray_truth_pixels == 1  # reported, not silently dropped
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.update(np.zeros((1, 2), int), np.array([[0, 3]]))
