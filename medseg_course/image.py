"""The image object every reader returns, the suffixes the readers know, and folder listing.

``MedicalImage`` holds pixels with their geometry: spacing (mm per pixel along each array
axis) and, where the format has one, the affine to world millimetres (RAS+).
``to_slices``/``from_slices`` give every format one convention, a stack of 2D slices with
slices first, and take a label map back to the image's own grid.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["RASTER_SUFFIXES", "NIFTI_SUFFIXES", "DICOM_SUFFIXES", "IMAGE_SUFFIXES", "ImageReadError", "MedicalImage",
           "image_suffix", "list_image_files"]

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom")
#: Every file suffix ``read_image`` understands.
IMAGE_SUFFIXES = RASTER_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES


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

    # One convention for every format: a stack of 2D slices, slices first. These two methods
    # are the only places that know each format's axis order.

    def to_slices(self, array=None):
        """This image (or ``array``, laid out like its pixels) as a stack of 2D slices.

        Slices come first whatever the format: a photograph or a single DICOM image is one
        slice, a DICOM series is already ``(Z, H, W)``, and a NIfTI volume in nibabel's
        ``(i, j, k)`` order is cut along ``k``, giving ``(k, i, j)``.

        Parameters
        ----------
        array : ndarray, optional
            A label map on this image's grid (its spatial shape, no channel axis). Without
            one, the pixels.

        Returns
        -------
        ndarray
            Pixels as float32 ``(Z, H, W, C)``; ``array`` as ``(Z, H, W)``, its own dtype.
            ``slice_spacing_mm`` gives the spacing in the same order.
        """
        labels = array is not None
        data = np.asarray(self.pixels if array is None else array)
        if self.format == "nifti":
            if data.ndim == 2:
                data = data[:, :, None]  # a 2D NIfTI: one slice
            data = np.moveaxis(data, 2, 0)  # (i, j, k[, c]) -> (k, i, j[, c])
        elif self.format != "dicom-series":
            data = data[None]  # one 2D image
        if not labels:
            data = (data if data.ndim == 4 else data[..., None]).astype(np.float32)
        return data

    def from_slices(self, labels):
        """Undo ``to_slices`` for a label map ``(Z, H, W)``: the array on this image's own grid,
        in its file's axis order, ready for ``write_mask(..., like=self)``."""
        labels = np.asarray(labels)
        if self.format == "nifti":
            labels = np.moveaxis(labels, 0, 2)  # (k, i, j) -> (i, j, k)
            return labels[:, :, 0] if self.pixels.ndim == 2 else labels
        if self.format == "dicom-series":
            return labels
        return labels[0]

    @property
    def slice_spacing_mm(self):
        """``spacing_mm`` in the order of ``to_slices``: ``(z, h, w)`` for a volume, ``(h, w)``
        for one 2D image; ``None`` where the format does not say."""
        if self.spacing_mm is None:
            return None
        spacing = tuple(float(v) for v in self.spacing_mm)
        if self.format == "nifti" and len(spacing) >= 3 and self.pixels.ndim >= 3:
            return (spacing[2], spacing[0], spacing[1])
        if self.format == "dicom-series":
            return spacing[:3]
        return spacing[:2]


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


# ----------------------------------------------------------------- raster headers
# The size a PNG, JPEG, TIFF, BMP or GIF header claims, read from the bytes themselves, so
# that the readers can refuse an oversized image before any decoder allocates it.


def _jpeg_size(handle):
    """(width, height, channels) from a JPEG's start-of-frame segment."""
    handle.seek(2)
    skipped = 0
    for _ in range(100_000):
        byte = handle.read(1)
        if not byte:
            raise ValueError("no frame header before the end of the file")
        if byte != b"\xff":
            skipped += 1  # stray bytes between segments (libjpeg skips them too)
            if skipped > 65536:
                raise ValueError("no JPEG segment structure")
            continue
        marker = handle.read(1)
        while marker == b"\xff":  # fill bytes
            marker = handle.read(1)
        if not marker:
            raise ValueError("no frame header before the end of the file")
        code = marker[0]
        if code in (0x00, 0x01, 0xD8) or 0xD0 <= code <= 0xD7:  # stuffed zero, TEM, SOI, RSTn: no length
            continue
        if code in (0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack(">H", handle.read(2))
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            _, height, width, channels = struct.unpack(">BHHB", handle.read(6))
            return width, height, channels
        if length < 2:
            raise ValueError(f"a segment length of {length}")
        handle.seek(length - 2, os.SEEK_CUR)
    raise ValueError("too many segments")


def _tiff_size(handle, head):
    """(width, height, channels) from the first image directory of a TIFF or BigTIFF."""
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")
    count_format, entry_size, offset_format = ("Q", 20, "Q") if big else ("H", 12, "I")
    (offset,) = struct.unpack(order + offset_format, head[8:16] if big else head[4:8])
    handle.seek(offset)
    (count,) = struct.unpack(order + count_format, handle.read(struct.calcsize(count_format)))
    if count > 4096:
        raise ValueError(f"an image directory of {count} entries")
    entries = handle.read(count * entry_size)
    tags = {}
    for i in range(count):
        entry = entries[i * entry_size : (i + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        value = entry[12:] if big else entry[8:]
        if kind == 3:  # SHORT
            tags[tag] = struct.unpack(order + "H", value[:2])[0]
        elif kind == 4:  # LONG
            tags[tag] = struct.unpack(order + "I", value[:4])[0]
        elif kind == 16 and big:  # LONG8
            tags[tag] = struct.unpack(order + "Q", value[:8])[0]
    if 256 not in tags or 257 not in tags:
        raise ValueError("no image width or length in the TIFF header")
    return tags[256], tags[257], tags.get(277, 1)


def _raster_size(path):
    """(format, width, height, channels) as the header of a PNG, JPEG, TIFF, BMP or GIF file says
    (read from the contents, not the suffix); ``None`` for other contents. Raises
    ``ValueError``, ``struct.error`` or ``OSError`` for a header that is cut short or damaged."""
    with open(path, "rb") as handle:
        head = handle.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            if head[12:16] != b"IHDR":
                raise ValueError("the PNG header (IHDR) is missing")
            width, height, _, colour = struct.unpack(">IIBB", head[16:26])
            return "PNG", width, height, {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 4)
        if head.startswith(b"\xff\xd8"):
            return ("JPEG", *_jpeg_size(handle))
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return ("TIFF", *_tiff_size(handle, head))
        if head.startswith(b"BM"):
            (info_size,) = struct.unpack("<I", head[14:18])
            if info_size == 12:  # OS/2 BITMAPCOREHEADER
                width, height, _, bits = struct.unpack("<HHHH", head[18:26])
            else:
                width, height, _, bits = struct.unpack("<iiHH", head[18:30])
            return "BMP", abs(width), abs(height), 4 if bits == 32 else 3
        if head[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack("<HH", head[6:10])
            return "GIF", width, height, 3
    return None


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
