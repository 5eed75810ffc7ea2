"""3D segmentation: volumes normalised one by one, patches with foreground, anatomical
augmentation, and sliding-window prediction with Gaussian blending.

Arrays are slices first, ``(Z, H, W, C)`` for images and ``(Z, H, W)`` for label maps, on
the grid ``geometry.prepare_volume`` gives (canonical orientation: axis 0 inferior to
superior, axis 1 left to right, axis 2 posterior to anterior).

Augmentation respects anatomy: the only flip is left-right (axis 1 of a volume), which
turns a left hippocampus into a right one; flipping the anterior-posterior or
inferior-superior axis would put the hippocampus head (label 1) where the tail belongs.
"""

from __future__ import annotations

import numpy as np

from medseg_course.utils import check_array, check_positive

__all__ = ["LEFT_RIGHT_AXIS", "normalise_volume", "pad_to", "crop_to", "sample_patches_3d", "augment_volume",
           "predict_volume", "gaussian_weights_nd", "tile_starts", "neighbour_slices"]

#: Axis of a prepared volume ``(Z, H, W)`` that runs left to right.
LEFT_RIGHT_AXIS = 1


def normalise_volume(pixels, lower=0.5, upper=99.5):
    """Per-volume z-score after clipping to the volume's own percentiles.

    MRI intensities have no physical unit: two scanners (or two exports) give the same
    tissue values that differ by orders of magnitude, so each volume is put on its own
    scale: clipped to its ``lower``-``upper`` percentiles (a few hot voxels no longer set
    the range), then shifted to mean 0 and scaled to standard deviation 1, per channel.

    Parameters
    ----------
    pixels : array, shape (Z, H, W) or (Z, H, W, C)

    Returns
    -------
    ndarray, float32, the same shape
    """
    arr = check_array(pixels, "pixels", ndim=(3, 4), dtype_kind="biuf").astype(np.float32)
    single = arr.ndim == 3
    if single:
        arr = arr[..., None]
    out = np.empty_like(arr)
    for c in range(arr.shape[-1]):
        channel = arr[..., c]
        low, high = np.percentile(channel, [lower, upper])
        clipped = np.clip(channel, low, high)
        std = float(clipped.std())
        out[..., c] = (clipped - clipped.mean()) / (std if std > 0 else 1.0)
    return out[..., 0] if single else out


def pad_to(array, shape, value=0.0):
    """Pad the leading axes of ``array`` symmetrically to at least ``shape``.

    Parameters
    ----------
    array : ndarray
    shape : tuple of int
        Minimum sizes of the leading ``len(shape)`` axes.
    value : float or "minimum"
        The fill; ``"minimum"`` fills each channel (the trailing axes) with its own minimum,
        as training and prediction of a normalised volume both do.

    Returns
    -------
    (ndarray, tuple of slice)
        The padded array (``array`` itself when no padding is needed) and the slices that
        cut the original back out (``crop_to``).
    """
    array = np.asarray(array)
    spatial = len(shape)
    before = [max(0, t - n) // 2 for n, t in zip(array.shape, shape)]
    after = [max(0, t - n) - b for n, t, b in zip(array.shape, shape, before)]
    window = tuple(slice(b, b + n) for b, n in zip(before, array.shape[:spatial]))
    if not any(before) and not any(after):
        return array, window
    if isinstance(value, str):
        if value != "minimum":
            raise ValueError(f"value must be a number or 'minimum'. Received: value={value!r}")
        value = array.min(axis=tuple(range(spatial))) if array.ndim > spatial else array.min()
    padded = np.empty(tuple(n + b + a for n, b, a in zip(array.shape, before, after)) + array.shape[spatial:],
                      array.dtype)
    padded[...] = value
    padded[window] = array
    return padded, window


def crop_to(array, window):
    """Undo ``pad_to``: the original extent of the leading axes."""
    return np.asarray(array)[window]


def sample_patches_3d(volumes, labels, patch_shape, count, foreground_rate=0.33, rng=None):
    """Random patches from volumes, a share of them centred on foreground.

    Parameters
    ----------
    volumes : list of array (Z, H, W, C)
        Each at least ``patch_shape`` (``pad_to`` smaller ones first).
    labels : list of array (Z, H, W)
    patch_shape : (int, int, int)
    count : int
        Number of patches.
    foreground_rate : float in [0, 1]
        Share of patches whose centre is a random foreground voxel (clamped so the patch
        fits); the others are uniform. nnU-Net uses 1/3.
    rng : numpy.random.Generator, optional

    Returns
    -------
    (ndarray (count, *patch_shape, C) float32, ndarray (count, *patch_shape) uint8, ndarray of bool)
        Patches, their labels, and which patches were drawn around foreground.
    """
    check_positive(count, "count", integer=True)
    if not 0 <= foreground_rate <= 1:
        raise ValueError(f"foreground_rate must be in [0, 1]. Received: foreground_rate={foreground_rate}")
    rng = rng or np.random.default_rng()
    patch = tuple(int(v) for v in patch_shape)
    images, masks, centred = [], [], []
    for _ in range(count):
        index = int(rng.integers(len(volumes)))
        volume, label = volumes[index], labels[index]
        if any(n < p for n, p in zip(volume.shape, patch)):
            raise ValueError(f"volume {index} has shape {volume.shape[:3]}, smaller than the patch {patch}; pad it first.")
        on_foreground = rng.random() < foreground_rate
        foreground = np.argwhere(label > 0) if on_foreground else ()
        if len(foreground):
            centre = foreground[rng.integers(len(foreground))]
            start = [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, patch, volume.shape)]
        else:
            on_foreground = False
            start = [int(rng.integers(n - p + 1)) for p, n in zip(patch, volume.shape)]
        window = tuple(slice(s, s + p) for s, p in zip(start, patch))
        images.append(volume[window])
        masks.append(label[window])
        centred.append(on_foreground)
    return np.stack(images).astype(np.float32), np.stack(masks).astype(np.uint8), np.array(centred)


