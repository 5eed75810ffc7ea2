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

**Surface distances** (``hausdorff_distance``, ``average_surface_distance``,
``surface_dice``) compare the boundaries of the two masks, in millimetres when
``spacing_mm`` is given (one value per axis, so anisotropic voxels are measured correctly)
and in pixels otherwise. Boundary pixels are foreground pixels with a background neighbour
(full connectivity); distances run between their centres. Both masks empty: distances 0.0
and surface Dice 1.0; exactly one empty: NaN (undefined: there is no boundary to measure
to).

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
    "surface_distances",
    "hausdorff_distance",
    "average_surface_distance",
    "surface_dice",
    "evaluate",
    "evaluate_labels",
    "summarize",
    "DiceMetric",
]

METRIC_NAMES = ("dice", "iou", "precision", "sensitivity", "specificity", "volume_difference")
DISTANCE_NAMES = ("hd95", "hd_max", "assd", "surface_dice")


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
    return _counts(y_true, y_pred, per_image)[0]


def _counts(y_true, y_pred, per_image):
    """Confusion counts, and whether the input was a single image (validates once)."""
    check_same_shape(y_true, y_pred, "y_true", "y_pred")
    truth, single = _flatten(y_true, "y_true", per_image)
    pred, _ = _flatten(y_pred, "y_pred", per_image)
    tp = np.count_nonzero(truth & pred, axis=1)
    fp = np.count_nonzero(~truth & pred, axis=1)
    fn = np.count_nonzero(truth & ~pred, axis=1)
    tn = truth.shape[1] - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}, single


def _ratio(numerator, denominator, both_empty, empty_value):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    out[(denominator == 0) & both_empty] = empty_value
    return out


def _from_counts(name, c, empty_value=1.0):
    """One metric, shape (B,), from confusion counts (the module docstring's 0/0 rules)."""
    tp, fp, fn, tn = c["tp"], c["fp"], c["fn"], c["tn"]
    both_empty = (tp + fp + fn) == 0
    if name == "dice":
        return _ratio(2 * tp, 2 * tp + fp + fn, both_empty, empty_value)
    if name == "iou":
        return _ratio(tp, tp + fp + fn, both_empty, empty_value)
    if name == "precision":
        return _ratio(tp, tp + fp, both_empty, empty_value)
    if name == "sensitivity":
        return _ratio(tp, tp + fn, both_empty, empty_value)
    if name == "specificity":
        return _ratio(tn, tn + fp, (tn + fp) == 0, empty_value)
    return _ratio((tp + fp) - (tp + fn), tp + fn, both_empty, 0.0)  # volume_difference


def _metric(name, y_true, y_pred, per_image=True, empty_value=1.0):
    counts, single = _counts(y_true, y_pred, per_image)
    value = _from_counts(name, counts, empty_value)
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


def _boundary(mask):
    from scipy import ndimage  # noqa: PLC0415

    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def surface_distances(y_true, y_pred, spacing_mm=None):
    """Distances from each boundary pixel of one mask to the other mask's boundary.

    Parameters
    ----------
    y_true, y_pred : array, 2D (H, W) or 3D (D, H, W), values in {0, 1}
        One image or one volume (not a batch).
    spacing_mm : sequence of float, optional
        Size of a pixel along each axis in mm; pixel units if omitted.

    Returns
    -------
    (ndarray, ndarray) or None
        Distances from the prediction's boundary to the truth's, and from the truth's to
        the prediction's, in mm (or pixels). ``None`` if either mask is empty.
    """
    from scipy import ndimage  # noqa: PLC0415

    check_same_shape(y_true, y_pred, "y_true", "y_pred")
    truth = check_binary_mask(y_true, "y_true")
    pred = check_binary_mask(y_pred, "y_pred")
    if truth.ndim not in (2, 3):
        raise ValueError(
            f"surface distances take one 2D image or 3D volume. Received: y_true.shape={truth.shape}; "
            "loop over a batch."
        )
    if spacing_mm is None:
        spacing = (1.0,) * truth.ndim
    else:
        spacing = tuple(float(v) for v in np.atleast_1d(spacing_mm))
        if len(spacing) != truth.ndim or min(spacing) <= 0:
            raise ValueError(
                f"spacing_mm needs one positive value per axis ({truth.ndim}). Received: spacing_mm={spacing_mm}"
            )
    if not truth.any() or not pred.any():
        return None
    edge_truth, edge_pred = _boundary(truth), _boundary(pred)
    to_truth = ndimage.distance_transform_edt(~edge_truth, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~edge_pred, sampling=spacing)
    return to_truth[edge_pred], to_pred[edge_truth]


def _empty_rule(y_true, y_pred, both_empty_value):
    truth_any = bool(np.any(np.asarray(y_true)))
    pred_any = bool(np.any(np.asarray(y_pred)))
    return both_empty_value if not truth_any and not pred_any else np.nan


