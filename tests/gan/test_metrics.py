"""FCN-score arithmetic on hand-built confusion matrices."""
import math

import pytest
import torch

from tralgo.gan.metrics import ConfusionAccumulator, confusion_matrix, fcn_score, fcn_scores


def test_scores_of_a_hand_built_matrix():
    # rows = ground truth, columns = prediction; class 2 never occurs and is never predicted
    hist = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    s = fcn_scores(hist)
    assert s["per_pixel_acc"] == pytest.approx(8 / 11)
    assert s["per_class_acc"] == pytest.approx((5 / 6 + 3 / 5) / 2)  # class 2 (0/0) left out
    assert s["class_iou"] == pytest.approx((5 / (6 + 7 - 5) + 3 / (5 + 4 - 3)) / 2)
    assert s["per_class_iou"][2] is None


def test_predicted_but_absent_class_counts_as_zero_iou():
    hist = torch.tensor([[2, 1], [0, 0]])  # class 1 never in the ground truth but predicted once
    s = fcn_scores(hist)
    assert s["per_class_acc"] == pytest.approx(2 / 3)
    assert s["class_iou"] == pytest.approx((2 / 3 + 0.0) / 2)


def test_confusion_matrix_counts_and_ignores_out_of_range_labels():
    gt = torch.tensor([[0, 0, 1], [2, 255, 1]])
    pred = torch.tensor([[0, 1, 1], [0, 2, 2]])
    hist = confusion_matrix(gt, pred, 3)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    for g, p in [(0, 0), (0, 1), (1, 1), (2, 0), (1, 2)]:  # the 255 pixel is ignored
        expected[g, p] += 1
    assert torch.equal(hist, expected)


def test_scores_come_from_one_matrix_over_the_whole_set():
    # Two images: the set's per-pixel accuracy weights pixels, not images.
    gt_a, pred_a = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)  # 4/4 right
    gt_b, pred_b = torch.ones(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long)  # 0/1 right
    acc = ConfusionAccumulator(2)
    acc.update(gt_a, pred_a)
    acc.update(gt_b, pred_b)
    assert acc.scores()["per_pixel_acc"] == pytest.approx(4 / 5)  # a mean of images would give 0.5


def test_fcn_score_runs_a_judge_and_resizes_its_logits():
    labels = torch.tensor([[[0, 1], [1, 1]]])

    def judge(photos):  # predicts class 1 everywhere, at half the label resolution
        logits = torch.zeros(photos.shape[0], 2, 1, 1)
        logits[:, 1] = 1.0
        return logits

    s = fcn_score(judge, [(torch.zeros(1, 3, 2, 2), labels)], 2)
    assert s["per_pixel_acc"] == pytest.approx(3 / 4) and s["pixels"] == 4
    assert s["per_class_acc"] == pytest.approx((0 + 1) / 2)
    assert s["class_iou"] == pytest.approx((0 + 3 / 4) / 2)


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2), torch.zeros(3), 2)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        ConfusionAccumulator(1)
    assert math.isnan(fcn_scores(torch.zeros(2, 2))["per_pixel_acc"])