def augment_volume(image, label, rng, flip=True, rotate_deg=15.0, scale=(0.9, 1.1), intensity=0.1,
                   gamma=(0.7, 1.5)):
    """One random, anatomy-preserving variant of a volume and its label map.

    Parameters
    ----------
    image : array (Z, H, W, C), normalised
    label : array (Z, H, W)
    rng : numpy.random.Generator
    flip : bool
        Left-right flip with probability 1/2 (axis 1 only: see the module's note).
    rotate_deg : float
        Rotation about the inferior-superior axis, uniform in +-``rotate_deg``; 0 turns it off.
    scale : (float, float) or None
        Isotropic zoom range.
    intensity : float
        Brightness: multiply by 1 + U(-i, i) and add U(-i, i) (in standard deviations).
    gamma : (float, float) or None
        Gamma range, applied to the image rescaled to [0, 1] and mapped back.

    Returns
    -------
    (ndarray float32, ndarray uint8), the same shapes.
    """
    from scipy import ndimage  # noqa: PLC0415

    image = np.asarray(image, np.float32)
    label = np.asarray(label)
    angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg)) if rotate_deg else 0.0
    zoom = rng.uniform(*scale) if scale else 1.0
    if angle or zoom != 1.0:
        cos, sin = np.cos(angle), np.sin(angle)
        matrix = np.array([[1.0, 0, 0], [0, cos, -sin], [0, sin, cos]]) / zoom
        centre = (np.array(label.shape) - 1) / 2
        offset = centre - matrix @ centre
        image = np.stack([ndimage.affine_transform(image[..., c], matrix, offset, order=1, mode="nearest")
                          for c in range(image.shape[-1])], axis=-1)
        label = ndimage.affine_transform(label, matrix, offset, order=0, mode="constant", cval=0)
    if flip and rng.random() < 0.5:
        image, label = np.flip(image, LEFT_RIGHT_AXIS), np.flip(label, LEFT_RIGHT_AXIS)
    if intensity:
        image = image * (1 + rng.uniform(-intensity, intensity)) + rng.uniform(-intensity, intensity)
    if gamma:
        low, high = float(image.min()), float(image.max())
        if high > low:
            unit = (image - low) / (high - low)
            image = unit ** rng.uniform(*gamma) * (high - low) + low
    return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(label, np.uint8)


def gaussian_weights_nd(patch_shape, sigma_scale=0.125):
    """Gaussian importance map of any dimension: 1 at the centre, at least 1e-3 at the
    border (``inference.gaussian_weights`` for volumes)."""
    check_positive(sigma_scale, "sigma_scale")
    weights = np.ones((), np.float64)
    for n in patch_shape:
        centre, sigma = (n - 1) / 2, max(n * sigma_scale, 1e-3)
        weights = np.multiply.outer(weights, np.exp(-0.5 * ((np.arange(n) - centre) / sigma) ** 2))
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)


