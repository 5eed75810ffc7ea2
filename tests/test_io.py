
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medseg_course import io

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")


def test_ct_sample_in_hounsfield_units():
    image = io.read_image(CT)
    assert image.format == "dicom" and image.metadata["units"] == "HU"
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (128, 128)
    raw = pydicom.dcmread(CT).pixel_array
    np.testing.assert_allclose(image.pixels, raw * 1.0 - 1024)  # slope 1, intercept -1024
    low, median, high = np.percentile(image.pixels, [1, 50, 99.9])
    assert -1000 < low < -800  # air (with noise)
    assert -100 < median < 100  # soft tissue / water
    assert 300 < high < 3000  # bone
    assert image.spacing_mm == pytest.approx((0.661468, 0.661468))
    assert image.metadata["slice_thickness_mm"] == 5.0


def test_dicom_affine_places_pixels_in_world_coordinates():
    image = io.read_dicom(CT)
    ds = pydicom.dcmread(CT)
    # pixel (0, 0) is at ImagePositionPatient, LPS -> RAS flips x and y
    x, y, z = np.asarray(ds.ImagePositionPatient, float)
    np.testing.assert_allclose(image.affine @ [0, 0, 0, 1], [-x, -y, z, 1])
    step = image.affine @ [1, 0, 0, 1] - image.affine @ [0, 0, 0, 1]
    assert np.linalg.norm(step[:3]) == pytest.approx(0.661468)


def test_dicom_series_sorted_by_position(tmp_path):
    ds = pydicom.dcmread(CT)
    order = [2, 0, 1]  # written out of order, with misleading instance numbers
    for file_index, slice_index in enumerate(order):
        item = ds.copy()
        item.ImagePositionPatient = [0.0, 0.0, 10.0 + 2.5 * slice_index]
        item.InstanceNumber = file_index + 1
        arr = ds.pixel_array.copy()
        arr[0, 0] = slice_index
        item.PixelData = arr.tobytes()
        item.save_as(tmp_path / f"img{file_index}.dcm")
    (tmp_path / "README.txt").write_text("not dicom")
    volume = io.read_image(tmp_path)
    assert volume.format == "dicom-series" and volume.pixels.shape == (3, 128, 128)
    np.testing.assert_allclose(volume.pixels[:, 0, 0], np.array([0, 1, 2]) - 1024)
    assert volume.spacing_mm[0] == pytest.approx(2.5)
    np.testing.assert_allclose((volume.affine @ [1, 0, 0, 1])[2] - (volume.affine @ [0, 0, 0, 1])[2], 2.5)


def test_dicom_series_errors(tmp_path):
    with pytest.raises(io.ImageReadError, match="no DICOM images"):
        io.read_dicom_series(tmp_path)
    ds = pydicom.dcmread(CT)
    ds.save_as(tmp_path / "a.dcm")
    ds.save_as(tmp_path / "b.dcm")
    with pytest.raises(io.ImageReadError, match="share a position"):
        io.read_dicom_series(tmp_path)


def test_dicom_without_pixels_and_truncated(tmp_path):
    ds = pydicom.dcmread(CT)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(io.ImageReadError, match="no pixel data"):
        io.read_image(tmp_path / "nopix.dcm")
    data = open(CT, "rb").read()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 3])
    with pytest.raises(io.ImageReadError, match="cut.dcm"):
        io.read_image(tmp_path / "cut.dcm")


def test_nifti_roundtrip_keeps_affine(tmp_path):
    affine = np.array([[-0.8, 0, 0, 90], [0, 0.8, 0, -120], [0, 0, 2.5, -60], [0, 0, 0, 1]])
    volume = np.random.default_rng(0).random((10, 12, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "img.nii.gz")
    image = io.read_image(tmp_path / "img.nii.gz")
    assert image.spacing_mm == pytest.approx((0.8, 0.8, 2.5))
    assert image.metadata["orientation"] == "LAS"
    mask = (image.pixels > 0.5).astype(np.uint8)
    out = io.write_mask(mask, tmp_path / "mask.nii.gz", like=image)
    written = nib.load(out)
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), mask)
    canonical = io.read_nifti(tmp_path / "img.nii.gz", canonical=True)
    assert canonical.metadata["orientation"] == "RAS"
    np.testing.assert_allclose(canonical.pixels, volume[::-1])


def test_mask_of_dicom_slice_written_as_aligned_nifti(tmp_path):
    image = io.read_dicom(CT)
    mask = (image.pixels > 0).astype(np.uint8)
    written = nib.load(io.write_mask(mask, tmp_path / "ct_mask.nii.gz", like=image))
    np.testing.assert_allclose(written.affine, image.affine)
    assert written.shape == (128, 128, 1)


