"""No patient identifier from a DICOM file reaches a figure, an output file or a notebook.

The identifiers are those of pydicom's sample files the course uses (CT_small.dcm and
MR_small.dcm carry a fake patient name, ID, dates, institution and instance UIDs). They are
looked for in what the package returns (``MedicalImage`` and its metadata), in everything
``medseg-course predict`` writes for a DICOM image and a DICOM series (the NIfTI masks,
decompressed, their headers, the overlay figures, stdout), in a de-identified file written
back as DICOM, and in every committed notebook of the book.
"""

import gzip
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medseg_course as mc

SAMPLES = [get_testdata_file("CT_small.dcm"), get_testdata_file("MR_small.dcm")]
BOOK = Path(__file__).resolve().parents[1] / "book"


def identifiers():
    """Identifying values in the samples: the basic profile's attributes and instance UIDs."""
    found, public = set(), set()
    for sample in SAMPLES:
        for element in pydicom.dcmread(sample).iterall():
            identifying = element.keyword in mc.io.PHI_ATTRIBUTES or element.VR in ("DA", "DT", "TM") or (
                element.VR == "UI" and not str(element.value).startswith("1.2.840.10008.")
            )
            value = str(element.value).strip()
            if not identifying:
                public.add(value)  # e.g. Manufacturer "TOSHIBA_MEC"; "TOSHIBA" is also an InstitutionName
            # skip values too generic to identify anyone (and to search for): "----", "000000000"
            elif len(value) >= 4 and len(set(value) - {"0", "-", " ", "^"}) >= 2:
                found.add(value)
                if element.VR == "PN":
                    found.update(part for part in value.split("^") if len(part) >= 4)
    return {value for value in found if not any(value in other for other in public)}


IDENTIFIERS = identifiers()


def leaks(data):
    text = data.decode("latin-1") if isinstance(data, bytes) else str(data)
    return sorted(value for value in IDENTIFIERS if value in text)


def test_the_samples_do_carry_identifiers():
    assert {"CompressedSamples^CT1", "1234ABCD", "JFK IMAGING CENTER", "20040119"} <= IDENTIFIERS
    assert any(value.startswith("1.3.6.1.4.1.5962.1.3.") for value in IDENTIFIERS)  # a series UID


@pytest.mark.parametrize("sample", SAMPLES)
def test_read_image_returns_no_identifier(sample):
    image = mc.io.read_image(sample)
    assert image.metadata["deidentified"] is True
    assert leaks(repr(image.metadata)) == [] and leaks(repr(image)) == []


def test_deidentified_file_written_as_dicom_keeps_no_identifier(tmp_path):
    for sample in SAMPLES:
        clean = mc.io.deidentify(pydicom.dcmread(sample))
        target = tmp_path / Path(sample).name
        clean.save_as(target)
        assert leaks(target.read_bytes()) == []
        np.testing.assert_array_equal(pydicom.dcmread(target).pixel_array, pydicom.dcmread(sample).pixel_array)


def test_predict_outputs_keep_no_identifier(tiny_run, tmp_path, capsys):
    series = tmp_path / "series"
    series.mkdir()
    source = pydicom.dcmread(SAMPLES[0])
    for index in range(3):
        item = source.copy()
        item.ImagePositionPatient = [0.0, 0.0, 5.0 * index]
        item.SOPInstanceUID = f"{source.SOPInstanceUID}.{index}"
        item.save_as(series / f"slice{index}.dcm")
    outputs = []
    for label, source_path in (("one image", SAMPLES[1]), ("one series", series)):
        out = tmp_path / "out" / label.replace(" ", "_")
        code = mc.cli.main(["predict", "--model", str(tiny_run), "--input", str(source_path), "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert leaks(captured.out + captured.err) == []
        for path in sorted(out.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                assert leaks(data) == [], path
                if path.name.endswith(".gz"):
                    assert leaks(gzip.decompress(data)) == [], path
                outputs.append(path.name)
    assert any(name.endswith("_mask.nii.gz") for name in outputs) and any(name.endswith(".png") for name in outputs)


@pytest.mark.parametrize("notebook", sorted(BOOK.glob("*.ipynb")), ids=lambda p: p.name)
def test_saved_notebooks_keep_no_identifier(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    assert leaks(json.dumps(cells)) == []
