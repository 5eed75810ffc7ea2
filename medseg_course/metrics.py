"""Overlap and volume metrics for binary and multi-class segmentations (NumPy).

All metrics come from the confusion counts of each image: TP (foreground in both), FP
(predicted only), FN (missed) and TN (background in both).

======================  ===========================  ===================================
metric                  formula                      0/0 case
======================  ===========================  ===================================
dice                    2TP / (2TP + FP + FN)        both masks empty -> ``empty_value``
iou (Jaccard)           TP / (TP + FP + FN)          both masks empty -> ``empty_value``
precision               TP / (TP + FP)               nothing predicted -> see below
sensitivity (recall)    TP / (TP + FN)               nothing to find -> see below
specificity             TN / (TN + FP)               all foreground -> see below
volume_difference       (|P| - |T|) / |T|            empty truth -> see below
======================  ===========================  ===================================

**Empty-mask rule.** When a ratio is 0/0 it is ``empty_value`` (default 1.0) if truth and
prediction are both empty (the model correctly found nothing), and NaN otherwise (the ratio
is undefined: precision of an empty prediction of a non-empty target, sensitivity of a
non-empty prediction of an empty target). Aggregates skip NaN (``numpy.nanmean``) and
report how many images were skipped. Volume difference of an empty truth is 0.0 for an
empty prediction, NaN otherwise.

Input layout: ``(H, W)`` is one image; ``(B, H, W)`` or ``(B, H, W, 1)`` a batch, scored
per image. Pass ``per_image=False`` to score the whole array as one object (a 3D volume).
Masks must hold only 0/1 (bool, int or float); threshold probabilities first.
"""

from __future__ import annotations

import numpy as np

from medseg_course.utils import check_array, check_binary_mask, check_positive, check_same_shape

__all__ = [
    "confusion_counts",
    "dice",
    "iou",
    "precision",
    "sensitivity",
    "specificity",
    "volume_difference",
    "dice_per_class",
    "evaluate",
    "summarize",
    "DiceMetric",
]

METRIC_NAMES = ("dice", "iou", "precision", "sensitivity", "specificity", "volume_difference")


def _flatten(mask, name, per_image):
    """Bool array (B, P), and whether the input was a single image."""
    mask = check_binary_mask(mask, name)
    if mask.ndim < 2 or mask.ndim > 4 or (mask.ndim == 4 and mask.shape[-1] != 1):
        raise ValueError(
            f"{name} must be (H, W), (B, H, W) or (B, H, W, 1). Received: {name}.shape="
            f"{mask.shape}. For multi-class labels use dice_per_class."
        )
    if not per_image:
        return mask.reshape(1, -1), True
    if mask.ndim == 2:
        return mask.reshape(1, -1), True
    return mask.reshape(mask.shape[0], -1), False


def confusion_counts(y_true, y_pred, per_image=True):
    """Per-image confusion counts.

    Parameters
    ----------
    y_true, y_pred : array, shape (H, W), (B, H, W) or (B, H, W, 1), values in {0, 1}
    per_image : bool
        If False, count over the whole array as one object.

    Returns
    -------
    dict of str to ndarray, shape (B,), int64
        Keys ``tp``, ``fp``, ``fn``, ``tn`` (B = 1 for a single image).

    Raises
    ------
    ValueError
        For shapes that differ, non-binary values, NaN or empty arrays.
    """
    check_same_shape(y_true, y_pred, "y_true", "y_pred")
    truth, _ = _flatten(y_true, "y_true", per_image)
    pred, _ = _flatten(y_pred, "y_pred", per_image)
    tp = np.count_nonzero(truth & pred, axis=1)
    fp = np.count_nonzero(~truth & pred, axis=1)
    fn = np.count_nonzero(truth & ~pred, axis=1)
    tn = truth.shape[1] - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(numerator, denominator, both_empty, empty_value):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    out[(denominator == 0) & both_empty] = empty_value
    return out