def test_corrupt_nan_and_empty_nifti(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "ok.nii")
    data = (tmp_path / "ok.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:200])
    with pytest.raises(io.ImageReadError, match="cut.nii: not a readable NIfTI"):
        io.read_image(tmp_path / "cut.nii")
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), np.nan, np.float32), np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(io.ImageReadError, match=r"8 voxel\(s\) are NaN"):
        io.read_image(tmp_path / "nan.nii")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(io.ImageReadError, match="empty"):
        io.read_image(tmp_path / "empty.nii.gz")


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".jpg"])
def test_raster_grey_colour_and_16_bit(tmp_path, suffix):
    import cv2

    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (25, 1))
    cv2.imwrite(str(tmp_path / f"g{suffix}"), grey)
    read = io.read_image(tmp_path / f"g{suffix}")
    assert read.pixels.shape == (25, 25) and read.spacing_mm is None
    if suffix != ".jpg":
        np.testing.assert_array_equal(read.pixels, grey)
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / f"c{suffix}"), rgb[..., ::-1])  # OpenCV writes BGR
    colour = io.read_image(tmp_path / f"c{suffix}")
    assert colour.is_colour and colour.pixels[0, 0, 0] > 150 and colour.pixels[0, 0, 2] < 50
    if suffix in (".png", ".tif"):
        deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
        cv2.imwrite(str(tmp_path / f"d{suffix}"), deep)
        read16 = io.read_image(tmp_path / f"d{suffix}")
        assert read16.pixels.dtype == np.uint16 and read16.metadata["bit_depth"] == 16
        np.testing.assert_array_equal(read16.pixels, deep)


def test_gif(tmp_path):
    from PIL import Image

    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:5] = 255
    Image.fromarray(mask).save(tmp_path / "m.gif")
    np.testing.assert_array_equal(io.read_image(tmp_path / "m.gif").pixels, mask)


def test_truncated_png_and_unknown_type(tmp_path):
    io.write_png(np.eye(16), tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:30])
    with pytest.raises(io.ImageReadError, match="cut.png"):
        io.read_image(tmp_path / "cut.png")
    (tmp_path / "notes.xyz").write_text("x")
    with pytest.raises(io.ImageReadError, match="unsupported file type .xyz"):
        io.read_image(tmp_path / "notes.xyz")
    with pytest.raises(io.ImageReadError, match="no such file"):
        io.read_image(tmp_path / "missing.png")


def test_png_writer_binary_labels_and_no_overwrite(tmp_path):
    mask = np.zeros((6, 6), np.uint8)
    mask[1:3, 1:3] = 1
    path = io.write_png(mask, tmp_path / "m.png")
    assert set(np.unique(io.read_image(path).pixels)) == {0, 255}
    labels = np.array([[0, 1], [2, 3]], np.uint8)
    np.testing.assert_array_equal(io.read_image(io.write_png(labels, tmp_path / "l.png")).pixels, labels)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        io.write_png(mask, path)
    io.write_png(mask * 0, path, overwrite=True)
    assert io.read_image(path).pixels.max() == 0


def test_non_ascii_file_name(tmp_path):
    path = io.write_png(np.eye(4), tmp_path / "脑_mask.png")
    assert io.read_image(path).pixels.shape == (4, 4)


def test_write_nifti_shape_mismatch(tmp_path):
    image = io.read_dicom(CT)
    with pytest.raises(ValueError, match="does not match"):
        io.write_nifti(np.zeros((64, 64), np.uint8), tmp_path / "m.nii.gz", like=image)


@pytest.mark.parametrize("sample", [CT, MR])
def test_deidentify_removes_identifiers(sample):
    original = pydicom.dcmread(sample)
    name_before = str(original.PatientName)
    assert name_before  # the samples carry a (fake) patient name
    clean = io.deidentify(original)
    assert str(original.PatientName) == name_before  # input untouched
    assert str(clean.PatientName) == "" and clean.PatientID == ""
    for attribute in ("InstitutionName", "PatientBirthDate", "OperatorsName", "ReferringPhysicianName"):
        assert not str(clean.get(attribute, "")), attribute
    assert not any(element.tag.is_private for element in clean.iterall())
    assert clean.PatientIdentityRemoved == "YES"
    np.testing.assert_array_equal(clean.pixel_array, original.pixel_array)
    # instance UIDs replaced by consistent stand-ins (the file meta's copy too); class UIDs kept
    assert clean.SeriesInstanceUID == io.anonymous_uid(original.SeriesInstanceUID) != original.SeriesInstanceUID
    assert clean.SOPInstanceUID == clean.file_meta.MediaStorageSOPInstanceUID != original.SOPInstanceUID
    assert clean.SOPClassUID == original.SOPClassUID and clean.SOPClassUID.startswith("1.2.840.10008.")
    assert str(original.StudyInstanceUID) not in str(clean)