def tile_starts(length, patch, stride):
    """Start indices of tiles of ``patch`` every ``stride`` along ``length``, the last one
    flush with the end (a single tile at 0 when ``length <= patch``)."""
    if length <= patch:
        return [0]
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return starts


def predict_volume(model, volume, patch_shape=None, overlap=0.5, batch_size=2, flip=False):
    """Probabilities for a volume of any size from overlapping, Gaussian-weighted patches.

    Parameters
    ----------
    model : keras.Model or callable
        Maps ``(B, *patch_shape, C)`` to ``(B, *patch_shape, K)`` probabilities; a Keras
        model's input size is the default patch.
    volume : array (Z, H, W, C), prepared and normalised as for training
    patch_shape : (int, int, int), optional
    overlap : float in [0, 1)
        Share of a patch its neighbour covers along each axis.
    batch_size : int
    flip : bool
        Test-time augmentation: also predict the left-right mirror image and average.

    Returns
    -------
    ndarray (Z, H, W, K) float32
        Smaller volumes are padded (each channel with its minimum, as in training) for the
        prediction and cropped back.
    """
    volume = check_array(volume, "volume", ndim=4, dtype_kind="biuf").astype(np.float32)
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1). Received: overlap={overlap}")
    if patch_shape is None:
        patch_shape = tuple(model.input_shape[1:4])
        if None in patch_shape:
            raise ValueError("The model accepts any size; pass patch_shape=(depth, height, width).")
    patch = tuple(int(v) for v in patch_shape)
    padded, window = pad_to(volume, patch, value="minimum")  # as training pads (VolumePatches)
    strides = [max(1, int(p * (1 - overlap))) for p in patch]
    corners = [(z, y, x) for z in tile_starts(padded.shape[0], patch[0], strides[0])
               for y in tile_starts(padded.shape[1], patch[1], strides[1])
               for x in tile_starts(padded.shape[2], patch[2], strides[2])]
    weights = gaussian_weights_nd(patch)[..., None].astype(np.float64)
    call = model.predict_on_batch if hasattr(model, "predict_on_batch") else model
    # float64 sums: where every patch agrees, the blend returns that value exactly
    total, norm = None, np.zeros(padded.shape[:3] + (1,), np.float64)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first: first + batch_size]
        tiles = np.stack([padded[z: z + patch[0], y: y + patch[1], x: x + patch[2]] for z, y, x in chunk])
        probs = np.asarray(call(tiles), np.float32)
        if flip:
            mirrored = np.asarray(call(np.ascontiguousarray(np.flip(tiles, 1 + LEFT_RIGHT_AXIS))), np.float32)
            probs = (probs + np.flip(mirrored, 1 + LEFT_RIGHT_AXIS)) / 2
        if total is None:
            total = np.zeros(padded.shape[:3] + (probs.shape[-1],), np.float64)
        for (z, y, x), tile in zip(chunk, probs):
            total[z: z + patch[0], y: y + patch[1], x: x + patch[2]] += tile * weights
            norm[z: z + patch[0], y: y + patch[1], x: x + patch[2]] += weights
    total /= norm
    return crop_to(total, window).astype(np.float32)


def neighbour_slices(volume, context=1):
    """2.5D inputs: each slice with its ``context`` neighbours on either side as channels.

    Parameters
    ----------
    volume : array (Z, H, W) or (Z, H, W, 1)
    context : int
        Neighbours on each side; the first and last slices repeat at the edges.

    Returns
    -------
    ndarray (Z, H, W, 2 * context + 1) float32, the centre slice in the middle channel.
    """
    volume = np.asarray(volume, np.float32)
    if volume.ndim == 4:
        if volume.shape[-1] != 1:
            raise ValueError(f"neighbour_slices takes one channel; got {volume.shape[-1]}.")
        volume = volume[..., 0]
    check_positive(context, "context", integer=True, allow_zero=True)
    padded = np.pad(volume, ((context, context), (0, 0), (0, 0)), mode="edge")
    return np.stack([padded[i: i + len(volume)] for i in range(2 * context + 1)], axis=-1)