def hausdorff_distance(y_true, y_pred, spacing_mm=None, percentile=95):
    """Hausdorff distance between mask boundaries (HD95 by default; ``percentile=100`` is the max).

    The larger of the two directed distances' ``percentile``-th percentiles (as MONAI
    computes it): HD95 ignores the worst 5 % of boundary points, so one stray pixel does not
    dominate, while the maximum reports exactly that worst point.

    Parameters
    ----------
    y_true, y_pred : array, 2D or 3D, values in {0, 1}
    spacing_mm : sequence of float, optional
    percentile : float in (0, 100]

    Returns
    -------
    float
        In mm (or pixels). 0.0 if both masks are empty, NaN if exactly one is.
    """
    if not (0 < percentile <= 100):
        raise ValueError(f"percentile must be in (0, 100]. Received: percentile={percentile}")
    distances = surface_distances(y_true, y_pred, spacing_mm)
    if distances is None:
        return _empty_rule(y_true, y_pred, 0.0)
    return _hausdorff(distances, percentile)


def _hausdorff(distances, percentile):
    return float(max(np.percentile(d, percentile) for d in distances))


def _assd(distances):
    return float(np.concatenate(distances).mean())


def _surface_dice(distances, tolerance_mm):
    within = sum(int(np.count_nonzero(d <= tolerance_mm + 1e-9)) for d in distances)
    return within / sum(d.size for d in distances)


def _check_tolerance(tolerance_mm):
    if not tolerance_mm >= 0:
        raise ValueError(f"tolerance_mm must be >= 0. Received: tolerance_mm={tolerance_mm}")


def _distance_metrics(y_true, y_pred, spacing_mm, tolerance_mm):
    """``hd95``, ``hd_max``, ``assd`` and ``surface_dice`` from one computation of the surface distances."""
    distances = surface_distances(y_true, y_pred, spacing_mm)
    if distances is None:
        one_empty = _empty_rule(y_true, y_pred, 0.0)
        return {"hd95": one_empty, "hd_max": one_empty, "assd": one_empty,
                "surface_dice": _empty_rule(y_true, y_pred, 1.0)}
    return {"hd95": _hausdorff(distances, 95), "hd_max": _hausdorff(distances, 100),
            "assd": _assd(distances), "surface_dice": _surface_dice(distances, tolerance_mm)}


def average_surface_distance(y_true, y_pred, spacing_mm=None):
    """Average symmetric surface distance (ASSD): mean over both boundaries' distances.

    Returns
    -------
    float
        In mm (or pixels). 0.0 if both masks are empty, NaN if exactly one is.
    """
    distances = surface_distances(y_true, y_pred, spacing_mm)
    if distances is None:
        return _empty_rule(y_true, y_pred, 0.0)
    return _assd(distances)


def surface_dice(y_true, y_pred, tolerance_mm, spacing_mm=None):
    """Normalised surface Dice: share of boundary points within ``tolerance_mm`` of the other boundary.

    ``(|{p in dP: d(p, dT) <= tau}| + |{t in dT: d(t, dP) <= tau}|) / (|dP| + |dT|)``
    (Nikolov et al., 2021). It asks whether a contour would need correcting, given a
    clinically acceptable tolerance tau.

    Returns
    -------
    float in [0, 1]
        1.0 if both masks are empty, NaN if exactly one is.
    """
    _check_tolerance(tolerance_mm)
    distances = surface_distances(y_true, y_pred, spacing_mm)
    if distances is None:
        return _empty_rule(y_true, y_pred, 1.0)
    return _surface_dice(distances, tolerance_mm)


def evaluate(y_true, y_pred, empty_value=1.0, spacing_mm=None, distances=False, tolerance_mm=1.0):
    """All binary metrics per image, as a table.

    Parameters
    ----------
    y_true, y_pred : array, shape (H, W), (B, H, W) or (B, H, W, 1), values in {0, 1}
    empty_value : float
        See the module's empty-mask rule.
    spacing_mm : sequence of float, optional
        Pixel size (rows, columns) for the distance metrics.
    distances : bool
        Add ``hd95``, ``hd_max``, ``assd`` and ``surface_dice`` (at ``tolerance_mm``).
    tolerance_mm : float
        Tolerance of the surface Dice.

    Returns
    -------
    pandas.DataFrame
        One row per image, columns ``METRIC_NAMES`` (plus the distance metrics) and
        ``true_pixels``, ``pred_pixels``.
    """
    import pandas as pd  # noqa: PLC0415

    c = confusion_counts(y_true, y_pred)
    table = {name: _from_counts(name, c, empty_value) for name in METRIC_NAMES}
    table["true_pixels"] = c["tp"] + c["fn"]
    table["pred_pixels"] = c["tp"] + c["fp"]
    if distances:
        _check_tolerance(tolerance_mm)
        truth = np.asarray(y_true)
        pred = np.asarray(y_pred)
        if truth.ndim == 2:
            truth, pred = truth[None], pred[None]
        if truth.ndim == 4:
            truth, pred = truth[..., 0], pred[..., 0]
        rows = [_distance_metrics(t, p, spacing_mm, tolerance_mm) for t, p in zip(truth, pred)]
        table.update({name: [row[name] for row in rows] for name in rows[0]})
    frame = pd.DataFrame(table)
    frame.index.name = "image"
    return frame


