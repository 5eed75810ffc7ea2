"""Readers: PNG/JPEG/TIFF/BMP/GIF, DICOM files and series, NIfTI; each returns a ``MedicalImage``.

Errors are ``ImageReadError`` (a ``ValueError``) with one line naming the file, what is
wrong and how to fix it. Whatever the decoders (OpenCV, Pillow, nibabel, pydicom) raise on a
damaged or hostile file becomes such an error, and the warnings they print are silenced.
Before decoding, the readers compare the number of pixel values the header claims (width x
height x channels, x slices or frames for volumes) with ``MAX_PIXELS`` and refuse larger
images, so a file whose header lies cannot make them allocate more than that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import warnings
from pathlib import Path

import numpy as np

from medseg_course.deidentification import anonymous_uid
from medseg_course.image import DICOM_SUFFIXES, IMAGE_SUFFIXES, NIFTI_SUFFIXES, RASTER_SUFFIXES, image_suffix
from medseg_course.image import ImageReadError, MedicalImage, _check_link, _fail, _raster_size
from medseg_course.utils import import_cv2

__all__ = ["MAX_PIXELS", "read_image", "read_dicom", "read_dicom_series", "read_nifti"]

#: The most pixel values (width x height x channels, times slices or frames) a reader decodes:
#: 2**30, e.g. a 32768 x 32768 grey image or a 1024 x 1024 x 1024 volume, 1 GiB at 8 bits and
#: 4 GiB as the float32 the pipeline converts it to. Larger images are refused from their
#: header, before any pixel is decoded. Raise it (``medseg_course.readers.MAX_PIXELS = ...``) on a
#: machine with the memory for more.
MAX_PIXELS = 2**30

# LPS (DICOM patient coordinates) -> RAS (NIfTI world coordinates).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _detail(err):
    """``Type: message`` of a decoder's exception, on one line and at most 200 characters."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}" if text else type(err).__name__


def _check_pixel_count(path, dims):
    """Refuse an image whose header claims more than ``MAX_PIXELS`` values, or none."""
    dims = [int(d) for d in dims]
    total = 1
    for d in dims:
        total *= d
    shape = " x ".join(str(d) for d in dims)
    if total > MAX_PIXELS:
        _fail(path, f"the header claims {shape} = {total:,} pixel values, more than the readers' limit of "
              f"{MAX_PIXELS:,} (medseg_course.readers.MAX_PIXELS)",
              "Crop or downsample it, or raise medseg_course.readers.MAX_PIXELS on a machine with the memory for it")
    if total <= 0:
        _fail(path, f"the header claims an image of {shape} pixel values, which holds none",
              "Re-export the file")


