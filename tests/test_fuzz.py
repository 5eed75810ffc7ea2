"""Fuzz the image readers and the CLI with mutated copies of valid files.

Small valid seeds (PNG 8 and 16 bit, RGB PNG, JPEG, TIFF compressed and not, BMP, GIF,
NIfTI ``.nii`` and ``.nii.gz``, pydicom's CT and MR samples) are mutated deterministically
(one NumPy generator per seed, fixed seed): truncated at several offsets, random bits
flipped, and header fields set to extreme values with the checksums recomputed where the
format has them (PNG CRC, gzip), so the decoder believes the header. Every mutant either
reads or raises ``ImageReadError`` with one line that names the file, and a file that reads
has finite pixels, spacing and affine. Through the CLI, in-process: every header mutant and
four truncations or bit flips of each seed as the predicted mask of ``evaluate``, and one
readable mutant per file type through ``predict`` with a tiny model. Each must exit 0 or 2
with at most one line on stderr (file descriptor 2, so the C libraries' own messages count),
naming the file, with no "internal error" and no traceback.

``python -m pytest tests/test_fuzz.py -s`` prints how many mutants each seed had and how
many of them read.
"""

from __future__ import annotations

import gzip
import io as pyio
import struct
import warnings
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medseg_course as mc
from medseg_course.io import ImageReadError

SEED = 20240607
BIT_FLIP_MUTANTS = 16  # per seed file
TRUNCATIONS = (1, 7, 8, 16, 30, 100, 0.25, 0.5, 0.9, -1)  # byte offsets, fractions of the length, or from the end
INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------- seeds


def _grey(size=32):
    yy, xx = np.mgrid[:size, :size]
    return ((xx * 7 + yy * 3) % 256).astype(np.uint8)


def _mask(size=32):
    yy, xx = np.mgrid[:size, :size]
    return (((yy - 14) ** 2 + (xx - 17) ** 2 < 80) * 255).astype(np.uint8)


def _encode(suffix, array):
    cv2 = mc.utils.import_cv2()
    ok, data = cv2.imencode(suffix, array)
    assert ok
    return data.tobytes()


