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
