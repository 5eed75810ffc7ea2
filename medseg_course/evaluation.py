"""Scoring whole cases: every metric per label of a 2D image or a 3D volume, and a summary.

``score_case`` scores one case's label maps (slices first, as ``MedicalImage.to_slices``
gives them) with the spacing in the same order; ``summarise`` turns the rows of many cases
into the mean, median, standard deviation and count of undefined values of each metric.
``medseg-course train`` (validation) and ``medseg-course evaluate`` write these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg_course.datasets import mask_to_labels
from medseg_course.inference import labels_from_probabilities, predict_slices, slice_probabilities
from medseg_course.io import read_image
from medseg_course.metrics import evaluate_labels, summarize
from medseg_course.viz import save_overlay

__all__ = ["SURFACE_TOLERANCE_MM", "MIN_POSTPROCESS_GAIN", "choose_postprocessing", "per_label", "score_case", "score_files", "summarise", "validate"]

#: The mean validation Dice a clean-up must add before a run adopts it (else none: a clean-up
#: that does not help on validation can still delete real parts elsewhere).
MIN_POSTPROCESS_GAIN = 0.005

#: Tolerance of the surface Dice the command line reports, in mm (pixels without a spacing).
SURFACE_TOLERANCE_MM = 1.0


def score_case(name, truth, pred, spacing_mm=None, num_classes=1):
    """Metric rows for one case.

    Parameters
    ----------
    name : str
        The case's name, the rows' ``case`` column.
    truth, pred : array of int, shape (Z, H, W)
        Label maps, slices first; Z = 1 for a 2D image, which is scored in 2D.
    spacing_mm : tuple of float, optional
        In the same order: ``(z, h, w)`` for a volume; ``(h, w)`` (or any tuple whose last
        two values are in-plane) for a 2D image.
    num_classes : int
        1 for a binary model (label 1 is scored), else every foreground label
        ``1 .. num_classes - 1``.

    Returns
    -------
    list of dict
        ``metrics.evaluate_labels`` rows with ``case`` first; undefined values are None.
    """
    volume = truth.shape[0] > 1
    spacing = None
    if spacing_mm is not None and (not volume or len(spacing_mm) >= 3):
        spacing = tuple(spacing_mm[-3:]) if volume else tuple(spacing_mm[-2:])
    t, p = (truth, pred) if volume else (truth[0], pred[0])
    labels = [1] if num_classes == 1 else list(range(1, num_classes))
    rows = evaluate_labels(t, p, labels, spacing, SURFACE_TOLERANCE_MM)
    return [{"case": name, **{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}}
            for row in rows]


def score_files(name, truth_path, pred_path, invert_truth=False):
    """``score_case`` rows for a predicted mask file against a reference mask file.

    Both are read with ``io.read_image`` and converted to labels (``mask_to_labels``; 0/255,
    0/1 and small label values are understood, ``invert_truth`` swaps a binary reference's
    foreground). They must share shape and, where both files carry one, position and
    orientation (affine); volumes are scored in 3D in millimetres where the files give a
    spacing. The number of classes is read from the largest label.
    """
    truth_path, pred_path = Path(truth_path), Path(pred_path)
    truth_image, pred_image = read_image(truth_path), read_image(pred_path)
    truth = mask_to_labels(truth_image.pixels, truth_path, invert=invert_truth, colour=truth_image.is_colour)
    pred = mask_to_labels(pred_image.pixels, pred_path, colour=pred_image.is_colour)
    if truth.shape != pred.shape:
        raise ValueError(f"{pred_path}: shape {pred.shape} differs from the reference {truth.shape} ({truth_path.name}).")
    if truth_image.affine is not None and pred_image.affine is not None and not np.allclose(
        truth_image.affine, pred_image.affine, atol=1e-3
    ):
        raise ValueError(
            f"{pred_path}: orientation/position (affine) differs from the reference {truth_path.name}; "
            "resample the prediction onto the reference grid."
        )
    spacing = truth_image.slice_spacing_mm or pred_image.slice_spacing_mm
    truth, pred = truth_image.to_slices(truth), truth_image.to_slices(pred)
    num_classes = 1 if max(truth.max(), pred.max()) <= 1 else int(max(truth.max(), pred.max())) + 1
    return score_case(name, truth, pred, spacing, num_classes)


def summarise(rows):
    """``metrics.summarize`` of ``score_case`` rows as one flat dict, the command line's
    ``_summary.json``: per numeric column ``<column>`` (mean), ``<column>_median``,
    ``<column>_std`` and ``<column>_n_undefined``; numbers rounded to 4 decimals, None where
    undefined (no values; the standard deviation of fewer than 2)."""
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame(rows)
    columns = [c for c in frame.columns if c not in ("case", "label", "distance_unit")]
    table = summarize(frame, columns)

    def number(value):
        return None if pd.isna(value) else round(float(value), 4)

    summary = {}
    for column in columns:
        summary[column] = number(table.at["mean", column])
        summary[f"{column}_median"] = number(table.at["median", column])
        summary[f"{column}_std"] = number(table.at["std", column])
        summary[f"{column}_n_undefined"] = int(table.at["n_nan", column])
    return summary


def per_label(rows):
    """Mean Dice (and its standard deviation) of each label over the ``score_case`` rows, with
    the number of cases: ``metrics.json``'s ``test.per_label``."""
    out = {}
    for label in sorted({row["label"] for row in rows}):
        mine = [row for row in rows if row["label"] == label]
        dice = [row["dice"] for row in mine if row["dice"] is not None]
        out[str(label)] = {"dice": round(float(np.mean(dice)), 4) if dice else None,
                           "dice_std": round(float(np.std(dice, ddof=1)), 4) if len(dice) > 1 else None,
                           "cases": len(mine)}
    return out


