"""mc.inference.segment is what medseg-course predict does: the same masks on the input grid."""

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medseg_course as mc


def _nifti_volume(path):
    """Three 48x40 phantom slices in nibabel's (i, j, k) order, 0.8 x 0.9 x 2.5 mm, shifted and
    rotated, so any axis or spacing mix-up shows in the mask or the affine."""
    images = mc.data.make_phantoms(3, image_size=48, seed=11)[0][..., 0]
    volume = np.stack([im[:, 4:44] for im in images], axis=-1) * 300.0
    rotate = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotate @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [12.0, -30.0, 5.0]
    nib.Nifti1Image(volume.astype(np.int16), affine).to_filename(path)
    return path


def _dicom_series(folder):
    """Three 128x128 CT slices (phantoms in HU), written out of order."""
    folder.mkdir()
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    images = mc.data.make_phantoms(3, image_size=128, seed=12)[0][..., 0]
    for file_index, slice_index in enumerate([1, 2, 0]):
        item = template.copy()
        item.ImagePositionPatient = [0.0, 0.0, 10.0 + 3.0 * slice_index]
        item.InstanceNumber = file_index + 1
        item.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1143.{slice_index + 1}"
        item.PixelData = (images[slice_index] * 1500).astype(np.int16).tobytes()
        item.save_as(folder / f"slice{file_index}.dcm")
    return folder


@pytest.mark.parametrize("kind", ["nifti", "dicom-series"])
def test_segment_equals_predict_on_the_input_grid(tiny_run, tmp_path, kind):
    (tmp_path / "input").mkdir()  # a folder of inputs: files, and a sub-folder per DICOM series
    source = (_nifti_volume(tmp_path / "input" / "case.nii.gz") if kind == "nifti"
              else _dicom_series(tmp_path / "input" / "case"))
    out = tmp_path / "pred"
    code = mc.cli.main(["predict", "--model", str(tiny_run / "model.keras"), "--input", str(tmp_path / "input"),
                        "--out", str(out)])
    assert code == 0
    written = mc.io.read_image(out / "case_mask.nii.gz")

    model, config = mc.inference.load_run(tiny_run)
    image = mc.io.read_image(source)
    assert image.format == kind
    mask = mc.inference.segment(model, image, config)
    assert mask.dtype == np.uint8 and mask.shape == image.pixels.shape[:3]
    assert mask.any() and not mask.all()  # a real segmentation, not a constant
    np.testing.assert_array_equal(written.pixels, mask)  # the same labels, in the same axis order
    np.testing.assert_allclose(written.affine, image.affine, atol=1e-4)  # on the input's grid
    np.testing.assert_array_equal(mc.inference.segment(model, source, config), mask)  # a path works too


def test_to_slices_and_back_for_every_layout(tmp_path):
    nifti = mc.io.read_image(_nifti_volume(tmp_path / "v.nii.gz"))
    series = mc.io.read_image(_dicom_series(tmp_path / "s"))
    photo = mc.io.MedicalImage(np.zeros((20, 30, 3), np.uint8), format="raster")
    for image, slices_shape, spacing in ((nifti, (3, 48, 40, 1), (2.5, 0.8, 0.9)),
                                         (series, (3, 128, 128, 1), (3.0, 0.661468, 0.661468)),
                                         (photo, (1, 20, 30, 3), None)):
        slices = image.to_slices()
        assert slices.shape == slices_shape and slices.dtype == np.float32
        assert image.slice_spacing_mm == (None if spacing is None else pytest.approx(spacing))
        labels = (slices[..., 0] > slices[..., 0].mean()).astype(np.uint8)
        back = image.from_slices(labels)
        assert back.shape == image.pixels.shape[:3 if image.format != "raster" else 2]
        np.testing.assert_array_equal(image.to_slices(back), labels)
    # slice k of the NIfTI volume is slice k of the stack
    np.testing.assert_array_equal(nifti.to_slices()[1, ..., 0], nifti.pixels[:, :, 1])
    assert json.dumps(nifti.slice_spacing_mm)  # plain floats