def _metric(name, y_true, y_pred, per_image=True, empty_value=1.0):
    check_same_shape(y_true, y_pred, "y_true", "y_pred")
    single = _flatten(y_true, "y_true", per_image)[1]
    c = confusion_counts(y_true, y_pred, per_image)
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    both_empty = (tp + fp + fn) == 0
    if name == "dice":
        value = _ratio(2 * tp, 2 * tp + fp + fn, both_empty, empty_value)
    elif name == "iou":
        value = _ratio(tp, tp + fp + fn, both_empty, empty_value)
    elif name == "precision":
        value = _ratio(tp, tp + fp, both_empty, empty_value)
    elif name == "sensitivity":
        value = _ratio(tp, tp + fn, both_empty, empty_value)
    elif name == "specificity":
        value = _ratio(tn, tn + fp, (tn + fp) == 0, empty_value)
    else:  # volume_difference
        value = _ratio((tp + fp) - (tp + fn), tp + fn, both_empty, 0.0)
    return float(value[0]) if single else value


def dice(y_true, y_pred, per_image=True, empty_value=1.0):
    """Dice similarity coefficient ``2|T & P| / (|T| + |P|)``.

    Parameters
    ----------
    y_true, y_pred : array, shape (H, W), (B, H, W) or (B, H, W, 1), values in {0, 1}
    per_image : bool
        Score each image of a batch (default) or the whole array as one object.
    empty_value : float
        Value when both masks are empty (see module docstring).

    Returns
    -------
    float for a single image/object, else ndarray of shape (B,), float64 in [0, 1]

    Examples
    --------
    >>> t = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    >>> p = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    >>> dice(t, p)
    0.8
    """
    return _metric("dice", y_true, y_pred, per_image, empty_value)


def iou(y_true, y_pred, per_image=True, empty_value=1.0):
    """Intersection over union (Jaccard) ``|T & P| / |T | P|``; ``iou = dice / (2 - dice)``.

    Parameters and returns as ``dice``.
    """
    return _metric("iou", y_true, y_pred, per_image, empty_value)


def precision(y_true, y_pred, per_image=True, empty_value=1.0):
    """Precision (positive predictive value) ``TP / (TP + FP)``. Parameters as ``dice``."""
    return _metric("precision", y_true, y_pred, per_image, empty_value)


def sensitivity(y_true, y_pred, per_image=True, empty_value=1.0):
    """Sensitivity (recall, true-positive rate) ``TP / (TP + FN)``. Parameters as ``dice``."""
    return _metric("sensitivity", y_true, y_pred, per_image, empty_value)


def specificity(y_true, y_pred, per_image=True, empty_value=1.0):
    """Specificity (true-negative rate) ``TN / (TN + FP)``. Parameters as ``dice``.

    Near 1 for almost any prediction when the background is large: report it with Dice.
    """
    return _metric("specificity", y_true, y_pred, per_image, empty_value)


def volume_difference(y_true, y_pred, per_image=True):
    """Signed relative volume difference ``(|P| - |T|) / |T|`` (0 is perfect, +0.1 = 10 % too big).

    Ignores where the volume is: a prediction of the right size in the wrong place scores 0.
    Empty truth: 0.0 if the prediction is empty too, NaN otherwise.
    """
    return _metric("volume_difference", y_true, y_pred, per_image)


def dice_per_class(y_true, y_pred, num_classes, include_background=False, empty_value=1.0):
    """Dice of each class of integer label maps.

    Parameters
    ----------
    y_true, y_pred : array of int, shape (H, W) or (B, H, W), labels in [0, num_classes)
    num_classes : int
        Number of classes including background (label 0).
    include_background : bool
        Whether to return class 0 too.
    empty_value : float
        Dice of a class absent from both truth and prediction of an image.

    Returns
    -------
    ndarray, shape (B, K), float64
        K = num_classes (or num_classes - 1 without background); B = 1 for a single image.
    """
    check_positive(num_classes, "num_classes", integer=True)
    check_same_shape(y_true, y_pred, "y_true", "y_pred")
    arrays = []
    for name, labels in (("y_true", y_true), ("y_pred", y_pred)):
        labels = check_array(labels, name, ndim=(2, 3), dtype_kind="biu")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"{name} holds labels outside [0, {num_classes}). Received range: "
                f"{labels.min()}..{labels.max()}. Check num_classes or the label map."
            )
        arrays.append(labels.reshape(1, *labels.shape) if labels.ndim == 2 else labels)
    truth, pred = arrays
    first = 0 if include_background else 1
    columns = [
        dice(truth == k, pred == k, per_image=True, empty_value=empty_value)
        for k in range(first, num_classes)
    ]
    return np.stack(columns, axis=1)


