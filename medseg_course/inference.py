"""Inference: batched prediction with optional flip test-time augmentation (TTA).

TTA predicts the image and its flipped copies, flips each prediction back and averages
them: errors that depend on orientation partly cancel, at the price of 2x or 4x the time.
"""

from __future__ import annotations

import numpy as np

from medseg_course.utils import check_array, check_positive

__all__ = ["predict", "TTA_FLIPS"]

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
        probs = np.asarray(model.predict(flipped, batch_size=batch_size, verbose=0))
        probs = np.flip(probs, axes) if axes else probs
        total = probs.astype(np.float64) if total is None else total + probs
    result = (total / len(variants)).astype(np.float32)
    return result[0] if single else result
