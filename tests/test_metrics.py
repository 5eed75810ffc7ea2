import numpy as np
import pytest

import medseg_course as mc

# A 3x3 pair with hand-checkable counts: TP = 2, FP = 1, FN = 0, TN = 6.
T = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
P = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize(
    "fn, expected",
    [
        (mc.metrics.dice, 0.8),  # 2*2 / (2*2 + 1 + 0)
        (mc.metrics.iou, 2 / 3),  # 2 / (2 + 1 + 0)
        (mc.metrics.precision, 2 / 3),  # 2 / (2 + 1)
        (mc.metrics.sensitivity, 1.0),  # 2 / (2 + 0)
        (mc.metrics.specificity, 6 / 7),  # 6 / (6 + 1)
        (mc.metrics.volume_difference, 0.5),  # (3 - 2) / 2
    ],
)
def test_hand_checked_values(fn, expected):
    assert fn(T, P) == pytest.approx(expected)


def test_confusion_counts():
    counts = mc.metrics.confusion_counts(T, P)
    assert {k: int(v[0]) for k, v in counts.items()} == {"tp": 2, "fp": 1, "fn": 0, "tn": 6}


def test_iou_dice_relation_and_symmetry():
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 5, 16, 16)) > 0.5
    d, j = mc.metrics.dice(a, b), mc.metrics.iou(a, b)
    np.testing.assert_allclose(j, d / (2 - d))
    np.testing.assert_allclose(mc.metrics.dice(a, b), mc.metrics.dice(b, a))


def test_batch_layouts_agree():
    batch_t = np.stack([T, T, np.zeros_like(T)])
    batch_p = np.stack([P, T, np.zeros_like(T)])
    expected = [0.8, 1.0, 1.0]  # the last pair is empty/empty -> empty_value 1.0
    np.testing.assert_allclose(mc.metrics.dice(batch_t, batch_p), expected)
    np.testing.assert_allclose(mc.metrics.dice(batch_t[..., None], batch_p[..., None]), expected)
    # per_image=False scores the whole array as one object: 2*4 / (2*4 + 1)
    assert mc.metrics.dice(batch_t, batch_p, per_image=False) == pytest.approx(8 / 9)


def test_empty_mask_rule():
    empty = np.zeros((3, 3))
    assert mc.metrics.dice(empty, empty) == 1.0
    assert np.isnan(mc.metrics.dice(empty, empty, empty_value=np.nan))
    assert mc.metrics.dice(empty, T) == 0.0  # false positives on an empty image
    assert mc.metrics.dice(T, empty) == 0.0
    assert np.isnan(mc.metrics.precision(T, empty))  # nothing predicted: undefined
    assert np.isnan(mc.metrics.sensitivity(empty, T))  # nothing to find: undefined
    assert mc.metrics.volume_difference(empty, empty) == 0.0
    assert np.isnan(mc.metrics.volume_difference(empty, T))


def test_bool_int_float_inputs_agree():
    assert mc.metrics.dice(T.astype(bool), P.astype(np.float32)) == pytest.approx(0.8)


@pytest.mark.parametrize(
    "truth, pred, message",
    [
        (T, P[:2], "same shape"),
        (T, P * 0.7, "binary mask"),
        (T, np.where(P, np.nan, 0.0), "NaN"),
        (np.zeros((2, 3, 3, 2)), np.zeros((2, 3, 3, 2)), "dice_per_class"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
    ],
)
def test_bad_input_raises_clear_error(truth, pred, message):
    with pytest.raises(ValueError, match=message):
        mc.metrics.dice(truth, pred)


def test_dice_per_class():
    truth = np.array([[0, 1, 1], [2, 2, 0]])
    pred = np.array([[0, 1, 0], [2, 2, 2]])
    # class 1: 2*1/(2+1) = 2/3; class 2: 2*2/(2+3) = 0.8
    np.testing.assert_allclose(mc.metrics.dice_per_class(truth, pred, 3), [[2 / 3, 0.8]])
    with pytest.raises(ValueError, match="outside"):
        mc.metrics.dice_per_class(truth, pred + 1, 3)


def test_evaluate_and_summarize():
    table = mc.metrics.evaluate(np.stack([T, T]), np.stack([P, np.zeros_like(P)]))
    assert list(table["dice"]) == pytest.approx([0.8, 0.0])
    assert list(table["true_pixels"]) == [2, 2]
    summary = mc.metrics.summarize(table)
    assert summary.loc["mean", "dice"] == pytest.approx(0.4)
    assert summary.loc["n_nan", "precision"] == 1  # empty prediction: precision undefined


def test_keras_dice_metric_matches_numpy(tf_setup):
    rng = np.random.default_rng(1)
    truth = (rng.random((4, 8, 8, 1)) > 0.5).astype("float32")
    probs = rng.random((4, 8, 8, 1)).astype("float32")
    metric = mc.metrics.DiceMetric()
    metric.update_state(truth, probs)
    expected = mc.metrics.dice(truth, probs >= 0.5).mean()
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    metric.reset_state()
    metric.update_state(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 1)))
    assert float(metric.result()) == 1.0  # empty/empty counts as 1