def evaluate(y_true, y_pred, empty_value=1.0):
    """All binary metrics per image, as a table.

    Parameters
    ----------
    y_true, y_pred : array, shape (H, W), (B, H, W) or (B, H, W, 1), values in {0, 1}
    empty_value : float
        See the module's empty-mask rule.

    Returns
    -------
    pandas.DataFrame
        One row per image, columns ``METRIC_NAMES`` plus ``true_pixels`` and
        ``pred_pixels``.
    """
    import pandas as pd  # noqa: PLC0415

    c = confusion_counts(y_true, y_pred)
    table = {
        name: np.atleast_1d(
            _metric(name, y_true, y_pred, True, empty_value)
            if name != "volume_difference"
            else volume_difference(y_true, y_pred)
        )
        for name in METRIC_NAMES
    }
    table["true_pixels"] = c["tp"] + c["fn"]
    table["pred_pixels"] = c["tp"] + c["fp"]
    frame = pd.DataFrame(table)
    frame.index.name = "image"
    return frame


def summarize(table):
    """Mean, standard deviation, median and NaN count of each column of ``evaluate``'s table.

    Returns
    -------
    pandas.DataFrame
        Rows ``mean``, ``std``, ``median``, ``n``, ``n_nan`` (images skipped as undefined).
    """
    import pandas as pd  # noqa: PLC0415

    numeric = table[[c for c in table.columns if c in METRIC_NAMES]]
    return pd.DataFrame(
        {
            "mean": numeric.mean(skipna=True),
            "std": numeric.std(skipna=True),
            "median": numeric.median(skipna=True),
            "n": numeric.count(),
            "n_nan": numeric.isna().sum(),
        }
    ).T


# --------------------------------------------------------------- Keras training metric

_DICE_METRIC_CLASS = None


def _build_dice_metric_class():
    import keras  # noqa: PLC0415  (keeps ``import medseg_course.metrics`` free of TensorFlow)
    from keras import ops  # noqa: PLC0415

    @keras.saving.register_keras_serializable(package="medseg_course")
    class DiceMetric(keras.metrics.Metric):
        """Mean per-image Dice of thresholded predictions, for ``model.compile(metrics=...)``.

        Binary models (C = 1): foreground is ``y_pred >= threshold``. Multi-class models
        (C >= 3): argmax, Dice per foreground class, averaged. Images where truth and
        prediction are both empty count as 1.0 (the module's empty-mask rule).
        Logged as ``dice`` (``val_dice`` on validation data).
        """

        def __init__(self, threshold=0.5, name="dice", **kwargs):
            super().__init__(name=name, **kwargs)
            self.threshold = threshold
            self.total = self.add_variable(shape=(), initializer="zeros", name="total")
            self.count = self.add_variable(shape=(), initializer="zeros", name="count")

        def update_state(self, y_true, y_pred, sample_weight=None):
            y_pred = ops.convert_to_tensor(y_pred, "float32")
            num_classes = y_pred.shape[-1]
            if num_classes == 1:
                pred = ops.cast(y_pred >= self.threshold, "float32")
                truth = ops.cast(ops.reshape(y_true, ops.shape(pred)), "float32")
            else:
                labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:3]), "int32")
                truth = ops.one_hot(labels, num_classes)[..., 1:]
                pred = ops.one_hot(ops.argmax(y_pred, axis=-1), num_classes)[..., 1:]
            inter = ops.sum(truth * pred, axis=(1, 2))
            sizes = ops.sum(truth, axis=(1, 2)) + ops.sum(pred, axis=(1, 2))
            per_class = ops.where(sizes > 0, 2 * inter / ops.maximum(sizes, 1.0), 1.0)
            per_image = ops.mean(per_class, axis=-1)
            self.total.assign_add(ops.sum(per_image))
            self.count.assign_add(ops.cast(ops.shape(per_image)[0], "float32"))

        def result(self):
            return self.total / ops.maximum(self.count, 1.0)

        def reset_state(self):
            self.total.assign(0.0)
            self.count.assign(0.0)

        def get_config(self):
            return {**super().get_config(), "threshold": self.threshold}

    return DiceMetric


def __getattr__(name):
    global _DICE_METRIC_CLASS
    if name == "DiceMetric":
        if _DICE_METRIC_CLASS is None:
            _DICE_METRIC_CLASS = _build_dice_metric_class()
        return _DICE_METRIC_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
