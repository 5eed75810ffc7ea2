"""Writers: masks as PNG or NIfTI, with the geometry of the image they belong to, so a mask
opens aligned with its image in 3D Slicer or ITK-SNAP. Nothing is replaced without
``overwrite=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg_course.image import NIFTI_SUFFIXES, image_suffix
from medseg_course.utils import check_array, import_cv2

__all__ = ["write_png", "write_nifti", "write_mask"]


def _check_target(path, overwrite):
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it, or choose another name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_png(array, path, overwrite=False):
    """Save a 2D mask or image as PNG.

    Binary masks (values 0/1) are saved as 0/255 so they are visible in any viewer (the
    readers map 0/255 back to 0/1); label maps keep their values; float images in [0, 1]
    are scaled to 8 bits.

    Parameters
    ----------
    array : array, shape (H, W) or (H, W, 1), or (H, W, 3) RGB
    path : str or Path
    overwrite : bool
        Replace an existing file (otherwise ``FileExistsError``).

    Returns
    -------
    Path
    """
    cv2 = import_cv2()
    array = check_array(array, "array", ndim=(2, 3), dtype_kind="biuf")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    values = np.unique(array)
    if array.dtype == bool or (array.ndim == 2 and np.all(np.isin(values, (0, 1)))):
        out = (array.astype(np.uint8) * 255)
    elif array.dtype.kind == "f":
        out = np.clip(np.round(array * 255), 0, 255).astype(np.uint8)
    else:
        if array.max() > 65535 or array.min() < 0:
            raise ValueError(f"array values {array.min()}..{array.max()} do not fit a PNG; rescale first.")
        out = array.astype(np.uint8 if array.max() <= 255 else np.uint16)
    if out.ndim == 3:
        out = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)
    path = _check_target(path, overwrite)
    ok, encoded = cv2.imencode(".png", out)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    encoded.tofile(path)
    return path


def write_nifti(array, path, like=None, spacing_mm=None, overwrite=False):
    """Save an array as NIfTI with the geometry of the image it belongs to.

    Parameters
    ----------
    array : array, 2D or 3D, same spatial shape and axis order as ``like.pixels``
    path : str or Path
        Ending in ``.nii`` or ``.nii.gz``.
    like : MedicalImage, optional
        Source of the affine. Without one (PNG sources), the affine is diagonal with
        ``spacing_mm`` (or 1 mm).
    spacing_mm : tuple of float, optional
        Used when ``like`` has no affine.
    overwrite : bool

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        If the array's spatial shape differs from ``like``'s.
    """
    import nibabel as nib  # noqa: PLC0415

    array = check_array(array, "array", ndim=(2, 3), dtype_kind="biuf")
    if image_suffix(path) not in NIFTI_SUFFIXES:
        raise ValueError(f"path must end in .nii or .nii.gz. Received: {path}")
    if like is not None:
        spatial = like.pixels.shape[:3] if like.format in ("nifti", "dicom-series") else like.pixels.shape[:2]
        if array.shape[: len(spatial)] != tuple(spatial)[: array.ndim]:
            raise ValueError(
                f"array shape {array.shape} does not match the image it belongs to, "
                f"{like.pixels.shape} ({like.path}). Resample the mask to the image first."
            )
    if like is not None and like.affine is not None:
        affine = like.affine
    else:
        spacing = (spacing_mm or (like.spacing_mm if like is not None and like.spacing_mm else None) or (1.0,) * 3)
        spacing = tuple(spacing) + (1.0,) * (3 - len(spacing))
        affine = np.diag([*spacing[:3], 1.0])
    data = array if array.ndim == 3 else array[..., None]
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype.kind == "i" and data.min() >= 0 and data.max() <= 255:
        data = data.astype(np.uint8)
    image = nib.Nifti1Image(np.asarray(data), affine)
    image.header.set_xyzt_units("mm")
    if data.dtype.kind in "ui":
        image.header.set_intent("label")
    path = _check_target(path, overwrite)
    nib.save(image, str(path))
    return path


def write_mask(mask, path, like=None, overwrite=False):
    """Save a mask as PNG or NIfTI, chosen by the path's suffix."""
    if image_suffix(path) in NIFTI_SUFFIXES:
        return write_nifti(mask, path, like=like, overwrite=overwrite)
    if image_suffix(path) == ".png":
        return write_png(mask, path, overwrite=overwrite)
    raise ValueError(f"Masks are saved as .png or .nii/.nii.gz. Received: {path}")
