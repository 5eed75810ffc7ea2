"""Medical image I/O: pixels together with their geometry.

Every reader returns a ``MedicalImage``: the pixel array plus the spacing (mm per pixel
along each array axis) and, where the format has one, the affine that maps array indices
to world coordinates in millimetres (RAS+, as NIfTI and 3D Slicer use). Writers save masks
with the geometry of the image they belong to, so a mask opens aligned with its image in
3D Slicer or ITK-SNAP.

=================  ==================================  =======================================
format             pixels                              geometry
=================  ==================================  =======================================
PNG/JPEG/TIFF/BMP  (H, W) grey or (H, W, 3) RGB;       none (spacing ``None``: pixel units)
GIF                8 or 16 bit kept
DICOM file         (H, W) float32 in HU (CT) or        PixelSpacing, SliceThickness, position
                   rescaled units; RescaleSlope and    and orientation (affine)
                   RescaleIntercept applied
DICOM folder       (Z, H, W), slices sorted by their   spacing between slice positions,
(one series)       position along the slice normal     affine
NIfTI (.nii[.gz])  nibabel's array order (i, j, k)     header zooms, affine; ``canonical=True``
                                                       reorients to RAS+
=================  ==================================  =======================================

Errors are ``ImageReadError`` (a ``ValueError``) with one line naming the file, what is
wrong and how to fix it.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg_course.utils import check_array, import_cv2

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "MedicalImage",
    "read_image",
    "read_dicom",
    "read_dicom_series",
    "read_nifti",
    "write_mask",
    "write_png",
    "write_nifti",
    "deidentify",
    "anonymous_uid",
    "PHI_ATTRIBUTES",
    "image_suffix",
    "list_image_files",
]

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")
#: Every file suffix ``read_image`` understands.
IMAGE_SUFFIXES = RASTER_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES

# LPS (DICOM patient coordinates) -> RAS (NIfTI world coordinates).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class ImageReadError(ValueError):
    """An image or mask file could not be read; the message names the file and the fix."""


@dataclass
class MedicalImage:
    """Pixels plus geometry.

    Attributes
    ----------
    pixels : ndarray
        (H, W) or (H, W, 3) for 2D images; (Z, H, W) for a DICOM series; nibabel's (i, j, k)
        order for NIfTI.
    spacing_mm : tuple of float or None
        Millimetres per pixel along each spatial array axis; ``None`` when the format does
        not say (photographs, PNG masks).
    affine : ndarray (4, 4) or None
        Maps (index_0, index_1, index_2, 1) to RAS+ world millimetres. 2D DICOM images get
        the affine of a one-slice volume indexed (row, column, 0).
    path : Path
        Where it was read from.
    format : str
        ``"raster"``, ``"dicom"``, ``"dicom-series"`` or ``"nifti"``.
    metadata : dict
        Format details: ``bit_depth``, ``colour``, ``units`` ("HU" for CT), ``modality``,
        ``slice_thickness_mm``, ...
    """

    pixels: np.ndarray
    spacing_mm: tuple | None = None
    affine: np.ndarray | None = None
    path: Path | None = None
    format: str = "raster"
    metadata: dict = field(default_factory=dict)

    @property
    def is_colour(self):
        """True for (H, W, 3) colour photographs."""
        return self.format == "raster" and self.pixels.ndim == 3

    @property
    def is_volume(self):
        """True for 3D data (a DICOM series or a NIfTI volume with more than one slice)."""
        return self.format in ("dicom-series", "nifti") and self.pixels.ndim == 3 and min(
            self.pixels.shape
        ) > 1


def image_suffix(path):
    """The file's image suffix in lower case (``.nii.gz`` counts as one), or ``""``."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _check_link(path):
    """Raise ``ImageReadError`` if ``path`` is a symbolic link to nothing."""
    if path.is_symlink() and not path.exists():
        _fail(path, f"a broken link (to {os.readlink(path)}, which does not exist)", "Fix or remove the link")


def _fail(path, problem, fix):
    problem = " ".join(str(problem).split())  # library messages may span lines; errors are one line
    raise ImageReadError(f"{path}: {problem}. {fix}")


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


# --------------------------------------------------------------------------- writers


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


# --------------------------------------------------------------------- de-identify

#: DICOM attributes that identify a patient, an operator or an institution (a subset of
#: DICOM PS3.15's Basic Application Level Confidentiality Profile).
PHI_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex",
    "PatientAge", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs",
    "OtherPatientNames", "OtherPatientIDsSequence", "PatientMotherBirthName",
    "MedicalRecordLocator", "EthnicGroup", "PatientComments", "InstitutionName",
    "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "PhysiciansOfRecord", "RequestingPhysician", "AccessionNumber",
    "StudyID", "StationName", "DeviceSerialNumber", "StudyDate", "SeriesDate",
    "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime", "AcquisitionTime",
    "ContentTime", "AcquisitionDateTime", "StudyDescription", "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription", "PerformedProcedureStepDescription",
)
# Type 2 attributes must be present (possibly empty) in a valid file: blank them.
_BLANKED = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName",
            "AccessionNumber", "StudyID", "StudyDate", "StudyTime"}


