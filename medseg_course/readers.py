"""Readers: PNG/JPEG/TIFF/BMP/GIF, DICOM files and series, NIfTI; each returns a ``MedicalImage``.

Errors are ``ImageReadError`` (a ``ValueError``) with one line naming the file, what is
wrong and how to fix it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg_course.deidentification import anonymous_uid
from medseg_course.image import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    RASTER_SUFFIXES,
    MedicalImage,
    _check_link,
    _fail,
    image_suffix,
)
from medseg_course.utils import import_cv2

__all__ = ["read_image", "read_dicom", "read_dicom_series", "read_nifti"]

# LPS (DICOM patient coordinates) -> RAS (NIfTI world coordinates).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def read_image(path, canonical=False):
    """Read any supported image file, or a folder holding one DICOM series.

    Parameters
    ----------
    path : str or Path
        A PNG/JPEG/TIFF/BMP/GIF, DICOM (.dcm, or any file starting with the DICOM
        preamble) or NIfTI file, or a folder of DICOM files of one series.
    canonical : bool
        NIfTI only: reorient to the closest RAS+ orientation.

    Returns
    -------
    MedicalImage

    Raises
    ------
    ImageReadError
        Missing, empty, truncated or unsupported files, with the path and the fix.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path)
    if not path.exists():
        _check_link(path)
        _fail(path, "no such file", "Check the path")
    if path.stat().st_size == 0:
        _fail(path, "the file is empty (0 bytes)", "Re-export or re-copy it")
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(path, canonical=canonical)
    if suffix in DICOM_SUFFIXES or _has_dicom_preamble(path):
        return read_dicom(path)
    if suffix in RASTER_SUFFIXES:
        return _read_raster(path)
    _fail(
        path,
        f"unsupported file type {suffix or '(no suffix)'}",
        f"Convert it to one of {', '.join(IMAGE_SUFFIXES)}, or remove it from the folder",
    )