def _pil_bytes(array, fmt, **options):
    from PIL import Image

    buffer = pyio.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _nifti_bytes(array, gz):
    image = nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.5, 1.0]))
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def seeds():
    """name -> (file suffix, bytes). Masks (0/255, labels) for the evaluate subset, images elsewhere."""
    mask = _mask()
    rgb = np.dstack([_grey(), _grey()[::-1], mask])
    volume = np.random.default_rng(1).random((16, 16, 6)).astype(np.float32)
    labels = np.zeros((16, 16, 6), np.uint8)
    labels[4:12, 5:11, 1:5] = 1
    return {
        "mask8": (".png", _encode(".png", mask)),
        "grey16": (".png", _encode(".png", _grey().astype(np.uint16) * 257)),
        "rgb": (".png", _encode(".png", rgb)),
        "mask_jpeg": (".jpg", _encode(".jpg", mask)),
        "rgb_jpeg": (".jpg", _encode(".jpg", rgb)),
        "mask_lzw": (".tif", _encode(".tif", mask)),
        "mask_raw": (".tif", _pil_bytes(mask, "TIFF")),
        "mask_bmp": (".bmp", _encode(".bmp", mask)),
        "mask_gif": (".gif", _pil_bytes(mask, "GIF")),
        "volume": (".nii", _nifti_bytes(volume, gz=False)),
        "labels": (".nii.gz", _nifti_bytes(labels, gz=True)),
        "ct": (".dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes()),
        "mr": (".dcm", Path(get_testdata_file("MR_small.dcm")).read_bytes()),
    }


# ----------------------------------------------------------------------- mutations


def truncations(data):
    out = {}
    for cut in TRUNCATIONS:
        end = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
        if 0 < end < len(data):
            out[f"cut{end}"] = data[:end]
    return out


def bit_flips(data, rng, skip=0):
    """Mutants with 1 to 8 random bits flipped (after the first ``skip`` bytes, biased to the header)."""
    out = {}
    for i in range(BIT_FLIP_MUTANTS):
        buffer = bytearray(data)
        span = min(len(data), 512) if i % 2 == 0 else len(data)  # every other mutant hits the header
        for _ in range(int(rng.integers(1, 9))):
            position = int(rng.integers(skip, max(skip + 1, span)))
            buffer[position] ^= 1 << int(rng.integers(0, 8))
        out[f"flip{i}"] = bytes(buffer)
    return out


def png_headers(data):
    """IHDR fields set to extreme values, with the chunk CRC recomputed."""

    def ihdr(**fields):
        buffer = bytearray(data)
        width, height, depth, colour, compression, filt, interlace = struct.unpack(">IIBBBBB", data[16:29])
        values = {"width": width, "height": height, "depth": depth, "colour": colour, "compression": compression,
                  "filter": filt, "interlace": interlace, **fields}
        buffer[16:29] = struct.pack(">IIBBBBB", *values.values())
        buffer[29:33] = struct.pack(">I", zlib.crc32(bytes(buffer[12:29])))
        return bytes(buffer)

    fields = [  # (name, IHDR fields set)
        ("width_max", {"width": INT32_MAX}),
        ("height_max", {"height": INT32_MAX}),
        ("both_max", {"width": INT32_MAX, "height": INT32_MAX}),
        ("both_65535", {"width": 65535, "height": 65535}),
        ("width_zero", {"width": 0}),
        ("wide_strip", {"width": 2**20 + 1, "height": 1}),
        ("depth_3", {"depth": 3}),
        ("depth_16", {"depth": 16}),
        ("colour_5", {"colour": 5}),
        ("colour_palette", {"colour": 3}),
        ("compression_1", {"compression": 1}),
        ("interlace_7", {"interlace": 7}),
        ("height_bigger", {"height": 40}),
    ]
    return {name: ihdr(**changed) for name, changed in fields}


def jpeg_headers(data):
    """Start-of-frame fields set to extreme values."""
    position = 2
    while data[position + 1] not in (0xC0, 0xC1, 0xC2):
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]

    def sof(offset, fmt, value):
        buffer = bytearray(data)
        struct.pack_into(fmt, buffer, position + offset, value)
        return bytes(buffer)

    return {
        "height_65535_width_65535": sof(5, ">I", (65535 << 16) | 65535),
        "height_zero": sof(5, ">H", 0),
        "width_zero": sof(7, ">H", 0),
        "precision_16": sof(4, ">B", 16),
        "precision_12": sof(4, ">B", 12),
        "components_0": sof(9, ">B", 0),
        "components_255": sof(9, ">B", 255),
        "sampling_0": sof(11, ">B", 0),
        "sampling_ff": sof(11, ">B", 0xFF),
        "quant_table_3": sof(12, ">B", 3),
        "segment_length_0": sof(2, ">H", 0),
        "segment_length_max": sof(2, ">H", 65535),
    }