@contextlib.contextmanager
def _quiet_stderr():
    """Send file descriptor 2 to the null device: libpng and libjpeg print their warnings
    there directly ("Corrupt JPEG data: ..."), which would add lines to the one-line errors.
    Other threads' writes to stderr are lost while a decoder runs."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 (an embedding host)
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _decoding(path, what, fix="Re-export the file, or copy it again if it may be incomplete"):
    """The boundary around a decoder: its warnings and log lines are silenced, and whatever it
    raises becomes one ``ImageReadError`` naming ``path`` (``ImageReadError`` passes through)."""
    loggers = [logging.getLogger("nibabel.global"), logging.getLogger("pydicom")]  # nibabel's prints to stderr
    levels = [logger.level for logger in loggers]
    try:
        with warnings.catch_warnings(), _quiet_stderr():
            warnings.simplefilter("ignore")
            for logger in loggers:
                logger.setLevel(logging.CRITICAL + 1)
            yield
    except ImageReadError:
        raise
    except MemoryError as err:
        _fail(path, f"not enough memory to decode it ({_detail(err)})",
              "Crop or downsample it, or read it on a machine with more memory")
    except Exception as err:  # noqa: BLE001 -- decoders raise anything on damaged input (zlib, struct, cv2, ...)
        _fail(path, f"not a readable {what} ({_detail(err)})", fix)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


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
    try:
        size = _raster_size(path)
    except (ValueError, struct.error, OSError, OverflowError) as err:
        _fail(path, f"not a readable image (truncated or corrupt?: {_detail(err)})", "Re-export the file")
    if size is None:
        _fail(path, "not a readable image (truncated or corrupt?): its contents are not PNG, JPEG, TIFF, BMP or GIF",
              "Re-export it in one of these formats")
    kind, width, height, channels = size
    _check_pixel_count(path, (height, width, channels))
    if kind == "GIF":  # OpenCV builds need not decode GIF
        pixels = _read_gif(path)
    else:
        with _decoding(path, "image"):
            buffer = np.fromfile(path, dtype=np.uint8)  # np.fromfile copes with non-ASCII paths
            pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
            if pixels is not None and pixels.ndim == 3:
                if pixels.shape[2] == 4:  # drop alpha
                    pixels = pixels[..., :3]
                pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if pixels.shape[2] == 3 else pixels[..., 0]
        if pixels is None or pixels.size == 0:
            _fail(path, "not a readable image (truncated or corrupt?)", "Re-export the file")
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
    from PIL import Image  # noqa: PLC0415

    with _decoding(path, "GIF"):
        try:
            with Image.open(path) as image:
                image.seek(0)
                converted = image.convert("RGB") if image.mode not in ("L", "1") else image.convert("L")
                return np.asarray(converted)
        except Image.DecompressionBombError as err:  # a frame larger than the screen the header declares
            _fail(path, f"the GIF is too large to decode ({_detail(err)})", "Crop or downsample it")


# --------------------------------------------------------------------------- DICOM


def _dicom_numbers(dataset, keyword, path, count, default):
    """The ``count`` finite numbers of a DICOM attribute, ``default`` when it is absent or empty;
    an attribute holding anything else fails, naming it."""
    from pydicom.multival import MultiValue  # noqa: PLC0415

    if keyword not in dataset:
        return default
    value = dataset[keyword].value
    if value is None or (isinstance(value, (str, bytes, list, MultiValue)) and len(value) == 0):
        return default
    values = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != count or not np.all(np.isfinite(numbers)):
        shown = "\\".join(str(v) for v in values)
        _fail(path, f"the DICOM attribute {keyword} holds {shown[:60]!r}, not {count} finite number(s)",
              "Fix the header (e.g. with pydicom) or re-export the file")
    return numbers


def _dicom_int(dataset, keyword, path, default):
    (number,) = _dicom_numbers(dataset, keyword, path, 1, (default,))
    if number != int(number):
        _fail(path, f"the DICOM attribute {keyword} holds {number}, not a whole number", "Fix the header or re-export the file")
    return int(number)


def _dicom_spacing(dataset, path):
    spacing = _dicom_numbers(dataset, "PixelSpacing", path, 2, (1.0, 1.0))
    if min(spacing) <= 0:
        _fail(path, f"the DICOM attribute PixelSpacing holds {spacing}, not two positive sizes in mm",
              "Fix the header or re-export the file")
    return spacing


def _lenient_float(dataset, keyword):
    """A descriptive number (SliceThickness, a window), or ``None`` where it is absent or not a number."""
    from pydicom.multival import MultiValue  # noqa: PLC0415

    try:
        value = dataset.get(keyword)
        value = value[0] if isinstance(value, (MultiValue, list, tuple)) else value  # several windows: the first
        number = float(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return number if np.isfinite(number) else None


def _dicom_affine(dataset, path, slice_step_mm=None):
    """4x4 RAS affine for index (row, column, slice) from a DICOM dataset's geometry."""
    orientation = np.asarray(_dicom_numbers(dataset, "ImageOrientationPatient", path, 6, (1, 0, 0, 0, 1, 0)), float)
    position = np.asarray(_dicom_numbers(dataset, "ImagePositionPatient", path, 3, (0, 0, 0)), float)
    row_mm, col_mm = _dicom_spacing(dataset, path)
    along_row, along_col = orientation[:3], orientation[3:]  # direction of increasing column, row
    normal = np.cross(along_row, along_col)
    step = float(slice_step_mm or _lenient_float(dataset, "SliceThickness") or 1)
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
    dims = [max(1, _dicom_int(dataset, "NumberOfFrames", path, 1)), _dicom_int(dataset, "Rows", path, 0),
            _dicom_int(dataset, "Columns", path, 0), max(1, _dicom_int(dataset, "SamplesPerPixel", path, 1))]
    _check_pixel_count(path, dims)
    try:
        pixels = dataset.pixel_array
    except Exception as err:  # pydicom raises many types for codecs and truncation
        if "less than expected" in str(err):
            _fail(path, f"the DICOM pixel data is shorter than its header says ({err})",
                  "The file is truncated (an interrupted copy or transfer?): copy or export it again")
        _fail(path, f"cannot decode the DICOM pixel data ({_detail(err)})",
              "Install the codec it names (e.g. pylibjpeg) or re-export uncompressed")
    (slope,) = _dicom_numbers(dataset, "RescaleSlope", path, 1, (1.0,))
    (intercept,) = _dicom_numbers(dataset, "RescaleIntercept", path, 1, (0.0,))
    pixels = pixels.astype(np.float32) * (slope or 1) + intercept
    if not np.all(np.isfinite(pixels)):
        _fail(path, f"RescaleSlope {slope:g} and RescaleIntercept {intercept:g} take the pixels beyond float32",
              "Fix the header's rescale values or re-export the file")
    return pixels


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

    Raises
    ------
    ImageReadError
        A file that is not DICOM or is damaged, pixel data that cannot be decoded, more than
        ``MAX_PIXELS`` values, or geometry attributes that are not numbers.
    """
    import pydicom  # noqa: PLC0415

    path = Path(path)
    with _decoding(path, "DICOM file"):
        dataset = pydicom.dcmread(path)
        pixels = _dicom_pixels(dataset, path)
        if pixels.ndim != 2:
            _fail(path, f"DICOM pixel data has shape {pixels.shape}, expected one 2D frame",
                  "Split multi-frame or colour DICOM into single greyscale frames")
        return MedicalImage(
            pixels=pixels,
            spacing_mm=_dicom_spacing(dataset, path),
            affine=_dicom_affine(dataset, path),
            path=path,
            format="dicom",
            metadata=_dicom_metadata(dataset, path),
        )


def _dicom_metadata(dataset, path):
    modality = str(dataset.get("Modality", ""))
    meta = {
        "modality": modality,
        "units": "HU" if modality == "CT" else str(dataset.get("RescaleType", "")) or "rescaled",
        "slice_thickness_mm": _lenient_float(dataset, "SliceThickness") or None,
        "position_mm": _dicom_numbers(dataset, "ImagePositionPatient", path, 3, None),
        # a hashed stand-in: slices of one series still share it, the original UID stays private
        "series_uid": anonymous_uid(str(dataset.get("SeriesInstanceUID", ""))),
        "deidentified": True,
    }
    centre, width = _lenient_float(dataset, "WindowCenter"), _lenient_float(dataset, "WindowWidth")
    if centre is not None and width is not None:
        meta["window"] = (centre, width)
    return meta


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

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    datasets = []
    for file in files:
        try:
            with _decoding(file, "DICOM file"):
                datasets.append((file, pydicom.dcmread(file)))
        except ImageReadError:
            continue  # non-DICOM files (README, DICOMDIR index) are skipped
    with _decoding(folder, "DICOM series"):
        return _stack_series(folder, [(f, d) for f, d in datasets if "PixelData" in d])


def _stack_series(folder, datasets):
    if not datasets:
        _fail(folder, "no DICOM images found in the folder", "Point to the folder that holds the .dcm files of one series")
    series = {str(d.get("SeriesInstanceUID", "")) for _, d in datasets}
    if len(series) > 1:
        _fail(folder, f"the folder mixes {len(series)} DICOM series",
              "Put each series (SeriesInstanceUID) in a folder of its own")
    first_file, first = datasets[0]
    orientation = np.asarray(_dicom_numbers(first, "ImageOrientationPatient", first_file, 6, (1, 0, 0, 0, 1, 0)), float)
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array(
        [float(np.dot(normal, np.asarray(_dicom_numbers(d, "ImagePositionPatient", f, 3, (0, 0, i)), float)))
         for i, (f, d) in enumerate(datasets)]
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
        _check_pixel_count(folder, (len(slices), *pixels.shape))
    if slices[0].ndim != 2:
        _fail(datasets[order[0]][0], f"DICOM pixel data has shape {slices[0].shape}, expected one 2D frame",
              "Split multi-frame or colour DICOM into single greyscale frames")
    step = float(np.median(np.diff(positions))) if len(positions) > 1 else float(
        _lenient_float(first, "SliceThickness") or 1
    )
    ordered_file, ordered_first = datasets[order[0]]
    affine_rcs = _dicom_affine(ordered_first, ordered_file, slice_step_mm=step)
    # Array order is (slice, row, column): permute the affine's index columns to match.
    affine = affine_rcs[:, [2, 0, 1, 3]]
    row_mm, col_mm = _dicom_spacing(first, first_file)
    meta = _dicom_metadata(ordered_first, ordered_file)
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
        A truncated or corrupt file, NaN/Inf voxels, more than ``MAX_PIXELS`` voxels, colour
        or complex voxels, or a header whose voxel size or orientation is not finite.
    """
    import nibabel as nib  # noqa: PLC0415

    path = Path(path)
    with _decoding(path, "NIfTI file", "Re-export it, or check it is complete (a truncated download?)"):
        image = nib.load(str(path))
        shape = tuple(image.shape)
        if not 2 <= len(shape) <= 4:
            _fail(path, f"the volume has {len(shape)} dimensions {shape}; expected 2D, 3D or 4D (3D plus channels)",
                  "Split time series or other extra axes into separate files" if len(shape) > 4 else "Re-export the file")
        _check_pixel_count(path, shape)
        kind = image.get_data_dtype().kind
        if kind not in "biuf":
            _fail(path, f"voxels of type {image.get_data_dtype()} (colour or complex), not grey levels",
                  "Convert it to a grey-level (integer or float) volume")
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        affine = np.asarray(image.affine, dtype=float)
        if not (np.all(np.isfinite(zooms)) and np.all(np.isfinite(affine))) or None in nib.aff2axcodes(affine):
            _fail(path, f"the header's voxel size ({', '.join(f'{z:g}' for z in zooms)}) or orientation (affine) is "
                  "not finite or is degenerate", "Fix the header (qform/sform, pixdim) or re-export the file")
        if canonical:
            image = nib.as_closest_canonical(image)
            affine = np.asarray(image.affine, dtype=float)
            zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        data = np.asanyarray(image.dataobj)
        orientation = "".join(nib.aff2axcodes(affine))
        if data.dtype.kind == "f":
            data = data.astype(np.float32)  # values beyond float32 (a huge scl_slope) become infinite here
            if not np.all(np.isfinite(data)):
                bad = int(data.size - np.count_nonzero(np.isfinite(data)))
                _fail(path, f"{bad} voxel(s) are NaN or infinite", "Clean the volume (e.g. set them to 0) before using it")
    return MedicalImage(
        pixels=data,
        spacing_mm=zooms,
        affine=affine,
        path=path,
        format="nifti",
        metadata={"orientation": orientation, "shape": data.shape},
    )