def _has_dicom_preamble(path):
    with open(path, "rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_raster(path):
    cv2 = import_cv2()
    if image_suffix(path) == ".gif":
        pixels = _read_gif(path)
    else:
        buffer = np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths
        pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if pixels is None:
            _fail(path, "not a readable image (truncated or corrupt?)", "Re-export the file")
        if pixels.ndim == 3:
            if pixels.shape[2] == 4:  # drop alpha
                pixels = pixels[..., :3]
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if pixels.shape[2] == 3 else pixels[..., 0]
    if pixels.ndim == 3 and np.all(pixels[..., 0] == pixels[..., 1]) and np.all(pixels[..., 1] == pixels[..., 2]):
        pixels = pixels[..., 0]  # grey stored as RGB
    if pixels.dtype.kind == "f" and not np.all(np.isfinite(pixels)):
        _fail(path, "contains NaN or infinite pixels", "Fix the export or clean the values")
    return MedicalImage(
        pixels=np.ascontiguousarray(pixels),
        path=path,
        format="raster",
        metadata={"bit_depth": pixels.dtype.itemsize * 8, "colour": pixels.ndim == 3},
    )


def _read_gif(path):
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as image:
            image.seek(0)
            converted = image.convert("RGB") if image.mode not in ("L", "1") else image.convert("L")
            return np.asarray(converted)
    except (UnidentifiedImageError, OSError) as err:
        _fail(path, f"not a readable GIF ({err})", "Re-export the file")


# --------------------------------------------------------------------------- DICOM


def _dicom_affine(dataset, slice_step_mm=None):
    """4x4 RAS affine for index (row, column, slice) from a DICOM dataset's geometry."""
    orientation = np.asarray(getattr(dataset, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float)
    position = np.asarray(getattr(dataset, "ImagePositionPatient", [0, 0, 0]), float)
    row_mm, col_mm = (float(v) for v in getattr(dataset, "PixelSpacing", [1, 1]))
    along_row, along_col = orientation[:3], orientation[3:]  # direction of increasing column, row
    normal = np.cross(along_row, along_col)
    step = float(slice_step_mm or getattr(dataset, "SliceThickness", 1) or 1)
    lps = np.eye(4)
    lps[:3, 0] = along_col * row_mm  # index 0: row
    lps[:3, 1] = along_row * col_mm  # index 1: column
    lps[:3, 2] = normal * step  # index 2: slice
    lps[:3, 3] = position
    return _LPS_TO_RAS @ lps


def _dicom_pixels(dataset, path):
    if "PixelData" not in dataset:
        _fail(path, "DICOM file has no pixel data (a report, structure set or DICOMDIR?)",
              "Point to the image files of the series")
    try:
        pixels = dataset.pixel_array
    except Exception as err:  # pydicom raises many types for codecs and truncation
        if "less than expected" in str(err):
            _fail(path, f"the DICOM pixel data is shorter than its header says ({err})",
                  "The file is truncated (an interrupted copy or transfer?): copy or export it again")
        _fail(path, f"cannot decode the DICOM pixel data ({type(err).__name__}: {err})",
              "Install the codec it names (e.g. pylibjpeg) or re-export uncompressed")
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * slope + intercept


def read_dicom(path):
    """Read one DICOM image, in real-world units.

    RescaleSlope and RescaleIntercept are applied, so CT pixels are Hounsfield units
    (air about -1000, water 0, bone several hundred and above).

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    MedicalImage
        ``pixels`` (H, W) float32; ``spacing_mm`` (row, column) from PixelSpacing;
        ``affine`` for (row, column, 0); ``metadata`` with ``units``, ``modality``,
        ``slice_thickness_mm``, ``position_mm``, ``window`` (centre, width) when present.
    """
    import pydicom  # noqa: PLC0415
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    path = Path(path)
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as err:
        _fail(path, f"not a readable DICOM file ({type(err).__name__})", "Re-export the file")
    pixels = _dicom_pixels(dataset, path)
    if pixels.ndim != 2:
        _fail(path, f"DICOM pixel data has shape {pixels.shape}, expected one 2D frame",
              "Split multi-frame or colour DICOM into single greyscale frames")
    return MedicalImage(
        pixels=pixels,
        spacing_mm=tuple(float(v) for v in getattr(dataset, "PixelSpacing", [1, 1])),
        affine=_dicom_affine(dataset),
        path=path,
        format="dicom",
        metadata=_dicom_metadata(dataset),
    )


def _dicom_metadata(dataset):
    modality = str(getattr(dataset, "Modality", ""))
    meta = {
        "modality": modality,
        "units": "HU" if modality == "CT" else str(getattr(dataset, "RescaleType", "")) or "rescaled",
        "slice_thickness_mm": float(getattr(dataset, "SliceThickness", 0) or 0) or None,
        "position_mm": tuple(float(v) for v in getattr(dataset, "ImagePositionPatient", [])) or None,
        # a hashed stand-in: slices of one series still share it, the original UID stays private
        "series_uid": anonymous_uid(str(getattr(dataset, "SeriesInstanceUID", ""))),
        "deidentified": True,
    }
    centre, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if centre is not None and width is not None:
        meta["window"] = (_first_value(centre), _first_value(width))
    return meta


def _first_value(value):
    """A DICOM number that may be multi-valued (several windows): the first one."""
    from pydicom.multival import MultiValue  # noqa: PLC0415

    return float(value[0]) if isinstance(value, (MultiValue, list, tuple)) else float(value)


def read_dicom_series(folder):
    """Read a folder holding one DICOM series as a volume sorted by slice position.

    Slices are ordered by the projection of ImagePositionPatient on the slice normal (not
    by file name or InstanceNumber, which exporters get wrong), and the slice spacing is
    the median distance between positions, not SliceThickness (slices may overlap or have
    gaps).

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    MedicalImage
        ``pixels`` (Z, H, W) float32; ``spacing_mm`` (slice, row, column); ``affine`` for
        that index order (slice, row, column).

    Raises
    ------
    ImageReadError
        An empty folder, several series mixed, slices of different sizes, or duplicated
        slice positions.
    """
    import pydicom  # noqa: PLC0415
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    datasets = []
    for file in files:
        try:
            datasets.append((file, pydicom.dcmread(file)))
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError):
            continue  # non-DICOM files (README, DICOMDIR index) are skipped
    datasets = [(f, d) for f, d in datasets if "PixelData" in d]
    if not datasets:
        _fail(folder, "no DICOM images found in the folder", "Point to the folder that holds the .dcm files of one series")
    series = {str(getattr(d, "SeriesInstanceUID", "")) for _, d in datasets}
    if len(series) > 1:
        _fail(folder, f"the folder mixes {len(series)} DICOM series",
              "Put each series (SeriesInstanceUID) in a folder of its own")
    first = datasets[0][1]
    orientation = np.asarray(getattr(first, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array(
        [float(np.dot(normal, np.asarray(getattr(d, "ImagePositionPatient", [0, 0, i]), float)))
         for i, (_, d) in enumerate(datasets)]
    )
    order = np.argsort(positions, kind="stable")
    positions = positions[order]
    if len(positions) > 1 and np.any(np.diff(positions) < 1e-3):
        _fail(folder, "two slices share a position", "Remove duplicated files from the series folder")
    slices = []
    for index in order:
        file, dataset = datasets[index]
        pixels = _dicom_pixels(dataset, file)
        if slices and pixels.shape != slices[0].shape:
            _fail(file, f"slice shape {pixels.shape} differs from {slices[0].shape}", "Keep one series per folder")
        slices.append(pixels)
    step = float(np.median(np.diff(positions))) if len(positions) > 1 else float(
        getattr(first, "SliceThickness", 1) or 1
    )
    ordered_first = datasets[order[0]][1]
    affine_rcs = _dicom_affine(ordered_first, slice_step_mm=step)
    # Array order is (slice, row, column): permute the affine's index columns to match.
    affine = affine_rcs[:, [2, 0, 1, 3]]
    row_mm, col_mm = (float(v) for v in getattr(first, "PixelSpacing", [1, 1]))
    meta = _dicom_metadata(ordered_first)
    meta["num_slices"] = len(slices)
    return MedicalImage(
        pixels=np.stack(slices).astype(np.float32),
        spacing_mm=(step, row_mm, col_mm),
        affine=affine,
        path=folder,
        format="dicom-series",
        metadata=meta,
    )


# --------------------------------------------------------------------------- NIfTI


def read_nifti(path, canonical=False):
    """Read a NIfTI image or mask with its spacing and orientation.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz``.
    canonical : bool
        Reorient to the closest RAS+ orientation (``nibabel.as_closest_canonical``), so
        array axes run left-to-right, posterior-to-anterior, inferior-to-superior.

    Returns
    -------
    MedicalImage
        ``pixels`` in nibabel's (i, j, k[, t]) order (float32 for images, integers kept for
        label maps), ``spacing_mm`` from the header zooms, ``affine`` (RAS+ mm).

    Raises
    ------
    ImageReadError
        A truncated or corrupt file, or NaN/Inf voxels.
    """
    import nibabel as nib  # noqa: PLC0415

    path = Path(path)
    try:
        image = nib.load(str(path))
        if canonical:
            image = nib.as_closest_canonical(image)
        data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        _fail(path, f"not a readable NIfTI file ({type(err).__name__}: {err})",
              "Re-export it, or check it is complete (a truncated download?)")
    if data.ndim > 4:
        _fail(path, f"the volume has {data.ndim} dimensions {data.shape}; expected 2D, 3D or 4D (3D plus channels)",
              "Split time series or other extra axes into separate files")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        _fail(path, f"{bad} voxel(s) are NaN or infinite", "Clean the volume (e.g. set them to 0) before using it")
    if data.dtype.kind == "f" or data.dtype.itemsize > 2:
        data = data.astype(np.float32) if data.dtype.kind == "f" else data
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return MedicalImage(
        pixels=data,
        spacing_mm=zooms,
        affine=np.asarray(image.affine, dtype=float),
        path=path,
        format="nifti",
        metadata={"orientation": "".join(nib.aff2axcodes(image.affine)), "shape": data.shape},
    )