def _tiff_entries(data):
    (ifd,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    return {struct.unpack("<H", data[ifd + 2 + 12 * i : ifd + 4 + 12 * i])[0]: ifd + 2 + 12 * i for i in range(count)}


def tiff_headers(data):
    """First-IFD tags (little-endian TIFF) set to extreme values; SHORT tags become LONG where needed."""
    assert data[:4] == b"II*\x00"
    entries = _tiff_entries(data)

    def tag(number, value, kind=4):
        buffer = bytearray(data)
        if number not in entries:
            return None
        entry = entries[number]
        struct.pack_into("<HHII", buffer, entry, number, kind, 1, 0)
        struct.pack_into("<I" if kind == 4 else "<H", buffer, entry + 8, value)
        return bytes(buffer)

    mutants = {
        "width_max": tag(256, 2**32 - 1),
        "width_int32_max": tag(256, INT32_MAX),
        "length_max": tag(257, 2**32 - 1),
        "width_1M": tag(256, 2**20),
        "width_zero": tag(256, 0),
        "bits_3": tag(258, 3, kind=3),
        "bits_64": tag(258, 64, kind=3),
        "compression_unknown": tag(259, 12345, kind=3),
        "photometric_9": tag(262, 9, kind=3),
        "strip_offset_beyond": tag(273, 2**31),
        "samples_0": tag(277, 0, kind=3),
        "samples_65535": tag(277, 65535, kind=3),
        "rows_per_strip_0": tag(278, 0),
        "strip_bytes_max": tag(279, 2**32 - 1),
        "ifd_offset_beyond": data[:4] + struct.pack("<I", 2**31) + data[8:],
        "ifd_offset_loop": data[:4] + struct.pack("<I", 0) + data[8:],
    }
    return {name: value for name, value in mutants.items() if value is not None}


def bmp_headers(data):
    def field(offset, fmt, *values):
        buffer = bytearray(data)
        struct.pack_into(fmt, buffer, offset, *values)
        return bytes(buffer)

    return {
        "width_max": field(18, "<i", INT32_MAX),
        "height_min": field(22, "<i", -(2**31)),
        "both_65535": field(18, "<ii", 65535, 65535),
        "bits_0": field(28, "<H", 0),
        "bits_64": field(28, "<H", 64),
        "compression_99": field(30, "<I", 99),
        "data_offset_beyond": field(10, "<I", 2**31),
        "palette_colours_max": field(46, "<I", 2**32 - 1),
    }


def gif_headers(data):
    def field(offset, fmt, value):
        buffer = bytearray(data)
        struct.pack_into(fmt, buffer, offset, value)
        return bytes(buffer)

    descriptor = data.index(b"\x2c")  # the first image descriptor (after the colour table)
    return {
        "screen_65535": field(6, "<I", 0xFFFFFFFF),
        "screen_zero": field(6, "<I", 0),
        "frame_65535": field(descriptor + 5, "<I", 0xFFFFFFFF),
        "frame_offset_max": field(descriptor + 1, "<I", 0xFFFFFFFF),
        "lzw_code_size_12": field(descriptor + 10, "<B", 12),
    }


def nifti_headers(raw):
    """Header fields of an uncompressed NIfTI-1 set to extreme values (the caller re-gzips)."""

    def field(offset, fmt, *values):
        buffer = bytearray(raw)
        struct.pack_into(fmt, buffer, offset, *values)
        return bytes(buffer)

    dim = lambda *values: field(40, "<8h", *values)  # noqa: E731
    nan, inf = float("nan"), float("inf")
    return {
        "dim_huge": dim(3, 32767, 32767, 32767, 1, 1, 1, 1),
        "dim_4d_huge": dim(4, 16, 16, 6, 32767, 1, 1, 1),
        "dim_negative": dim(3, -16, 16, 6, 1, 1, 1, 1),
        "dim_zero": dim(3, 16, 0, 6, 1, 1, 1, 1),
        "ndim_zero": dim(0, 16, 16, 6, 1, 1, 1, 1),
        "ndim_one": dim(1, 16, 16, 6, 1, 1, 1, 1),
        "ndim_eight": dim(8, 16, 16, 6, 1, 1, 1, 1),
        "ndim_negative": dim(-3, 16, 16, 6, 1, 1, 1, 1),
        "ndim_huge": dim(32767, 16, 16, 6, 1, 1, 1, 1),
        "dim_5d": dim(5, 16, 16, 3, 1, 2, 1, 1),
        "datatype_0": field(70, "<h", 0),
        "datatype_invalid": field(70, "<h", 9999),
        "datatype_binary": field(70, "<h", 1),
        "datatype_rgb24": field(70, "<h", 128),
        "datatype_rgba32": field(70, "<h", 2304),
        "datatype_complex64": field(70, "<h", 32),
        "datatype_float128": field(70, "<h", 1536),
        "datatype_float64": field(70, "<h", 64),
        "bitpix_zero": field(72, "<h", 0),
        "pixdim_nan": field(80, "<3f", nan, nan, nan),
        "pixdim_zero": field(80, "<3f", 0, 0, 0),
        "pixdim_inf": field(80, "<3f", inf, -inf, 1e38),
        "vox_offset_beyond": field(108, "<f", 1e9),
        "vox_offset_huge": field(108, "<f", 1e30),
        "vox_offset_negative": field(108, "<f", -352),
        "vox_offset_nan": field(108, "<f", nan),
        "vox_offset_in_header": field(108, "<f", 0),
        "slope_nan": field(112, "<2f", nan, 0),
        "slope_inf": field(112, "<2f", inf, 0),
        "slope_huge": field(112, "<2f", 3e38, 3e38),
        "sizeof_hdr_zero": field(0, "<i", 0),
        "sizeof_hdr_nifti2": field(0, "<i", 540),
        "sizeof_hdr_swapped": field(0, ">i", 348),
        "magic_ni1": field(344, "<4s", b"ni1\x00"),
        "magic_n2": field(344, "<4s", b"n+2\x00"),
        "magic_garbage": field(344, "<4s", b"\xff\xff\xff\xff"),
        "qform_nan": field(252, "<hh9f", 1, 0, nan, nan, nan, nan, nan, nan, 1, 1, 1),
        "sform_inf": field(252, "<hh", 0, 2)[:280] + struct.pack("<12f", *([inf] * 12)) + raw[328:],
        "sform_singular": field(252, "<hh", 0, 2)[:280] + bytes(48) + raw[328:],
        "intent_label_code_max": field(68, "<h", 32767),
        "xyzt_units_garbage": field(123, "<B", 0xFF),
    }


def dicom_headers(path):
    """Data elements of a DICOM file set to extreme or invalid values (written without validation)."""
    from pydicom import config

    def variant(change):
        ds = pydicom.dcmread(path)
        texts = change(ds) or {}
        buffer = pyio.BytesIO()
        previous = config.settings.writing_validation_mode
        config.settings.writing_validation_mode = config.IGNORE
        try:
            ds.save_as(buffer, enforce_file_format=False)
        finally:
            config.settings.writing_validation_mode = previous
        data = buffer.getvalue()
        for placeholder, text in texts.items():  # invalid text pydicom refuses to set: patch the bytes
            assert data[: data.index(b"\xe0\x7f\x10\x00")].count(placeholder) == 1, placeholder  # before PixelData
            data = data.replace(placeholder, text, 1)
        return data

    def setter(**values):
        def change(ds):
            for name, value in values.items():
                setattr(ds, name, value)
        return change

    def text(**values):
        """String elements set to invalid text, written as a valid placeholder of the same length and patched."""
        def change(ds):
            patches = {}
            for name, value in values.items():
                value = value + " " * (len(value) % 2)
                placeholder = "".join("7" if c not in "\\ " else c for c in value)
                setattr(ds, name, placeholder.strip())
                patches[placeholder.encode()] = value.encode()
            return patches
        return change

    def pixel_data(fraction):
        def change(ds):
            ds.PixelData = ds.PixelData[: int(len(ds.PixelData) * fraction)]
        return change

    def syntax(uid):
        """The file meta's TransferSyntaxUID replaced in the bytes (pydicom would re-encode the pixels)."""
        data = variant(lambda ds: None)
        tag = data.index(b"\x02\x00\x10\x00UI")
        (length,) = struct.unpack("<H", data[tag + 6 : tag + 8])
        value = uid.encode() + b"\x00" * (len(uid) % 2)
        data = data[: tag + 6] + struct.pack("<H", len(value)) + value + data[tag + 8 + length :]
        group = data.index(b"\x02\x00\x00\x00UL\x04\x00") + 8
        (group_length,) = struct.unpack("<I", data[group : group + 4])
        return data[:group] + struct.pack("<I", group_length + len(value) - length) + data[group + 4 :]

    def drop(name):
        def change(ds):
            delattr(ds, name)
        return change

    variants = {
        "rows_cols_65535": setter(Rows=65535, Columns=65535),
        "rows_65535": setter(Rows=65535),
        "rows_zero": setter(Rows=0),
        "columns_zero": setter(Columns=0),
        "bits_allocated_1": setter(BitsAllocated=1),
        "bits_allocated_7": setter(BitsAllocated=7),
        "bits_allocated_12": setter(BitsAllocated=12),
        "bits_allocated_24": setter(BitsAllocated=24),
        "bits_allocated_33": setter(BitsAllocated=33),
        "bits_allocated_64": setter(BitsAllocated=64),
        "bits_allocated_0": setter(BitsAllocated=0),
        "bits_stored_above_allocated": setter(BitsStored=40, HighBit=39),
        "pixel_representation_2": setter(PixelRepresentation=2),
        "samples_0": setter(SamplesPerPixel=0),
        "samples_3": setter(SamplesPerPixel=3),
        "samples_65535": setter(SamplesPerPixel=65535),
        "photometric_rgb": setter(PhotometricInterpretation="RGB"),
        "photometric_palette": setter(PhotometricInterpretation="PALETTE COLOR"),
        "photometric_ybr422": setter(PhotometricInterpretation="YBR_FULL_422"),
        "photometric_empty": setter(PhotometricInterpretation=""),
        "frames_huge": setter(NumberOfFrames=INT32_MAX),
        "frames_zero": setter(NumberOfFrames=0),
        "frames_negative": setter(NumberOfFrames=-5),
        "frames_text": text(NumberOfFrames="abc"),
        "frames_two": setter(NumberOfFrames=2),
        "pixel_data_half": pixel_data(0.5),
        "pixel_data_odd": pixel_data(0.999),
        "pixel_data_empty": pixel_data(0.0),
        "syntax_jpeg2000": syntax("1.2.840.10008.1.2.4.90"),
        "syntax_jpeg_baseline": syntax("1.2.840.10008.1.2.4.50"),
        "syntax_rle": syntax("1.2.840.10008.1.2.5"),
        "syntax_deflate": syntax("1.2.840.10008.1.2.1.99"),
        "syntax_big_endian": syntax("1.2.840.10008.1.2.2"),
        "syntax_unknown": syntax("1.2.3.4.5"),
        "syntax_empty": syntax(""),
        "slope_text": text(RescaleSlope="abc"),
        "slope_inf": text(RescaleSlope="inf"),
        "slope_nan": text(RescaleSlope="nan"),
        "slope_huge": setter(RescaleSlope="1e308", RescaleIntercept="-1e308"),
        "spacing_one_value": setter(PixelSpacing=["0.5"]),
        "spacing_text": text(PixelSpacing="a\\b"),
        "spacing_zero": setter(PixelSpacing=[0, 0]),
        "orientation_five": setter(ImageOrientationPatient=[1, 0, 0, 0, 1]),
        "orientation_text": text(ImageOrientationPatient="\\".join("x" * 6)),
        "position_two": setter(ImagePositionPatient=[0, 0]),
        "window_text": text(WindowCenter="abc", WindowWidth="defg"),
        "thickness_text": text(SliceThickness="thick"),
        "no_rows": drop("Rows"),
        "no_bits_allocated": drop("BitsAllocated"),
        "no_photometric": drop("PhotometricInterpretation"),
        "no_transfer_syntax": lambda ds: delattr(ds.file_meta, "TransferSyntaxUID"),
    }
    return {name: change if isinstance(change, bytes) else variant(change) for name, change in variants.items()}


def mutants_of(name, suffix, data):
    rng = np.random.default_rng([SEED, zlib.crc32(name.encode())])
    raw_nifti = gzip.decompress(data) if suffix == ".nii.gz" else data
    out = {}
    out.update(truncations(data))
    out.update(bit_flips(data, rng, skip=132 if suffix == ".dcm" else 0))
    if suffix == ".nii.gz":  # bit flips inside the compressed stream only hit zlib; flip the header too
        flipped = bit_flips(raw_nifti[:352], rng)
        out.update({f"raw_{k}": gzip.compress(v + raw_nifti[352:], mtime=0) for k, v in flipped.items()})
    headers = {
        ".png": png_headers,
        ".jpg": jpeg_headers,
        ".tif": tiff_headers,
        ".bmp": bmp_headers,
        ".gif": gif_headers,
    }
    if suffix in headers:
        out.update({f"hdr_{k}": v for k, v in headers[suffix](data).items()})
    elif suffix in (".nii", ".nii.gz"):
        for key, value in nifti_headers(raw_nifti).items():
            out[f"hdr_{key}"] = gzip.compress(value, mtime=0) if suffix == ".nii.gz" else value
    elif suffix == ".dcm":
        out.update({f"hdr_{k}": v for k, v in dicom_headers(get_testdata_file(f"{name.upper()}_small.dcm")).items()})
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(seed name, mutation, path) for every mutant, written under a temporary folder."""
    root = tmp_path_factory.mktemp("fuzz")
    entries = []
    for name, (suffix, data) in seeds().items():
        for mutation, mutant in mutants_of(name, suffix, data).items():
            path = root / name / f"{mutation}{suffix}"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(mutant)
            entries.append((name, mutation, path))
    return root, entries


# ------------------------------------------------------------------------ checks


def _check_line(line, path):
    assert "\n" not in line, line
    assert str(path) in line, f"the error does not name {path}: {line}"
    assert "Traceback" not in line and "internal error" not in line, line


def read(path):
    """Outcome of ``read_image``: "ok ...", or the one-line error, or "ESCAPED ..." for anything else."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            image = mc.io.read_image(path)
        except ImageReadError as err:
            outcome = str(err)
        except Exception as err:  # noqa: BLE001 -- what the fuzz test looks for
            return f"ESCAPED {type(err).__name__}: {str(err)[:200]}"
        else:
            if image.pixels.dtype.kind not in "biuf" or image.pixels.size == 0:
                return f"ESCAPED a {image.pixels.dtype} array of shape {image.pixels.shape} read without error"
            if image.pixels.dtype.kind == "f" and not np.all(np.isfinite(image.pixels)):
                return "ESCAPED NaN or infinite pixels read without error"
            if image.spacing_mm is not None and not all(np.isfinite(z) and z > 0 for z in image.spacing_mm):
                return f"ESCAPED spacing {image.spacing_mm} read without error"
            if image.affine is not None and not np.all(np.isfinite(image.affine)):
                return "ESCAPED a non-finite affine read without error"
            outcome = f"ok {image.format} {image.pixels.shape} {image.pixels.dtype}"
    if caught:
        return f"ESCAPED warning {caught[0].category.__name__}: {str(caught[0].message)[:200]}"
    return outcome


def test_readers_on_mutants(corpus):
    root, entries = corpus
    assert len(entries) > 300
    escaped, counts = [], {}
    for name, mutation, path in entries:
        outcome = read(path)
        if outcome.startswith("ESCAPED"):
            escaped.append(f"{name}/{mutation}: {outcome}")
            continue
        if not outcome.startswith("ok"):
            _check_line(outcome, path)
        read_ok, total = counts.get(name, (0, 0))
        counts[name] = (read_ok + outcome.startswith("ok"), total + 1)
    print(f"\n{len(entries)} mutants; (read, total) per seed: {counts}")
    assert not escaped, f"{len(escaped)} mutant(s) escaped the reader:\n" + "\n".join(escaped)


def test_dicom_series_with_a_mutated_slice(corpus, tmp_path):
    """A mutated slice beside a valid one in a series folder."""
    root, entries = corpus
    good = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    good.ImagePositionPatient = [0.0, 0.0, -50.0]
    escaped = []
    for index, (name, mutation, path) in enumerate(e for e in entries if e[0] == "ct"):
        if index % 3:
            continue
        folder = tmp_path / mutation
        folder.mkdir()
        good.save_as(folder / "a.dcm")
        (folder / "b.dcm").write_bytes(path.read_bytes())
        outcome = read(folder)
        if outcome.startswith("ESCAPED"):
            escaped.append(f"{mutation}: {outcome}")
        elif not outcome.startswith("ok"):
            assert "\n" not in outcome and str(folder) in outcome, outcome
    assert not escaped, "\n".join(escaped)


# --------------------------------------------------------------------------- CLI


def _cli(capfd, argv):
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # as a user's shell shows them
        code = mc.cli.main([str(a) for a in argv])
    captured = capfd.readouterr()
    return code, [line for line in captured.err.splitlines() if line.strip()]


def _cli_subset(entries, per_seed):
    """Every header mutant plus ``per_seed`` truncations and bit flips of each seed."""
    chosen, taken = [], {}
    for entry in entries:
        name, mutation, _ = entry
        if mutation.startswith("hdr_"):
            chosen.append(entry)
        elif taken.get(name, 0) < per_seed and (mutation.startswith("cut") or mutation.startswith("flip")):
            taken[name] = taken.get(name, 0) + 1
            chosen.append(entry)
    return chosen


def test_cli_evaluate_on_mutants(corpus, tmp_path, capfd):
    """Each mutant as the predicted mask of one case, against a valid reference mask."""
    root, entries = corpus
    truth = tmp_path / "truth"
    truth.mkdir()
    (truth / "case.png").write_bytes(_encode(".png", _mask()))
    problems = []
    for index, (name, mutation, path) in enumerate(_cli_subset(entries, per_seed=4)):
        suffix = mc.io.image_suffix(path)
        pred = tmp_path / f"pred{index}"
        pred.mkdir()
        (pred / f"case{suffix}").write_bytes(path.read_bytes())
        code, lines = _cli(capfd, ["evaluate", "--pred", pred, "--truth", truth, "--out", tmp_path / f"eval{index}.csv"])
        if code not in (0, 2) or len(lines) > 1 or (code == 2 and not lines) or any(
            "internal error" in line or "Traceback" in line for line in lines
        ):
            problems.append(f"{name}/{mutation}: exit {code}: {' | '.join(lines)[:300]}")
        elif code == 2 and str(pred / f"case{suffix}") not in lines[0]:
            problems.append(f"{name}/{mutation}: the error does not name the file: {lines[0][:300]}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


def test_cli_predict_on_mutants(corpus, tiny_run, tmp_path, capfd):
    """For each file type, a header mutant that still reads (or else any mutant that does),
    through ``predict`` with a tiny model: normalisation, prediction and writing the mask
    with the mutant's geometry."""
    root, entries = corpus
    chosen = {}
    for name, mutation, path in sorted(entries, key=lambda e: not e[1].startswith("hdr_")):
        family = mc.io.image_suffix(path)
        if family not in chosen and read(path).startswith("ok") and mc.io.read_image(path).pixels.size <= 2**14:
            chosen[family] = (name, mutation, path)  # (a 32 x 2**20 TIFF reads too, but predicts for minutes)
    assert len(chosen) >= 7, chosen
    problems = []
    for index, (name, mutation, path) in enumerate(chosen.values()):
        code, lines = _cli(capfd, ["predict", "--model", tiny_run, "--input", path, "--out", tmp_path / f"out{index}"])
        if code not in (0, 2) or len(lines) > 1 or (code == 2 and not lines) or any(
            "internal error" in line or "Traceback" in line for line in lines
        ):
            problems.append(f"{name}/{mutation}: exit {code}: {' | '.join(lines)[:300]}")
        elif code == 2:
            _check_line(lines[0], path)
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)