#: UIDs under this root name DICOM's own classes and syntaxes (CT Image Storage, Explicit VR
#: Little Endian, ...): the same for every file, so they identify nobody and are kept.
_STANDARD_UID_ROOT = "1.2.840.10008."


def anonymous_uid(uid):
    """A stand-in for a DICOM UID: ``2.25.`` plus a number derived from the UID by SHA-256.

    The same UID always maps to the same stand-in (slices of a series still group, references
    between files still match), but the original cannot be read back from it. ``2.25.``
    is the DICOM root for UIDs made from a 128-bit number (PS3.5 B.2). Empty stays empty.
    """
    import hashlib  # noqa: PLC0415

    uid = str(uid).strip()
    if not uid:
        return ""
    return "2.25." + str(int.from_bytes(hashlib.sha256(uid.encode()).digest()[:16], "big"))


def deidentify(dataset):
    """A copy of a DICOM dataset without patient-identifying attributes.

    Removes (or blanks, where DICOM requires the attribute) every attribute in
    ``PHI_ATTRIBUTES``, in nested sequences too, and all private tags, which vendors use
    for anything including names, and every date and time. Instance UIDs (study, series,
    image, frame of reference, and the file meta's copy) are replaced by ``anonymous_uid``
    stand-ins, as the basic profile asks, consistently, so slices still group into series;
    DICOM's standard class and syntax UIDs are kept. Pixel data are kept as they are (text
    burned into the pixels is not removed).

    Parameters
    ----------
    dataset : pydicom.Dataset

    Returns
    -------
    pydicom.Dataset
        A new dataset; the input is not modified.
    """
    import pydicom  # noqa: PLC0415

    if not isinstance(dataset, pydicom.Dataset):
        raise ValueError(f"dataset must be a pydicom.Dataset. Received: {type(dataset).__name__}")
    clean = copy.deepcopy(dataset)

    def replace_uids(ds):
        for element in ds:
            if element.VR == "UI" and element.value:
                values = [element.value] if isinstance(element.value, str) else list(element.value)
                new = [v if str(v).startswith(_STANDARD_UID_ROOT) else anonymous_uid(v) for v in values]
                element.value = new if len(new) > 1 else new[0]

    def scrub(ds):
        ds.remove_private_tags()
        for name in PHI_ATTRIBUTES:
            if name in ds:
                if name in _BLANKED:
                    ds[name].value = ""
                else:
                    delattr(ds, name)
        # every date and time too (the profile without its "retain longitudinal temporal
        # information" option): InstanceCreationDate and the like date the visit as well
        for element in list(ds):
            if element.VR in ("DA", "DT", "TM"):
                if element.keyword in _BLANKED:
                    element.value = ""
                else:
                    del ds[element.tag]
        replace_uids(ds)
        for element in ds:
            if element.VR == "SQ":
                for item in element.value:
                    scrub(item)

    scrub(clean)
    if getattr(clean, "file_meta", None) is not None:
        replace_uids(clean.file_meta)
    clean.PatientIdentityRemoved = "YES"
    return clean


def _is_hidden(path):
    return Path(path).name.startswith(".") or Path(path).name in ("Thumbs.db", "desktop.ini")


def list_image_files(folder, inside=None):
    """Image files directly inside ``folder``, sorted, skipping hidden and system files.

    Parameters
    ----------
    folder : str or Path
    inside : str or Path, optional
        The data folder every file must stay in (default ``folder``): a symbolic link that
        points outside it is refused, so a data set cannot pull in files from elsewhere on
        the disk unnoticed.

    Returns
    -------
    (list of Path, list of Path)
        Image files, and the other (non-hidden) files that are not images.

    Raises
    ------
    ImageReadError
        ``folder`` is not a folder, or a link points outside ``inside``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a folder. Check the path")
    boundary = Path(inside if inside is not None else folder).resolve()
    images, others = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if _is_hidden(path):
            continue
        _check_link(path)
        if not entry.is_file():
            continue
        if entry.is_symlink():
            target = path.resolve()
            if target != boundary and boundary not in target.parents:
                raise ImageReadError(
                    f"{path}: a link to {target}, outside the data folder {boundary}. Copy the file into the "
                    "folder, or point to the folder the data really live in"
                )
        (images if image_suffix(path) in IMAGE_SUFFIXES else others).append(path)
    return images, others
