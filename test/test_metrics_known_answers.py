"""Segmentation IoU and COCO box mAP on hand-made cases whose answers are worked out by hand."""
import numpy as np
import pytest

from tst_ros.perception.metrics import DetectionMeter, SegmentationMeter, format_iou_table, group_miou


def test_iou_of_two_class_image_matches_hand_count():
    truth = np.array([[0, 0, 1, 1],
                      [0, 0, 1, 1]], np.uint8)
    pred = np.array([[0, 0, 0, 1],
                     [0, 0, 1, 1]], np.uint8)
    meter = SegmentationMeter(num_classes=3)
    meter.update(pred, truth)
    report = meter.report(["floor", "wall", "chair"])
    # class 0: TP 4, FP 1, FN 0 -> 4/5 ; class 1: TP 3, FP 0, FN 1 -> 3/4 ; class 2 absent -> excluded
    assert report["per_class"][0]["iou"] == pytest.approx(0.8)
    assert report["per_class"][1]["iou"] == pytest.approx(0.75)
    assert report["per_class"][2]["iou"] is None
    assert report["miou"] == pytest.approx((0.8 + 0.75) / 2)
    assert report["pixel_accuracy"] == pytest.approx(7 / 8)
    assert "mIoU" in format_iou_table(report)
    # things = {1, 2}: only class 1 is present; stuff = {0}; an empty group scores 0
    assert group_miou(report, [1, 2]) == pytest.approx(0.75) and group_miou(report, [0]) == pytest.approx(0.8)
    assert group_miou(report, [2]) == 0.0


def test_ignored_truth_pixels_do_not_count_and_unlabeled_predictions_are_misses():
    truth = np.array([[255, 255, 1, 1]], np.uint8)
    pred = np.array([[1, 1, 1, 255]], np.uint8)
    meter = SegmentationMeter(num_classes=2)
    meter.update(pred, truth)
    iou = meter.iou()
    assert np.isnan(iou[0])
    assert iou[1] == pytest.approx(0.5)        # TP 1, FN 1 (predicted unlabeled), ignored pixels not FP


def test_iou_accumulates_over_frames_and_predicted_only_class_scores_zero():
    meter = SegmentationMeter(num_classes=2)
    meter.update(np.zeros((2, 2)), np.zeros((2, 2)))
    meter.update(np.array([[1, 0], [0, 0]]), np.zeros((2, 2)))
    iou = meter.iou()
    assert iou[0] == pytest.approx(7 / 8)
    assert iou[1] == 0.0                        # predicted but never true: counts, with IoU 0
    assert meter.report()["miou"] == pytest.approx((7 / 8) / 2)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        SegmentationMeter(2).update(np.zeros((2, 2)), np.zeros((3, 2)))


CATS = {3: "chair", 5: "table"}


def test_perfect_detections_give_map_one():
    m = DetectionMeter(CATS)
    gt = np.array([[10, 10, 50, 60], [60, 20, 100, 90]], np.float32)
    m.update(gt, [3, 5], gt, [0.9, 0.8], [3, 5], 128, 128)
    r = m.compute()
    assert r["map"] == pytest.approx(1.0)
    assert r["map50"] == pytest.approx(1.0)
    assert r["per_class_ap"] == {"chair": pytest.approx(1.0), "table": pytest.approx(1.0)}


def test_half_recall_gives_coco_101_point_value():
    # two chairs, only one found: precision 1 up to recall 0.5 -> 51 of 101 recall points
    m = DetectionMeter(CATS)
    gt = np.array([[10, 10, 50, 60], [60, 20, 100, 90]], np.float32)
    m.update(gt, [3, 3], gt[:1], [0.9], [3], 128, 128)
    r = m.compute()
    assert r["map50"] == pytest.approx(51 / 101)
    assert r["map"] == pytest.approx(51 / 101)


def test_box_with_iou_072_counts_at_five_of_ten_thresholds():
    m = DetectionMeter(CATS)
    gt = np.array([[0, 0, 100, 100]], np.float32)
    det = np.array([[0, 0, 100, 72]], np.float32)      # IoU 0.72: a hit at .50 .55 .60 .65 .70
    m.update(gt, [5], det, [0.7], [5], 128, 128)
    r = m.compute()
    assert r["map50"] == pytest.approx(1.0)
    assert r["map"] == pytest.approx(0.5)


def test_wrong_class_and_no_detections_score_zero():
    m = DetectionMeter(CATS)
    gt = np.array([[0, 0, 40, 40]], np.float32)
    m.update(gt, [3], gt, [0.9], [5], 64, 64)
    assert m.compute()["map"] == 0.0
    empty = DetectionMeter(CATS)
    empty.update(gt, [3], np.zeros((0, 4)), [], [], 64, 64)
    assert empty.compute()["map50"] == 0.0


def test_higher_scored_false_positive_lowers_ap():
    # FP ranked first, then the TP: precision at recall 1 is 0.5 -> AP 0.5 at every threshold
    m = DetectionMeter(CATS)
    gt = np.array([[0, 0, 40, 40]], np.float32)
    det = np.array([[60, 60, 90, 90], [0, 0, 40, 40]], np.float32)
    m.update(gt, [3], det, [0.9, 0.5], [3, 3], 128, 128)
    assert m.compute()["map"] == pytest.approx(0.5)


def test_class_wise_nms_keeps_the_best_box_of_each_overlapping_group():
    from tst_ros.perception.runtime import batched_nms
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10], [2, 0, 12, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.6], np.float32)
    classes = np.array([0, 0, 0, 1, 0])
    # box 1 overlaps box 0 (IoU 0.68) and is dropped; box 3 is another class; box 4 has IoU 0.67 with box 0
    assert batched_nms(boxes, scores, classes, 0.5).tolist() == [3, 0, 2]
    assert batched_nms(boxes, scores, classes, 0.7).tolist() == [3, 0, 1, 2, 4]
    assert batched_nms(boxes[:0], scores[:0], classes[:0], 0.5).size == 0