def test_surface_distances_single_pixels_anisotropic():
    truth = np.zeros((5, 5), np.uint8)
    pred = np.zeros((5, 5), np.uint8)
    truth[0, 0] = 1
    pred[0, 3] = 1  # 3 columns away; columns are 2 mm wide -> 6 mm
    spacing = (0.5, 2.0)
    assert mc.metrics.hausdorff_distance(truth, pred, spacing) == pytest.approx(6.0)
    assert mc.metrics.hausdorff_distance(truth, pred, spacing, 100) == pytest.approx(6.0)
    assert mc.metrics.average_surface_distance(truth, pred, spacing) == pytest.approx(6.0)
    assert mc.metrics.surface_dice(truth, pred, 5.9, spacing) == 0.0
    assert mc.metrics.surface_dice(truth, pred, 6.0, spacing) == 1.0
    pred_rows = np.zeros((5, 5), np.uint8)
    pred_rows[3, 0] = 1  # 3 rows away; rows are 0.5 mm -> 1.5 mm
    assert mc.metrics.hausdorff_distance(truth, pred_rows, spacing) == pytest.approx(1.5)
    assert mc.metrics.hausdorff_distance(truth, pred_rows) == pytest.approx(3.0)  # pixels


def test_surface_distances_square_with_extra_pixel():
    # truth: 3x3 square; prediction: the square plus one pixel sticking out on the right.
    truth = np.zeros((7, 7), np.uint8)
    truth[2:5, 2:5] = 1
    pred = truth.copy()
    pred[3, 5] = 1
    d_pred_to_truth, d_truth_to_pred = mc.metrics.surface_distances(truth, pred)
    # prediction boundary: the 8 square-boundary pixels + (3, 5), which is 1 px from (3, 4)
    # ((3,4) stays a boundary pixel of pred: its diagonal neighbour (2,5) is background)
    assert sorted(d_pred_to_truth) == [0.0] * 8 + [1.0]
    assert sorted(d_truth_to_pred) == [0.0] * 8
    assert mc.metrics.hausdorff_distance(truth, pred, percentile=100) == 1.0
    assert mc.metrics.average_surface_distance(truth, pred) == pytest.approx(1 / 17)
    assert mc.metrics.surface_dice(truth, pred, 0.5) == pytest.approx(16 / 17)
    # HD95 of the directed set [0]*8 + [1]: 95th percentile by linear interpolation = 0.6
    assert mc.metrics.hausdorff_distance(truth, pred) == pytest.approx(0.6)


def test_surface_distance_3d_anisotropic():
    truth = np.zeros((4, 6, 6), np.uint8)
    truth[1, 2:4, 2:4] = 1
    pred = np.zeros_like(truth)
    pred[3, 2:4, 2:4] = 1  # same square two slices up; slices 2.5 mm apart -> 5 mm
    assert mc.metrics.hausdorff_distance(truth, pred, (2.5, 0.7, 0.7), 100) == pytest.approx(5.0)


def test_surface_distance_empty_rules():
    empty = np.zeros((4, 4))
    one = np.zeros((4, 4))
    one[1, 1] = 1
    assert mc.metrics.hausdorff_distance(empty, empty) == 0.0
    assert mc.metrics.surface_dice(empty, empty, 1.0) == 1.0
    assert np.isnan(mc.metrics.hausdorff_distance(one, empty))
    assert np.isnan(mc.metrics.average_surface_distance(empty, one))
    with pytest.raises(ValueError, match="spacing_mm"):
        mc.metrics.hausdorff_distance(one, one, spacing_mm=(1.0,))
    with pytest.raises(ValueError, match="percentile"):
        mc.metrics.hausdorff_distance(one, one, percentile=0)


def test_evaluate_with_distances():
    table = mc.metrics.evaluate(np.stack([T, T]), np.stack([P, T]), spacing_mm=(1.0, 2.0), distances=True)
    assert list(table["hd_max"]) == pytest.approx([2.0, 0.0])  # one extra pixel one column (2 mm) away
    summary = mc.metrics.summarize(table)
    assert "hd95" in summary.columns


def test_evaluate_labels_multiclass_in_mm():
    truth = np.zeros((2, 4, 4), np.uint8)
    truth[0, :2, :2] = 1
    truth[1, 2:, 2:] = 2
    pred = truth.copy()
    pred[1, 2, 2] = 0  # one voxel of label 2 missed
    rows = mc.metrics.evaluate_labels(truth, pred, spacing_mm=(2.0, 0.5, 0.5))
    by_label = {r["label"]: r for r in rows}
    assert by_label[1]["dice"] == 1.0 and by_label[1]["hd_max"] == 0.0
    assert by_label[2]["dice"] == pytest.approx(2 * 3 / (4 + 3))
    assert by_label[2]["true_volume_ml"] == pytest.approx(4 * 0.5 / 1000)  # 4 voxels of 0.5 mm^3
    assert by_label[2]["distance_unit"] == "mm"
    assert mc.metrics.evaluate_labels(np.zeros((3, 3), int), np.zeros((3, 3), int))[0]["dice"] == 1.0
