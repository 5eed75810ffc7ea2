"""A data set's fingerprint: what a recipe must fit, measured from the cases themselves.

``fingerprint`` reads the training and validation cases (never the test cases) and reports
what the planner (``planning``) needs: how many cases, their sizes, spacing, channels and
kind of picture, intensity statistics, the labels and how much of each image they cover,
and the geometry of the labelled structures: how many pieces, how large relative to the
image, how thick (twice the distance to the background along each structure's skeleton).

``resize_ceiling`` answers the question that decides between resizing and patches with a
measurement instead of a rule of thumb: shrink each reference mask into a square model
input of a given side, exactly as training prepares its targets, blow it back up as
prediction does, and score it against the original. That is the Dice a perfect model could
reach at that input size; thin structures fall first.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg_course.datasets import DataSetError
from medseg_course.preprocessing import fit_to_shape, restore_shape

__all__ = ["fingerprint", "resize_ceiling", "structure_geometry", "MAX_SLICES"]

#: Slices with foreground that the geometry and the resize ceiling look at (an even sample
#: over the cases, so a data set of any size is fingerprinted in seconds).
MAX_SLICES = 96
#: Slices ``resize_ceiling`` resamples (fewer: resampling large photographs is the slow part).
CEILING_SLICES = 32


def _sample_slices(cases, limit=MAX_SLICES):
    """(case index, slice index) of up to ``limit`` slices with foreground, spread evenly."""
    found = [(i, z) for i, case in enumerate(cases) for z in np.flatnonzero(case.masks.reshape(len(case.masks), -1).any(1))]
    if len(found) <= limit:
        return found
    picks = np.linspace(0, len(found) - 1, limit).round().astype(int)
    return [found[k] for k in picks]


def structure_geometry(mask):
    """Pieces, extents and thicknesses of the foreground of one 2D mask.

    Returns a dict: ``components`` (8-connected pieces), ``areas_px``, ``extents_px`` (the longer side of
    each piece's bounding box), ``thickness_px`` (each piece's thickest point: twice the
    largest distance to the background, minus one) and ``widths_px`` (the local width along
    the skeleton of all pieces: what a structure measures across, wherever it runs).
    """
    from skimage.morphology import skeletonize  # noqa: PLC0415

    foreground = np.asarray(mask) > 0
    labels, count = ndimage.label(foreground, structure=np.ones((3, 3)))
    if count == 0:
        return {"components": 0, "extents_px": [], "thickness_px": [], "widths_px": [], "areas_px": []}
    distance = ndimage.distance_transform_edt(foreground)
    boxes = ndimage.find_objects(labels)
    extents = [max(b[0].stop - b[0].start, b[1].stop - b[1].start) for b in boxes]
    thickness = 2 * ndimage.maximum(distance, labels, np.arange(1, count + 1)) - 1
    widths = 2 * distance[skeletonize(foreground)] - 1
    areas = np.bincount(labels.ravel())[1:]
    return {"components": int(count), "extents_px": [int(v) for v in extents], "areas_px": areas.tolist(),
            "thickness_px": [float(v) for v in thickness], "widths_px": widths.astype(float).tolist()}


def resize_ceiling(cases, size, picks=None):
    """The mean Dice a perfect model reaches when slices are resized into ``size x size``.

    Each sampled slice's labels are fitted into the input as training fits its targets
    (``fit_to_shape``, nearest neighbour), restored to the slice's own size as prediction
    restores probabilities (``restore_shape``, linear, one map per label, arg-max), and
    scored against the original labels: Dice per case and label over the case's sampled
    slices (as ``evaluate`` scores a case), averaged. 1.0 means resizing loses nothing.
    """
    picks = _sample_slices(cases, CEILING_SLICES) if picks is None else picks
    sums = {}
    for i, z in picks:
        truth = cases[i].masks[z]
        labels = [int(v) for v in np.unique(truth) if v > 0]
        small, info = fit_to_shape(truth, (size, size), is_mask=True)
        maps = np.stack([(small == label).astype(np.float32) for label in [0] + labels], axis=-1)
        back = restore_shape(maps, info)
        restored = np.asarray([0] + labels)[np.argmax(back.reshape(*truth.shape, -1), axis=-1)]
        for label in labels:
            a, b = truth == label, restored == label
            both, total = sums.get((i, label), (0, 0))
            sums[(i, label)] = (both + 2 * np.logical_and(a, b).sum(), total + a.sum() + b.sum())
    return float(np.mean([both / total for both, total in sums.values()])) if sums else 1.0


def _percentiles(values, qs):
    values = np.asarray(values, dtype=float)
    return {f"p{q:g}": (round(float(np.percentile(values, q)), 2) if values.size else None) for q in qs}


def _modality(cases, channels, raw):
    """A guess at the kind of picture, with the evidence."""
    formats = {getattr(c.image, "format", None) for c in cases}
    if channels == 3:
        return "colour photograph", "3 channels"
    low, high = raw.get("p0.5"), raw.get("p99.5")
    if formats & {"dicom-series", "dicom", "nifti"} and low is not None and low < -500:
        return "CT", f"intensities from {low:g} to {high:g}: Hounsfield units (air near -1000)"
    if formats & {"dicom-series", "nifti"} and any(c.slices.shape[0] > 1 for c in cases):
        return "MRI or other volumes", "volumes without Hounsfield units"
    if formats == {None}:
        return "built-in", "generated or template data"
    if channels != 1:
        return "multi-channel picture", f"{channels} channels"
    return "grey picture", "one channel, 2D (microscopy, X-ray, ultrasound, a slice)"


def fingerprint(cases, where=None):
    """The fingerprint of a data set's training and validation cases.

    Parameters
    ----------
    cases : list of samples.SliceCase
        With ``masks``; ``image`` (the file as read) gives raw intensities and the format.
    where : str or Path, optional
        The data set (a folder), named at the start of error messages.

    Returns
    -------
    dict
        JSON-ready: ``cases``, ``slices``, ``shape_px`` (median, min, max of slices x height
        x width), ``longest_side_px``, ``spacing_mm``, ``channels``, ``modality``,
        ``intensity`` (raw, over all pixels and over the foreground), ``labels``,
        ``foreground_fraction``, ``cases_without_foreground`` and ``structures``
        (pieces per slice, extent, thickness and width percentiles, in pixels).

    Raises
    ------
    DataSetError
        When the data cannot train anything: fewer than 2 cases, no foreground in any mask,
        or images with different channel counts (the message names an example of each).
    """
    try:
        return _fingerprint(cases)
    except DataSetError as err:
        raise DataSetError(f"{where}: {err}" if where is not None else str(err)) from None


def _fingerprint(cases):
    if len(cases) < 2:
        raise DataSetError(f"{len(cases)} case(s) for training and validation; a plan needs at least 2 "
                           "(one to learn from, one to choose the checkpoint). Add cases.")
    channels = {}
    for case in cases:
        channels.setdefault(int(case.slices.shape[-1]), case.name)
    if len(channels) > 1:
        (c1, n1), (c2, n2) = sorted(channels.items())[:2]
        raise DataSetError(f"images have different channel counts ({n1}: {c1}, {n2}: {c2}); convert them to one "
                           "kind (all grey or all colour) before training.")
    empty = [c.name for c in cases if not np.any(c.masks)]
    if len(empty) == len(cases):
        raise DataSetError(f"no mask has any foreground (all {len(cases)} are 0 everywhere, e.g. {empty[0]}); check "
                           "the masks' values, or --invert-masks if they mark the foreground with 0.")
    shapes = np.asarray([c.slices.shape[:3] for c in cases])
    raw_all, raw_fg = [], []
    rng = np.random.default_rng(0)
    for case in cases:
        pixels = case.image.to_slices() if case.image is not None else case.slices
        same_grid = pixels.shape[:3] == case.masks.shape  # a reoriented or resampled volume is not
        pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, pixels.shape[-1]).mean(axis=1)
        fg = pixels[case.masks.reshape(-1) > 0] if same_grid else pixels[:0]
        raw_all.append(rng.choice(pixels, min(2000, pixels.size), replace=False))
        if fg.size:
            raw_fg.append(rng.choice(fg, min(2000, fg.size), replace=False))
    raw_all, raw_fg = np.concatenate(raw_all), np.concatenate(raw_fg) if raw_fg else np.zeros(0)
    intensity = {"all": _percentiles(raw_all, (0.5, 50, 99.5)), "foreground": _percentiles(raw_fg, (0.5, 50, 99.5))}
    if raw_fg.size:
        intensity["foreground"].update(mean=round(float(raw_fg.mean()), 3), std=round(float(raw_fg.std()), 3))
    (channel_count,) = channels
    modality, evidence = _modality(cases, channel_count, intensity["all"])
    labels = sorted({int(v) for c in cases for v in np.unique(c.masks)})
    fractions = np.asarray([float(np.mean(c.masks > 0)) for c in cases])
    geometry = {"components": [], "extents_px": [], "thickness_px": [], "widths_px": [], "areas_px": []}
    picks = _sample_slices(cases)
    for i, z in picks:
        one = structure_geometry(cases[i].masks[z])
        geometry["components"].append(one["components"])
        for key in ("extents_px", "thickness_px", "widths_px", "areas_px"):
            geometry[key].extend(one[key])
    longest = float(np.median(shapes[:, 1:].max(axis=1)))
    spacings = [c.spacing_mm for c in cases if c.spacing_mm is not None]
    return {
        "cases": len(cases),
        "slices": int(shapes[:, 0].sum()),
        "shape_px": {"median": np.median(shapes, axis=0).tolist(), "min": shapes.min(axis=0).tolist(),
                     "max": shapes.max(axis=0).tolist()},
        "longest_side_px": longest,
        "spacing_mm": np.median(np.asarray(spacings), axis=0).round(4).tolist() if spacings else None,
        "channels": channel_count,
        "modality": modality, "modality_evidence": evidence,
        "intensity": intensity,
        "labels": labels,
        "foreground_fraction": {"mean": round(float(fractions.mean()), 4), "min": round(float(fractions.min()), 4),
                                "max": round(float(fractions.max()), 4)},
        "cases_without_foreground": len(empty),
        "structures": {
            "slices_measured": len(picks),
            "components_per_slice": _percentiles(geometry["components"], (50, 90)),
            "area_px": _percentiles(geometry["areas_px"], (5, 50)),
            "extent_px": _percentiles(geometry["extents_px"], (50, 90)),
            "extent_of_image": round(float(np.percentile(geometry["extents_px"], 90)) / longest, 3),
            "thickness_px": _percentiles(geometry["thickness_px"], (10, 50, 90)),
            "width_px": _percentiles(geometry["widths_px"], (10, 50, 90)),
        },
    }