def evaluate_labels(y_true, y_pred, labels=None, spacing_mm=None, tolerance_mm=1.0):
    """Every metric for each label of one case (a 2D image or a 3D volume of label maps).

    Parameters
    ----------
    y_true, y_pred : array of int, shape (H, W) or (D, H, W), the same shape
        Label maps (0 background) of one case; a 3D array is scored as one volume.
    labels : sequence of int, optional
        Labels to score; by default every non-zero label in either map (1 for binary).
    spacing_mm : sequence of float, optional
        Size of a pixel/voxel along each axis; distances in mm and sizes in mm^2 (2D) or
        mL (3D) when given, pixels otherwise.
    tolerance_mm : float
        Tolerance of the surface Dice.

    Returns
    -------
    list of dict
        One row per label: ``label``, ``dice``, ``iou``, ``precision``, ``sensitivity``,
        ``specificity``, ``volume_difference``, ``hd95``, ``hd_max``, ``assd``,
        ``surface_dice``, ``distance_unit`` and, with a spacing, ``true_area_mm2`` /
        ``pred_area_mm2`` (2D) or ``true_volume_ml`` / ``pred_volume_ml`` (3D). Undefined
        values (see the empty-mask rules) are NaN.
    """
    check_same_shape(y_true, y_pred, "y_true", "y_pred")
    truth = check_array(y_true, "y_true", ndim=(2, 3), dtype_kind="biu")
    pred = check_array(y_pred, "y_pred", ndim=(2, 3), dtype_kind="biu")
    _check_tolerance(tolerance_mm)
    if labels is None:
        labels = sorted(set(np.unique(truth).tolist()) | set(np.unique(pred).tolist()) - {0}) or [1]
    rows = []
    for label in labels:
        t, p = truth == label, pred == label
        counts, _ = _counts(t, p, per_image=False)
        row = {"label": int(label), **{name: float(_from_counts(name, counts)[0]) for name in METRIC_NAMES}}
        row.update(_distance_metrics(t, p, spacing_mm, tolerance_mm))
        row["distance_unit"] = "mm" if spacing_mm is not None else "pixel"
        if spacing_mm is not None:
            size = float(np.prod(spacing_mm))  # mm^2 per pixel or mm^3 per voxel
            if truth.ndim == 3:
                row["true_volume_ml"] = float(t.sum()) * size / 1000.0
                row["pred_volume_ml"] = float(p.sum()) * size / 1000.0
            else:
                row["true_area_mm2"] = float(t.sum()) * size
                row["pred_area_mm2"] = float(p.sum()) * size
        rows.append(row)
    return rows


def summarize(table, columns=None):
    """Mean, standard deviation, median and NaN count of each metric column of a table.

    Parameters
    ----------
    table : pandas.DataFrame
        ``evaluate``'s table, or ``evaluate_labels`` rows in a frame.
    columns : sequence of str, optional
        Columns to summarise; by default those of ``METRIC_NAMES`` and ``DISTANCE_NAMES``
        present. Values that are not numbers (e.g. None) count as NaN.

    Returns
    -------
    pandas.DataFrame
        Rows ``mean``, ``std`` (NaN below 2 values), ``median``, ``n``, ``n_nan`` (images
        skipped as undefined).
    """
    import pandas as pd  # noqa: PLC0415

    if columns is None:
        columns = [c for c in table.columns if c in METRIC_NAMES + DISTANCE_NAMES]
    numeric = table[list(columns)].apply(pd.to_numeric, errors="coerce")
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
        """Mean per-image (or per-volume) Dice of thresholded predictions, for
        ``model.compile(metrics=...)``.

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
                labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
                truth = ops.one_hot(labels, num_classes)[..., 1:]
                pred = ops.one_hot(ops.argmax(y_pred, axis=-1), num_classes)[..., 1:]
            axes = tuple(range(1, len(y_pred.shape) - 1))  # pixels, or voxels of a volume
            inter = ops.sum(truth * pred, axis=axes)
            sizes = ops.sum(truth, axis=axes) + ops.sum(pred, axis=axes)
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
