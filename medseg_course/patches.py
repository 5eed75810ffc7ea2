"""Patch sampling: train at native resolution on crops instead of resizing whole images."""

from __future__ import annotations

import numpy as np

from medseg_course.utils import check_array, check_positive

__all__ = ["sample_patches"]


def sample_patches(images, masks, patch_size, patches_per_image=16, foreground_fraction=0.5, seed=0):
    """Random patches at native resolution, centred on foreground with a given probability.

    For large images with thin or small targets (vessels, small lesions), resizing the whole
    image to the model's input erases the target; training on native-resolution patches
    keeps it. A patch is centred on a random foreground pixel with probability
    ``foreground_fraction`` (MONAI's ``RandCropByPosNegLabel``, nnU-Net's foreground
    oversampling) and anywhere otherwise, so rare structures are seen often enough and the
    network still learns what background looks like. Predict with
    ``inference.predict_sliding_window``.

    Parameters
    ----------
    images : sequence of arrays (H_i, W_i, C), sizes may differ
    masks : sequence of arrays (H_i, W_i) or (H_i, W_i, 1), labels
    patch_size : (int, int)
    patches_per_image : int
    foreground_fraction : float in [0, 1]
    seed : int

    Returns
    -------
    (ndarray (N, ph, pw, C) float32, ndarray (N, ph, pw) uint8)
        Images smaller than a patch are zero-padded.
    """
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(
            f"images and masks must be non-empty sequences of equal length. Received: {len(images)} images, "
            f"{len(masks)} masks"
        )
    ph, pw = (int(v) for v in patch_size)
    check_positive(patches_per_image, "patches_per_image", integer=True)
    if not 0 <= foreground_fraction <= 1:
        raise ValueError(f"foreground_fraction must be in [0, 1]. Received: {foreground_fraction}")
    rng = np.random.default_rng(seed)
    out_images, out_masks = [], []
    for index, (image, mask) in enumerate(zip(images, masks)):
        image = check_array(image, f"images[{index}]", ndim=3, dtype_kind="biuf").astype(np.float32)
        mask = np.asarray(mask)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.shape != image.shape[:2]:
            raise ValueError(f"masks[{index}] shape {mask.shape} differs from images[{index}] {image.shape[:2]}")
        pad = ((0, max(0, ph - image.shape[0])), (0, max(0, pw - image.shape[1])))
        image = np.pad(image, pad + ((0, 0),))
        mask = np.pad(mask, pad)
        foreground = np.argwhere(mask > 0)
        for _ in range(patches_per_image):
            if foreground.size and rng.random() < foreground_fraction:
                cy, cx = foreground[rng.integers(len(foreground))]
            else:
                cy, cx = rng.integers(image.shape[0]), rng.integers(image.shape[1])
            top = int(np.clip(cy - ph // 2, 0, image.shape[0] - ph))
            left = int(np.clip(cx - pw // 2, 0, image.shape[1] - pw))
            out_images.append(image[top : top + ph, left : left + pw])
            out_masks.append(mask[top : top + ph, left : left + pw])
    return np.stack(out_images), np.stack(out_masks).astype(np.uint8)
