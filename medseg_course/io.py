"""Medical image I/O: pixels together with their geometry (one name space over ``image``,
``readers``, ``writers`` and ``deidentification``).

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

``MedicalImage.to_slices()`` puts every format in one convention, a stack of 2D slices with
slices first (NIfTI's ``k`` axis, a DICOM series' slice axis; one slice for a 2D image), and
``slice_spacing_mm`` gives the spacing in that order; ``from_slices`` takes a label map back
to the image's own grid for the writers. Errors are ``ImageReadError`` (a ``ValueError``)
with one line naming the file, what is wrong and how to fix it, whatever the decoders raise on
a damaged or hostile file; images whose header claims more than ``MAX_PIXELS`` values are
refused before decoding (raise ``medseg_course.readers.MAX_PIXELS`` for larger ones).
"""

from medseg_course.deidentification import PHI_ATTRIBUTES, anonymous_uid, deidentify
from medseg_course.image import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    RASTER_SUFFIXES,
    ImageReadError,
    MedicalImage,
    image_suffix,
    list_image_files,
)
from medseg_course.readers import MAX_PIXELS, read_dicom, read_dicom_series, read_image, read_nifti
from medseg_course.writers import write_mask, write_nifti, write_png

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "RASTER_SUFFIXES",
    "NIFTI_SUFFIXES",
    "DICOM_SUFFIXES",
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
