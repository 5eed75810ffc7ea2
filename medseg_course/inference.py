"""Inference: batched prediction, flip test-time augmentation (TTA), sliding windows.

TTA predicts the image and its flipped copies, flips each prediction back and averages
them: errors that depend on orientation partly cancel, at the price of 2x or 4x the time.

Sliding-window prediction covers an image larger than the model's input with overlapping
tiles and blends them with a Gaussian weight that trusts each tile's centre more than its
border, where the network saw less context (as nnU-Net and MONAI do).

``segment`` is the whole prediction pipeline of ``medseg-course predict`` for one image:
normalise, cut into slices, fit each to the model's input (or tile it), predict, restore
the slice's size, post-process, and return the label map on the image's own grid.
``load_run`` reads a model and the run configuration that says how to prepare its inputs.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from medseg_course.io import MedicalImage, read_image
from medseg_course.postprocessing import postprocess
from medseg_course.run_folder import CONFIG_NAME, MODEL_NAME
from medseg_course.preprocessing import fit_to_shape, normalise_for, restore_shape
from medseg_course.utils import check_array, check_positive
from medseg_course.volumes import gaussian_weights_nd, neighbour_slices, tile_starts

__all__ = ["predict", "predict_sliding_window", "gaussian_weights", "TTA_FLIPS", "load_run", "segment", "segment_volume",
           "predict_slices", "slice_probabilities", "labels_from_probabilities", "match_channels", "ModelLoadError", "MODEL_NAME", "CONFIG_NAME"]

#: Model formats that can run arbitrary code when loaded.
LEGACY_MODEL_SUFFIXES = (".h5", ".hdf5", ".pb")

#: Axes flipped by each TTA variant (axis 1 = rows/up-down, 2 = columns/left-right).
TTA_FLIPS = {"none": (), "lr": (2,), "ud": (1,), "lr_ud": (1, 2)}


def predict(model, images, batch_size=8, tta=False):
    """Probabilities for a batch of images.

    Parameters
    ----------
    model : keras.Model
        Maps ``(B, H, W, C)`` float32 to ``(B, H, W, K)`` probabilities.
    images : array, shape (N, H, W, C) or (H, W, C) for one image
        Preprocessed as for training.
    batch_size : int
        Images per forward pass (memory vs speed).
    tta : bool or sequence of str
        ``True`` averages the four flips ``("none", "lr", "ud", "lr_ud")``; a sequence picks
        some of them; ``False`` is a plain forward pass.

    Returns
    -------
    ndarray, float32, shape (N, H, W, K) (or (H, W, K) for one image), probabilities

    Raises
    ------
    ValueError
        For a bad rank, NaN, an input shape the model does not accept, or an unknown TTA
        variant.
    """
    single = np.ndim(images) == 3
    images = check_array(images, "images", ndim=(3, 4), dtype_kind="biuf").astype(np.float32)
    if single:
        images = images[None]
    check_positive(batch_size, "batch_size", integer=True)
    expected = tuple(model.input_shape[1:])
    if any(e is not None and e != g for e, g in zip(expected, images.shape[1:])):
        raise ValueError(
            f"images have shape (N, H, W, C) = {images.shape} but the model expects "
            f"(N, {', '.join(map(str, expected))}). Resize or pad the images "
            "(mc.preprocessing.resize_image), or match the channel count."
        )
    variants = tuple(TTA_FLIPS) if tta is True else ("none",) if tta is False else tuple(tta)
    unknown = [v for v in variants if v not in TTA_FLIPS]
    if unknown or not variants:
        raise ValueError(f"tta variants must be among {tuple(TTA_FLIPS)}. Received: {tta!r}")
    total = None
    for variant in variants:
        axes = TTA_FLIPS[variant]
        flipped = np.flip(images, axes) if axes else images
        probs = _predict_batches(model, flipped, batch_size)
        probs = np.flip(probs, axes) if axes else probs
        total = probs.astype(np.float64) if total is None else total + probs
    result = (total / len(variants)).astype(np.float32)
    return result[0] if single else result


def _predict_batches(model, images, batch_size):
    """``model.predict(images, batch_size=batch_size)``, the same values, with less overhead.

    ``model.predict`` builds a ``tf.data`` pipeline and a progress bar on every call, which
    cost a third of the time of predicting 64 images of 64x64 on 2 CPU cores; calling the
    model's compiled predict step batch by batch gives the same arrays bit for bit
    (``tests/test_inference.py``).
    """
    return np.concatenate(
        [np.asarray(model.predict_on_batch(images[start : start + batch_size]))
         for start in range(0, len(images), batch_size)]
    )


def gaussian_weights(patch_shape, sigma_scale=0.125):
    """Gaussian importance map for blending tiles: 1 at the centre, small at the border.

    Parameters
    ----------
    patch_shape : (int, int)
    sigma_scale : float
        Standard deviation as a fraction of the patch side (nnU-Net uses 1/8).

    Returns
    -------
    ndarray, shape patch_shape, float32, maximum 1, minimum > 0
    """
    return gaussian_weights_nd(patch_shape, sigma_scale)


def predict_sliding_window(model, image, patch_size=None, overlap=0.5, batch_size=8, tta=False):
    """Probabilities for an image of any size, from overlapping model-sized tiles.

    Parameters
    ----------
    model : keras.Model
        Fully convolutional, trained on patches of ``patch_size``.
    image : array, shape (H, W, C), preprocessed as for training
    patch_size : (int, int), optional
        Tile size; by default the model's input size (required if that is undefined).
    overlap : float in [0, 1)
        Fraction of a tile shared with its neighbour (0.5: stride of half a tile).
    batch_size : int
        Tiles per forward pass.
    tta : bool or sequence of str
        Flip test-time augmentation per tile (see ``predict``).

    Returns
    -------
    ndarray, shape (H, W, K), float32 probabilities

    Raises
    ------
    ValueError
        For a bad rank, NaN, or an ``overlap`` outside [0, 1).
    """
    image = check_array(image, "image", ndim=3, dtype_kind="biuf").astype(np.float32)
    if not (0 <= overlap < 1):
        raise ValueError(f"overlap must be in [0, 1). Received: overlap={overlap}")
    if patch_size is None:
        patch_size = tuple(model.input_shape[1:3])
        if None in patch_size:
            raise ValueError("The model accepts any size; pass patch_size=(height, width).")
    ph, pw = (int(v) for v in patch_size)
    height, width = image.shape[:2]
    pad_h, pad_w = max(0, ph - height), max(0, pw - width)
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
    stride_h, stride_w = max(1, int(ph * (1 - overlap))), max(1, int(pw * (1 - overlap)))
    corners = [
        (y, x)
        for y in tile_starts(padded.shape[0], ph, stride_h)
        for x in tile_starts(padded.shape[1], pw, stride_w)
    ]
    weights = gaussian_weights((ph, pw))[..., None]
    total = None
    norm = np.zeros(padded.shape[:2] + (1,), np.float32)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        tiles = np.stack([padded[y : y + ph, x : x + pw] for y, x in chunk])
        probs = predict(model, tiles, batch_size=batch_size, tta=tta)
        if total is None:
            total = np.zeros(padded.shape[:2] + (probs.shape[-1],), np.float32)
        for (y, x), tile_probs in zip(chunk, probs):
            total[y : y + ph, x : x + pw] += tile_probs * weights
            norm[y : y + ph, x : x + pw] += weights
    return (total / norm)[:height, :width]


# -------------------------------------------------------------------- the pipeline


class ModelLoadError(ValueError):
    """A model path that is not a loadable model with its run configuration; the message
    names the path and what to do."""


def load_run(model_path, allow_legacy=False):
    """A trained model and its run configuration, from ``medseg-course train``'s run folder.

    Parameters
    ----------
    model_path : str or Path
        ``RUN_DIR/model.keras``, or the run folder itself. ``config.json`` must lie beside the
        model: it says how inputs were prepared (``mode``, ``input_size``, ``channels``,
        ``num_classes``).
    allow_legacy : bool
        Also load ``.h5``/``.hdf5`` files and TensorFlow SavedModel folders, which can run
        arbitrary code when loaded: only for files from a source you trust.

    Returns
    -------
    (keras.Model, dict)

    Raises
    ------
    ModelLoadError
        When the path is missing, is not a Keras model (a truncated copy, another file
        renamed), carries Python code (a ``Lambda`` layer; Keras's safe mode refuses it), or
        has no readable ``config.json``.
    """
    path = Path(model_path)
    if path.is_dir() and not (path / MODEL_NAME).exists() and (path / "saved_model.pb").is_file():
        legacy = True  # a TensorFlow SavedModel folder
    else:
        if path.is_dir() and path.suffix.lower() != ".keras":
            path = path / MODEL_NAME
        legacy = path.suffix.lower() in LEGACY_MODEL_SUFFIXES
    if not path.exists():
        raise ModelLoadError(f"{path}: no such model file. Point --model to RUN_DIR/model.keras from medseg-course train.")
    if legacy and not allow_legacy:
        raise ModelLoadError(
            f"{path}: legacy model format ({path.suffix or 'SavedModel'}), which can run arbitrary code when loaded; "
            "re-save it as .keras, or pass --allow-legacy-model if you trust its source."
        )
    if not legacy and path.is_dir():
        raise ModelLoadError(f"{path}: a folder, not a .keras model file. Point --model to RUN_DIR/model.keras from "
                             "medseg-course train.")
    if not legacy and path.suffix.lower() != ".keras":
        raise ModelLoadError(f"{path}: not a .keras model file. Point --model to RUN_DIR/model.keras from medseg-course train.")
    if not legacy and not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{path}: not a Keras model file (a .keras file is a zip archive; this one is not, or it "
                             "is truncated). Re-train or re-copy it.")
    config = _read_config(path.parent if not path.is_dir() else path)
    import keras  # noqa: PLC0415

    import medseg_course.losses  # noqa: F401, PLC0415  (models saved by older code name the course's layers)
    import medseg_course.models  # noqa: F401, PLC0415

    try:
        # safe_mode: a .keras file whose config asks to deserialise Python code (a Lambda
        # layer's bytecode) is refused instead of run
        model = keras.models.load_model(path, compile=False, safe_mode=not legacy)
    except Exception as err:  # keras raises ValueError, OSError, zipfile errors, ...
        if "arbitrary code execution" in str(err):
            raise ModelLoadError(
                f"{path}: the model carries Python code (a Lambda layer), which Keras' safe_mode refuses to run; "
                "rebuild it without Lambda layers, or load it yourself with safe_mode=False only if you trust its source."
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ModelLoadError(f"{path}: not a loadable Keras model ({type(err).__name__}: {first[:200]}). "
                             "Re-train or re-copy it.") from None
    return model, config


def _read_config(folder):
    """The run configuration beside a model, its four preprocessing keys checked."""
    config_path = Path(folder) / CONFIG_NAME
    if not config_path.is_file():
        raise ModelLoadError(f"{config_path}: missing; the model's run folder must keep config.json (it says how to preprocess).")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        problem = None if isinstance(config, dict) else "not a JSON object"
        if problem is None and config.get("mode") not in ("resize", "patch", "volume"):
            problem = f"mode is {config.get('mode')!r}, not 'resize', 'patch' or 'volume'"
        volume = problem is None and config.get("mode") == "volume"
        if volume and config.get("dims") != 3:
            problem = f"mode is 'volume' but dims is {config.get('dims')!r}, not 3"
        if volume and not problem:
            shape = config.get("patch_shape")
            if not (isinstance(shape, list) and len(shape) == 3 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
                problem = f"patch_shape is {shape!r}, not three positive integers"
            spacing = config.get("spacing_mm")
            if not problem and spacing is not None and not (isinstance(spacing, list) and len(spacing) == 3 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in spacing)):
                problem = f"spacing_mm is {spacing!r}, not three positive numbers"
        for key in ("channels", "num_classes") if volume else ("input_size", "channels", "num_classes"):
            value = config.get(key) if problem is None else 1
            if problem is None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                problem = f"{key} is {value!r}, not a positive integer"
    except (OSError, ValueError) as err:
        problem = f"{type(err).__name__}: {err}"
    if problem:
        raise ModelLoadError(f"{config_path}: not a run configuration from medseg-course train ({problem}). "
                             "Restore it from the run folder, or re-train.")
    return config


def match_channels(images, channels):
    """``images`` (..., C) with the model's channel count: a grey image is repeated into
    ``channels``; any other mismatch is a ``ValueError`` saying how to convert."""
    if images.shape[-1] == channels:
        return images
    if images.shape[-1] == 1:
        return np.repeat(images, channels, axis=-1)
    raise ValueError(
        f"images have {images.shape[-1]} channels but the model takes {channels}; convert the images "
        "(e.g. colour to greyscale) to match the training data."
    )


def slice_probabilities(model, config, slices, tta=False):
    """Probability maps ``(H, W, K)`` of normalised slices ``(Z, H, W, C)``, each at its own size.

    ``config["mode"]`` says how the model was trained: ``"resize"`` fits each slice into
    the model's input (``fit_to_shape``) and maps the prediction back (``restore_shape``);
    ``"patch"`` tiles the slice at its own resolution (``predict_sliding_window``).
    """
    slices = match_channels(slices, config["channels"])
    size = config["input_size"]
    if config["mode"] == "patch":
        maps = [predict_sliding_window(model, image, (size, size), tta=tta) for image in slices]
    else:  # all slices fitted first, then predicted in batches (one model call per slice is slow)
        fitted = [fit_to_shape(image, (size, size)) for image in slices]
        batch = predict(model, np.stack([image for image, _ in fitted]), batch_size=32, tta=tta)
        maps = [restore_shape(probs, fit_info) for probs, (_, fit_info) in zip(batch, fitted)]
    return [probs[..., None] if probs.ndim == 2 else probs for probs in maps]


def labels_from_probabilities(maps, config, clean=None):
    """Label maps ``(Z, H, W)`` uint8 from ``slice_probabilities``: binary models
    (``num_classes`` 1) thresholded at 0.5 and cleaned by ``postprocessing.postprocess(**clean)``
    (by default the clean-up the run chose on its validation cases, ``config["postprocess"]``);
    multi-class models take the arg-max."""
    clean = config.get("postprocess") if clean is None else clean
    out = []
    for probs in maps:
        if config["num_classes"] == 1:
            labels = postprocess(probs, **(clean or {}))[..., 0]
        else:
            labels = np.argmax(probs, axis=-1)
        out.append(labels.astype(np.uint8))
    return np.stack(out)


def predict_slices(model, config, slices, tta=False, clean=None):
    """Label maps ``(Z, H, W)`` uint8 for normalised slices ``(Z, H, W, C)`` at their own size
    (``slice_probabilities``, then ``labels_from_probabilities``)."""
    return labels_from_probabilities(slice_probabilities(model, config, slices, tta), config, clean)


def segment(model, image, config, tta=None, clean=None):
    """Segment one image as ``medseg-course predict`` does: the label map on its own grid.

    Parameters
    ----------
    model : keras.Model
    image : MedicalImage, str or Path
        An image from ``io.read_image`` (PNG/JPEG/TIFF, DICOM, a DICOM series folder,
        NIfTI), or its path.
    config : dict
        The run configuration from ``load_run`` (``mode``, ``input_size``, ``channels``,
        ``num_classes``).
    tta : bool or None
        2D: True averages the four flips (``predict``). 3D: True adds the left-right
        mirror; None (the default) does what the run chose (``config["tta"]``).
    clean : dict, optional
        ``postprocessing.postprocess`` options for binary models, e.g.
        ``{"min_size": 50, "fill": True, "largest": False}``; by default the clean-up the
        run chose on its validation cases (``config["postprocess"]``, none if it chose none).

    Returns
    -------
    ndarray of uint8
        Labels with the image's spatial shape and axis order (``image.from_slices``): write
        it with ``io.write_mask(labels, path, like=image)`` and it keeps the image's
        geometry (affine).
    """
    if not isinstance(image, MedicalImage):
        image = read_image(image)
    try:
        if config.get("mode") == "volume":
            return segment_volume(model, image, config, tta=tta)
        tta = bool(tta)
        slices = normalise_for(image.to_slices(), config.get("normalisation_scheme"))
        if config.get("context"):  # 2.5D: neighbouring slices as channels, as in training
            slices = neighbour_slices(slices, config["context"])
        labels = predict_slices(model, config, slices, tta=tta, clean=clean)
    except ValueError as err:
        if image.path is None:
            raise
        raise ValueError(f"{image.path}: {err}") from None
    return image.from_slices(labels)


def segment_volume(model, image, config, tta=None):
    """A 3D model's label map for a volume, on the volume's own grid.

    The volume is reoriented (and resampled to ``config["spacing_mm"]`` where given) by
    ``geometry.prepare_volume``, normalised by ``volumes.normalise_volume``, predicted by
    sliding window (``volumes.predict_volume`` over ``config["patch_shape"]``; ``tta=True``
    adds the left-right mirror, None follows ``config["tta"]``), put back on the
    image's grid with ``geometry.restore_probabilities``, and labelled by arg-max (threshold
    0.5 for binary models); ``config["largest_structure"]`` keeps only the largest
    connected piece of the foreground (``postprocessing.keep_largest_structure``).
    """
    from medseg_course import geometry, volumes  # noqa: PLC0415
    from medseg_course.postprocessing import keep_largest_structure  # noqa: PLC0415

    if not geometry.is_volume(image):
        raise ValueError(
            f"this model is 3D (config dims 3) and needs a volume (NIfTI or a DICOM series); got a {image.format} "
            f"image of shape {np.shape(image.pixels)}. Use a 2D model for 2D images."
        )
    pixels, grid = geometry.prepare_volume(image, config.get("spacing_mm"))
    pixels = match_channels(volumes.normalise_volume(pixels), config["channels"])
    flip = bool(config.get("tta")) if tta is None else bool(tta)
    probs = volumes.predict_volume(model, pixels, tuple(config["patch_shape"]), flip=flip)
    probs = geometry.restore_probabilities(probs, grid)
    labels = (probs[..., 0] >= 0.5).astype(np.uint8) if config["num_classes"] == 1 else \
        np.argmax(probs, axis=-1).astype(np.uint8)
    return keep_largest_structure(labels) if config.get("largest_structure") else labels