def validate(model, config, cases, overlay_dir=None, progress=None):
    """Score a trained model on ``samples.SliceCase`` cases, as ``medseg-course train`` does
    after training (``metrics.json``).

    Each case is predicted with ``inference.predict_slices`` and scored with ``score_case``
    in its own spacing; with ``overlay_dir``, the first four cases' fullest slices are drawn
    there. ``progress`` wraps the case list (e.g. a progress bar). Returns
    ``{"per_case": rows, "summary": summarise(rows)}``.
    """
    rows = []
    if overlay_dir is not None:
        Path(overlay_dir).mkdir(exist_ok=True)
    for index, case in enumerate(progress(cases) if progress else cases):
        pred = predict_slices(model, config, case.slices)
        rows.extend(score_case(case.name, case.masks, pred, case.spacing_mm, config["num_classes"]))
        if overlay_dir is not None and index < 4:
            middle = int(np.argmax(case.masks.reshape(len(case.masks), -1).sum(1)))
            save_overlay(case.slices[middle], case.masks[middle], pred[middle], Path(overlay_dir) / f"{case.name}.png",
                         case.name)
    return {"per_case": rows, "summary": summarise(rows)}


def _dice(truth, pred):
    total = truth.sum() + pred.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(truth, pred).sum() / total)


def choose_postprocessing(model, config, cases, min_size=None):
    """The clean-up of a binary model's masks that its validation cases support.

    Each case is predicted once (``slice_probabilities``); the candidates are none, filling
    holes, keeping the largest component, and (with ``min_size``) removing components
    smaller than ``min_size`` pixels. The best mean Dice over the cases wins if it beats none
    by ``MIN_POSTPROCESS_GAIN``; otherwise none. Only validation cases may be passed here:
    choosing on test cases would make the test score optimistic.

    Returns
    -------
    (dict, dict)
        The chosen ``postprocessing.postprocess`` options (``{}`` for none) and the mean
        validation Dice of every candidate by name.
    """
    candidates = {"none": {}, "fill_holes": {"fill": True}, "largest_component": {"largest": True}}
    if min_size:
        candidates[f"min_size_{int(min_size)}"] = {"min_size": int(min_size)}
    if config["num_classes"] != 1 or not cases:
        return {}, {}
    maps = [slice_probabilities(model, config, case.slices) for case in cases]
    scores = {}
    for name, options in candidates.items():
        scores[name] = round(float(np.mean([
            _dice(case.masks > 0, labels_from_probabilities(case_maps, config, options) > 0)
            for case, case_maps in zip(cases, maps)])), 4)
    best = max(scores, key=lambda name: (scores[name], name == "none"))
    if scores[best] < scores["none"] + MIN_POSTPROCESS_GAIN:
        best = "none"
    return candidates[best], scores
