"""A corpus of bad inputs through every loader and every CLI command.

The corpus is generated here (nothing is downloaded): truncated and empty PNG, JPEG, NIfTI
and DICOM files, a DICOM without pixel data, NaN and Inf voxels, 4D and 5D volumes, 16-bit,
float and constant images, masks with undeclared labels or of another size or orientation,
empty folders, unmatched and hidden files, non-UTF-8 file names, symlinks out of the data
folder, a ``dataset.json`` that lies, and model files that are not what they claim.

Each input either works (where it is merely unusual) or stops with one line that names the
file and says what is wrong and how to fix it. The CLI runs in-process (``cli.main``), so a
Python traceback would fail the test as an exception; the catch-all "internal error" line
(exit 3) fails it too. Every input folder is compared byte for byte, with its timestamps
and listing, before and after each call.

``python -m pytest tests/test_bad_inputs.py -s`` prints what each input now produces.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import medseg_course as mc
from medseg_course.data import DataSetError
from medseg_course.io import ImageReadError

CT = get_testdata_file("CT_small.dcm")
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
FLIPPED = np.diag([-1.0, 1.0, 2.0, 1.0])
REPORT = []  # (entry point, input, outcome) for the printed table


# ------------------------------------------------------------------------- builders


def png(array):
    cv2 = mc.utils.import_cv2()
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()


def jpeg(array):
    cv2 = mc.utils.import_cv2()
    ok, data = cv2.imencode(".jpg", array)
    assert ok
    return data.tobytes()


def nifti(array, path, affine=AFFINE):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def phantom(i, size=32):
    images, masks = mc.data.make_phantoms(1, size, seed=i)
    return (np.clip(images[0, ..., 0], 0, 1) * 255).astype(np.uint8), masks[0, ..., 0].astype(np.uint8)


def dicom_without_pixels(path):
    ds = pydicom.dcmread(CT)
    del ds.PixelData
    ds.save_as(path)


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# Single files: name -> (builder(path), expected). Expected is "ok" or a regex the one-line
# error must match (besides naming the file).
def single_files(root, outside):
    grey, mask = phantom(0)
    good_png, good_jpg = png(grey), jpeg(grey)
    ct = Path(CT).read_bytes()
    volume = np.random.default_rng(0).random((16, 16, 6)).astype(np.float32)
    files = {}

    def add(name, build, expected):
        files[name] = (build, expected)

    add("truncated.png", lambda p: write(p, good_png[: len(good_png) // 2]), r"truncated or corrupt")
    add("empty.png", lambda p: write(p, b""), r"empty \(0 bytes\)")
    add("text_named.png", lambda p: write(p, b"this is not an image\n"), r"truncated or corrupt")
    add("truncated.jpg", lambda p: write(p, good_jpg[:200]), r"truncated or corrupt")
    add("empty.jpg", lambda p: write(p, b""), r"empty \(0 bytes\)")
    add("truncated.nii.gz", lambda p: write(p, Path(nifti(volume, p)).read_bytes()[:300]), r"not a readable NIfTI")
    add("truncated.nii", lambda p: write(p, Path(nifti(volume, p)).read_bytes()[:600]), r"not a readable NIfTI")
    add("empty.nii.gz", lambda p: write(p, b""), r"empty \(0 bytes\)")
    add("truncated.dcm", lambda p: write(p, ct[: len(ct) // 3]), r"pixel data is shorter than its header says")
    add("empty.dcm", lambda p: write(p, b""), r"empty \(0 bytes\)")
    add("no_pixels.dcm", dicom_without_pixels, r"no pixel data")

    def nan_volume(p):
        v = volume.copy()
        v[3, 4, 2] = np.nan
        nifti(v, p)

    def inf_volume(p):
        v = volume.copy()
        v[0, 0, 0] = np.inf
        nifti(v, p)

    add("nan.nii.gz", nan_volume, r"1 voxel\(s\) are NaN or infinite")
    add("inf.nii.gz", inf_volume, r"1 voxel\(s\) are NaN or infinite")
    add("five_d.nii.gz", lambda p: nifti(np.zeros((4, 4, 4, 2, 2), np.float32), p), r"5 dimensions")
    add("unknown.xyz", lambda p: write(p, b"data"), r"unsupported file type \.xyz")
    add("dangling_link.png", lambda p: p.symlink_to(p.parent / "does_not_exist.png"), r"a broken link \(to .*does_not_exist\.png, which does not exist\)")
    # merely unusual: these read
    add("sixteen_bit.png", lambda p: write(p, png((grey.astype(np.uint16) * 257))), "ok")
    add("float.tif", lambda p: mc.utils.import_cv2().imwrite(str(p), grey.astype(np.float32) / 255), "ok")
    add("constant.png", lambda p: write(p, png(np.full((32, 32), 7, np.uint8))), "ok")
    add("rgba.png", lambda p: write(p, png(np.dstack([grey, grey, grey, np.full_like(grey, 255)]))), "ok")
    add("caf\udce9_latin1_name.png", lambda p: write(p, good_png), "ok")  # b"caf\xe9": not UTF-8
    add("four_d.nii.gz", lambda p: nifti(np.zeros((8, 8, 4, 2), np.float32) + np.arange(2), p), "ok")
    add("ct_good.dcm", lambda p: write(p, ct), "ok")
    add("link_outside.png", lambda p: p.symlink_to(write(outside / "elsewhere.png", good_png)), "ok")
    return files


def build_single_files(root, outside):
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    cases = single_files(root, outside)
    for name, (build, _) in cases.items():
        build(root / name)
    return {root / name: expected for name, (_, expected) in cases.items()}


# Paired-folder data sets: name -> (builder(root), expected for the loader, expected for train)
def paired_sets():
    sets = {}

    def pairs(root, count=4, image=None, mask=None, mask_name="{}_mask.png"):
        for i in range(count):
            grey, m = phantom(i)
            write(root / "images" / f"case{i}.png", png(grey if image is None else image(i, grey)))
            write(root / "masks" / mask_name.format(f"case{i}"), png((m * 255) if mask is None else mask(i, m)))

    def add(name, build, loader, train=None):
        sets[name] = (build, loader, loader if train is None else train)

    add("empty_root", lambda r: r.mkdir(parents=True), r"images: folder not found", r"unknown layout: expected images/")
    add("empty_subfolders", lambda r: ((r / "images").mkdir(parents=True), (r / "masks").mkdir()),
        r"no image files in the folder")

    def unmatched(r):
        pairs(r)
        write(r / "images" / "case9.png", png(phantom(9)[0]))
        write(r / "masks" / "notes.txt", b"reader notes")

    add("unmatched", unmatched, r"1 image\(s\) without a mask: case9\.png.*non-image file\(s\) in masks/: notes\.txt")

    def bad_labels(r):
        pairs(r, mask=lambda i, m: (m * 255 if i else np.where(m > 0, 255, np.where(np.arange(32) % 2, 128, 0)[None]))
              .astype(np.uint8))

    add("mask_bad_labels", bad_labels, r"mask has 3 distinct values")
    add("mask_colour", lambda r: pairs(r, mask=lambda i, m: np.dstack([m * 255, m * 0, m * 255]).astype(np.uint8)),
        r"colour mask with different channels")
    add("mask_other_size", lambda r: pairs(r, mask=lambda i, m: (np.pad(m, ((0, 4), (0, 0))) * 255).astype(np.uint8)),
        r"mask shape \(36, 32\) differs from its image's \(32, 32\)")
    add("truncated_image", lambda r: (pairs(r), write(r / "images" / "case2.png", b"\x89PNG\r\n\x1a\n\x00")),
        r"case2\.png: not a readable image")
    add("empty_mask_file", lambda r: (pairs(r), write(r / "masks" / "case1_mask.png", b"")), r"case1_mask\.png: the file is empty")

    def link_out(r):
        pairs(r)
        outside = r.parent / (r.name + "_elsewhere")
        target = write(outside / "secret.png", png(phantom(7)[0]))
        (r / "images" / "case3.png").unlink()
        (r / "images" / "case3.png").symlink_to(target)

    add("link_outside", link_out, r"case3\.png: a link to .* outside the data folder")

    def nifti_pairs(r, mask_affine=FLIPPED, mask_fn=None):
        for i in range(3):
            grey, m = phantom(i)
            (r / "images").mkdir(parents=True, exist_ok=True)
            (r / "masks").mkdir(parents=True, exist_ok=True)
            nifti(grey[..., None].astype(np.int16), r / "images" / f"case{i}.nii.gz")
            data = m[..., None] if mask_fn is None else mask_fn(m)
            nifti(data, r / "masks" / f"case{i}.nii.gz", mask_affine if i == 1 else AFFINE)

    add("mask_other_orientation", nifti_pairs, r"case1\.nii\.gz: mask orientation/position \(affine\) differs")
    add("mask_fractional", lambda r: nifti_pairs(r, AFFINE, lambda m: (m * 0.5)[..., None].astype(np.float32)),
        r"mask has fractional values")
    add("mask_nan", lambda r: nifti_pairs(r, AFFINE, lambda m: np.where(m > 0, np.nan, 0)[..., None].astype(np.float32)),
        r"voxel\(s\) are NaN or infinite")
    add("mask_4d", lambda r: nifti_pairs(r, AFFINE, lambda m: np.stack([m, m], -1)[..., None, :]),
        r"mask shape \(32, 32, 1, 2\) differs")

    # merely unusual: these load and train
    def unusual(r):
        pairs(r, count=5, image=lambda i, g: {0: g.astype(np.uint16) * 257, 1: np.full_like(g, 9)}.get(i, g))
        write(r / "images" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
        write(r / "images" / "._case0.png", b"\x00\x05\x16\x07")  # macOS resource fork
        write(r / "masks" / "Thumbs.db", b"\xd0\xcf")
        os.rename(r / "images" / "case4.png", r / "images" / "caf\udce9.png")  # non-UTF-8 names
        os.rename(r / "masks" / "case4_mask.png", r / "masks" / "caf\udce9_mask.png")

    add("unusual_but_valid", unusual, "ok")
    # nothing to learn: the plan refuses before training
    add("all_masks_empty", lambda r: pairs(r, mask=lambda i, m: np.zeros_like(m)), "ok",
        r"no mask has any foreground \(all \d+ are 0 everywhere")
    add("single_case", lambda r: pairs(r, count=1), "ok", r"1 case\(s\); training needs at least 2")
    return sets


def msd_sets():
    sets = {}

    def task(r, training=None, labels=None, label_fn=None, raw_json=None):
        (r / "imagesTr").mkdir(parents=True)
        (r / "labelsTr").mkdir()
        entries = []
        for i in range(3):
            grey, m = phantom(i)
            nifti(np.repeat(grey[..., None], 4, -1).astype(np.int16), r / "imagesTr" / f"toy_{i:03d}.nii.gz")
            label = np.repeat(m[..., None], 4, -1)
            nifti(label if label_fn is None else label_fn(i, label), r / "labelsTr" / f"toy_{i:03d}.nii.gz")
            entries.append({"image": f"./imagesTr/toy_{i:03d}.nii.gz", "label": f"./labelsTr/toy_{i:03d}.nii.gz"})
        manifest = {"name": "Toy", "labels": labels or {"0": "background", "1": "organ"},
                    "training": entries if training is None else training(entries)}
        (r / "dataset.json").write_bytes(raw_json if raw_json is not None else json.dumps(manifest).encode())

    def add(name, build, expected):
        sets[name] = (build, expected)

    add("msd_missing_file", lambda r: task(r, training=lambda e: e + [{"image": "./imagesTr/toy_009.nii.gz",
                                                                         "label": "./labelsTr/toy_009.nii.gz"}]),
        r"toy_009\.nii\.gz: listed in dataset\.json but missing")
    add("msd_path_escapes", lambda r: task(r, training=lambda e: [{"image": "../../etc/hostname",
                                                                     "label": e[0]["label"]}] + e[1:]),
        r"dataset\.json: training entry points outside the task folder \('../../etc/hostname'\)")
    add("msd_undeclared_label", lambda r: task(r, label_fn=lambda i, lab: lab * (3 if i == 2 else 1)),
        r"toy_002\.nii\.gz: labels \[3\] are not declared")
    add("msd_invalid_json", lambda r: task(r, raw_json=b'{"labels": {"0": "bg"}, "training": ['),
        r"dataset\.json: not a valid Decathlon dataset\.json")
    add("msd_not_utf8", lambda r: task(r, raw_json=b'{"name": "T\xe9st", "labels": {}, "training": []}'),
        r"dataset\.json: not a valid Decathlon dataset\.json")
    add("msd_empty_training", lambda r: task(r, training=lambda e: []), r"the 'training' list is empty")
    add("msd_training_not_a_list", lambda r: task(r, training=lambda e: 5), r"'training' must be a list")
    add("msd_label_4d", lambda r: task(r, label_fn=lambda i, lab: np.stack([lab, lab], -1) if i == 0 else lab),
        r"toy_000\.nii\.gz: mask shape \(32, 32, 4, 2\) differs")
    add("msd_valid", task, "ok")
    return sets


# ------------------------------------------------------------------------ assertions


def snapshot(*roots):
    """Every entry under the roots: bytes (or link target), size, mode and modification time."""
    state = {}
    for root in roots:
        root = Path(root)
        if not root.exists() and not root.is_symlink():
            continue
        for path in [root, *sorted(root.rglob("*"))]:
            info = path.lstat()
            if path.is_symlink():
                content = ("link", os.readlink(path))
            elif path.is_file():
                content = ("file", path.read_bytes())
            else:
                content = ("dir", None)
            state[str(path)] = (content, info.st_mode, info.st_size, info.st_mtime_ns)
    return state


def check_error_line(line, names, pattern):
    assert "Traceback" not in line and "internal error" not in line, line
    assert any(str(n) in line for n in names), f"the error names none of {names}: {line}"
    assert re.search(pattern, line), f"{pattern!r} not in: {line}"


def cli(capsys, *argv):
    code = mc.cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line]
    return code, lines, captured.out


def report(entry, name, outcome):
    def clean(text):
        return str(text).encode("utf-8", "backslashreplace").decode("utf-8")

    REPORT.append((entry, clean(name), clean(outcome)))


@pytest.fixture(scope="module", autouse=True)
def print_report():
    yield
    if REPORT:
        width = max(len(n) for _, n, _ in REPORT)
        print("\n\nentry point | input | outcome")
        for entry, name, outcome in REPORT:
            print(f"{entry:22s} {name:{width}s} {outcome}")
        counts = {}
        for entry, _, _ in REPORT:
            counts[entry] = counts.get(entry, 0) + 1
        print("inputs per entry point:", json.dumps(counts))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = build_single_files(root / "files", root / "outside")
    return root, files


@pytest.fixture(scope="module")
def trained_run(tiny_run):
    """A tiny model trained on phantoms, to feed bad inputs to predict."""
    return tiny_run


# ---------------------------------------------------------------------------- loaders


def test_read_image_on_every_file(corpus):
    root, files = corpus
    before = snapshot(root)
    for path, expected in files.items():
        try:
            image = mc.io.read_image(path)
        except ImageReadError as err:
            assert expected != "ok", f"{path.name} should read: {err}"
            line = str(err)
            assert "\n" not in line
            check_error_line(line, [path], expected)
            report("io.read_image", path.name, line.replace(str(path), "FILE"))
        else:
            assert expected == "ok", f"{path.name} read without error; expected {expected!r}"
            assert np.all(np.isfinite(image.pixels))
            report("io.read_image", path.name, f"ok {image.format} {image.pixels.shape} {image.pixels.dtype}")
    assert snapshot(root) == before


def test_dicom_series_folders(tmp_path):
    cases = {
        "empty": (lambda r: r.mkdir(), r"no DICOM images found"),
        "only_text": (lambda r: (r.mkdir(), write(r / "README", b"notes")), r"no DICOM images found"),
        "only_broken": (lambda r: (r.mkdir(), write(r / "a.dcm", Path(CT).read_bytes()[:500])), r"no DICOM images found"),
        "no_pixels": (lambda r: (r.mkdir(), dicom_without_pixels(r / "a.dcm")), r"no DICOM images found"),
        "duplicate_slices": (lambda r: (r.mkdir(), write(r / "a.dcm", Path(CT).read_bytes()),
                                        write(r / "b.dcm", Path(CT).read_bytes())), r"two slices share a position"),
    }
    for name, (build, expected) in cases.items():
        folder = tmp_path / name
        build(folder)
        before = snapshot(folder)
        with pytest.raises(ImageReadError) as info:
            mc.io.read_dicom_series(folder)
        check_error_line(str(info.value), [folder], expected)
        report("io.read_dicom_series", name, str(info.value).replace(str(folder), "FOLDER"))
        assert snapshot(folder) == before


@pytest.mark.parametrize("name", list(paired_sets()))
def test_load_paired_folders(tmp_path, name):
    build, expected, _ = paired_sets()[name]
    root = tmp_path / name
    build(root)
    before = snapshot(tmp_path)
    try:
        cases = mc.data.load_paired_folders(root)
    except DataSetError as err:
        assert expected != "ok", f"{name} should load: {err}"
        check_error_line(str(err), [root], expected)
        report("data.load_paired_folders", name, str(err).replace(str(root), "ROOT"))
    else:
        assert expected == "ok", f"{name} loaded; expected {expected!r}"
        assert all(c.mask.shape == c.image.pixels.shape[:2] for c in cases)
        report("data.load_paired_folders", name, f"ok, {len(cases)} cases")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", list(msd_sets()))
def test_load_msd(tmp_path, name):
    build, expected = msd_sets()[name]
    root = tmp_path / name
    build(root)
    before = snapshot(tmp_path)
    try:
        cases, _ = mc.data.load_msd(root)
    except DataSetError as err:
        assert expected != "ok", f"{name} should load: {err}"
        check_error_line(str(err), [root], expected)
        report("data.load_msd", name, str(err).replace(str(root), "ROOT"))
    else:
        assert expected == "ok"
        report("data.load_msd", name, f"ok, {len(cases)} cases")
    assert snapshot(tmp_path) == before


BAD_FILES = [name for name, (_, expected) in single_files(Path("."), Path(".")).items() if expected != "ok"]


@pytest.mark.parametrize("bad", BAD_FILES)
def test_one_bad_file_in_an_otherwise_good_data_set(tf_setup, tmp_path, capsys, bad):
    """Each bad file of the corpus, as one image of a paired data set and as one predicted
    mask: the loader, ``train`` and ``evaluate`` stop and name it."""
    files = build_single_files(tmp_path / "corpus", tmp_path / "outside")
    bad_path = next(path for path in files if path.name == bad)
    stem = bad_path.name.split(".")[0]
    root = tmp_path / "data"
    for i in range(3):
        grey, m = phantom(i)
        write(root / "images" / f"case{i}.png", png(grey))
        write(root / "masks" / f"case{i}_mask.png", png(m * 255))
        write(root / "pred" / f"case{i}.png", png(m * 255))
    write(root / "masks" / f"{stem}_mask.png", png(phantom(5)[1] * 255))
    for folder in ("images", "pred"):
        target = root / folder / bad
        if bad_path.is_symlink():
            target.symlink_to(os.readlink(bad_path))
        else:
            target.write_bytes(bad_path.read_bytes())
    before = snapshot(root)

    def names_it(line, folder):
        path = root / folder / bad
        assert str(path) in line or (str(root) in line and bad in line), line
        assert "Traceback" not in line and "internal error" not in line, line

    with pytest.raises(DataSetError) as info:
        mc.data.load_paired_folders(root)
    names_it(str(info.value), "images")
    code, lines, _ = cli(capsys, "train", "--data", root, "--out", tmp_path / "run", "--epochs", "1")
    assert code == 2 and len(lines) == 1, lines
    names_it(lines[0], "images")
    report("cli train (one bad file)", bad, lines[0].replace(str(root), "DATA"))
    code, lines, _ = cli(capsys, "evaluate", "--pred", root / "pred", "--truth", root / "masks", "--out",
                         tmp_path / "eval.csv")
    assert code == 2 and len(lines) == 1, lines
    names_it(lines[0], "pred")
    report("cli evaluate (one bad file)", bad, lines[0].replace(str(root), "DATA"))
    assert snapshot(root) == before
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval.csv").exists()


# -------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("name", [*paired_sets(), *msd_sets(), "missing_folder", "a_file", "unknown_layout"])
def test_cli_train(tf_setup, tmp_path, capsys, name):
    root = tmp_path / "data" / name
    if name in paired_sets():
        paired_sets()[name][0](root)
        expected = paired_sets()[name][2]
    elif name in msd_sets():
        msd_sets()[name][0](root)
        expected = msd_sets()[name][1]
    elif name == "missing_folder":
        expected = r"no such folder"
    elif name == "a_file":
        write(root, png(phantom(0)[0]))
        expected = r"not a folder"
    else:
        (root / "scans").mkdir(parents=True)
        expected = r"unknown layout"
    before = snapshot(tmp_path / "data")
    out = tmp_path / "run"
    code, lines, _ = cli(capsys, "train", "--data", root, "--out", out, "--image-size", "32", "--depth", "2",
                         "--base-filters", "4", "--epochs", "1", "--batch-size", "4")
    if expected == "ok":
        assert code == 0, lines
        assert (out / "model.keras").is_file()
        report("cli train", name, "ok: trained, " + json.dumps(json.loads((out / "metrics.json").read_text())["summary"]["dice"]))
    else:
        assert code == 2 and len(lines) == 1, lines
        check_error_line(lines[0], [root], expected)
        assert not out.exists() or not any(out.iterdir()), "a failed run must not leave a run folder behind"
        report("cli train", name, lines[0].replace(str(root), "DATA"))
    assert snapshot(tmp_path / "data") == before


def test_cli_predict_on_every_file(corpus, trained_run, tmp_path, capsys):
    root, files = corpus
    before = snapshot(root)
    # the model takes one channel: a volume with two channels reads, but cannot be segmented
    special = {"four_d.nii.gz": r"2 channels but the model takes 1"}
    for index, (path, expected) in enumerate(files.items()):
        expected = special.get(path.name, expected)
        out = tmp_path / f"pred{index}"
        code, lines, _ = cli(capsys, "predict", "--model", trained_run, "--input", path, "--out", out)
        if expected == "ok":
            assert code == 0, (path.name, lines)
            report("cli predict", path.name, "ok: " + ", ".join(p.name for p in out.iterdir() if p.is_file()))
        else:
            assert code == 2 and len(lines) == 1, (path.name, lines)
            check_error_line(lines[0], [path], expected)
            report("cli predict", path.name, lines[0].replace(str(path), "FILE"))
    assert snapshot(root) == before


def test_cli_predict_folders_and_models(trained_run, tmp_path, capsys):
    data = tmp_path / "data"
    grey = phantom(0)[0]
    cases = {}
    (data / "empty").mkdir(parents=True)
    cases["empty folder"] = ("--input", data / "empty", data / "empty", r"the folder holds no images")
    write(data / "hidden_only" / ".DS_Store", b"x")
    cases["only hidden files"] = ("--input", data / "hidden_only", data / "hidden_only", r"the folder holds no images")
    write(data / "mixed" / "a.png", png(grey))
    write(data / "mixed" / "notes.docx", b"x")
    cases["non-image file"] = ("--input", data / "mixed", data / "mixed", r"1 non-image file\(s\) \(notes\.docx\)")
    write(data / "with_bad" / "a.png", png(grey))
    write(data / "with_bad" / "b.png", b"\x89PNG")
    cases["one corrupt among good"] = ("--input", data / "with_bad", data / "with_bad" / "b.png", r"not a readable image")
    write(data / "links" / "a.png", png(grey))
    (data / "links" / "b.png").symlink_to(write(tmp_path / "elsewhere" / "b.png", png(grey)))
    cases["link out of the folder"] = ("--input", data / "links", data / "links" / "b.png", r"outside the data folder")
    write(data / "four_d.nii.gz", b"")
    nifti(np.zeros((8, 8, 4, 3), np.float32), data / "four_d.nii.gz")
    cases["three-channel volume, grey model"] = ("--input", data / "four_d.nii.gz", data / "four_d.nii.gz",
                                                 r"3 channels but the model takes 1")
    # models that are not what they claim
    models = tmp_path / "models"
    write(models / "garbage" / "model.keras", b"PK\x03\x04 not really a zip")
    (models / "garbage" / "config.json").write_text((trained_run / "config.json").read_text())
    cases["garbage .keras"] = ("--model", models / "garbage", models / "garbage" / "model.keras", r"not a Keras model file \(a \.keras file is a zip archive; this one is not")
    write(models / "legacy" / "model.h5", b"\x89HDF\r\n\x1a\n")
    (models / "legacy" / "config.json").write_text("{}")
    cases["legacy .h5"] = ("--model", models / "legacy" / "model.h5", models / "legacy" / "model.h5",
                           r"legacy model format \(\.h5\), which can run arbitrary code")
    write(models / "no_config" / "model.keras", (trained_run / "model.keras").read_bytes())
    cases["run folder without config.json"] = ("--model", models / "no_config", models / "no_config", r"config\.json: missing")
    write(models / "bad_config" / "model.keras", (trained_run / "model.keras").read_bytes())
    (models / "bad_config" / "config.json").write_text('{"mode": "resize"')
    cases["broken config.json"] = ("--model", models / "bad_config", models / "bad_config" / "config.json",
                                   r"not a run configuration")
    write(models / "null_size" / "model.keras", (trained_run / "model.keras").read_bytes())
    config = json.loads((trained_run / "config.json").read_text())
    (models / "null_size" / "config.json").write_text(json.dumps({**config, "input_size": None}))
    cases["config.json without an input size"] = ("--model", models / "null_size", models / "null_size" / "config.json",
                                                   r"input_size is None, not a positive integer")
    (models / "folder" / "model.keras").mkdir(parents=True)
    (models / "folder" / "config.json").write_text((trained_run / "config.json").read_text())
    cases["model.keras is a folder"] = ("--model", models / "folder", models / "folder" / "model.keras",
                                        r"a folder, not a \.keras model file")
    write(models / "png_no_config" / "model.keras", png(grey))
    cases["an image renamed model.keras"] = ("--model", models / "png_no_config" / "model.keras",
                                             models / "png_no_config" / "model.keras", r"not a Keras model file")
    # a real .keras file with a Lambda layer: its Python bytecode would run on load without safe_mode
    import keras

    crafted = models / "crafted"
    crafted.mkdir()
    (crafted / "config.json").write_text((trained_run / "config.json").read_text())
    inputs = keras.Input((32, 32, 1))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 0 + 1)(inputs)).save(crafted / "model.keras")
    cases["crafted Lambda in .keras"] = ("--model", crafted, crafted / "model.keras", r"carries Python code \(a Lambda layer\), which Keras' safe_mode refuses to run")

    before = snapshot(data, models, trained_run)
    for label, (flag, value, named, expected) in cases.items():
        argv = ["predict", "--model", trained_run, "--input", data / "mixed" / "a.png", "--out", tmp_path / "out" / label]
        argv[argv.index(flag) + 1] = value
        code, lines, _ = cli(capsys, *argv)
        assert code == 2 and len(lines) == 1, (label, lines)
        check_error_line(lines[0], [named], expected)
        report("cli predict", label, lines[0].replace(str(tmp_path), "TMP"))
    assert snapshot(data, models, trained_run) == before


def test_cli_predict_refuses_to_overwrite(trained_run, tmp_path, capsys):
    image = write(tmp_path / "in" / "a.png", png(phantom(0)[0]))
    out = tmp_path / "out"
    assert cli(capsys, "predict", "--model", trained_run, "--input", image, "--out", out)[0] == 0
    first = snapshot(out)
    code, lines, _ = cli(capsys, "predict", "--model", trained_run, "--input", image, "--out", out)
    assert code == 2 and lines[0].endswith("choose another --out or pass --overwrite.")
    check_error_line(lines[0], [out / "a_mask.png"], r"already exists")
    assert snapshot(out) == first
    report("cli predict", "existing masks in --out", lines[0].replace(str(tmp_path), "TMP"))
    assert cli(capsys, "predict", "--model", trained_run, "--input", image, "--out", out, "--overwrite")[0] == 0


def test_cli_evaluate(tmp_path, capsys):
    grey, m = phantom(0)
    good = png(m * 255)
    sets = {}

    def add(name, pred, truth, named, expected):
        sets[name] = (pred, truth, named, expected)

    root = tmp_path / "data"
    write(root / "t" / "a.png", good)
    write(root / "t" / "b.png", good)
    for name in ("a", "b", "c\udce9"):  # the last file name is not UTF-8
        write(root / "t_ok" / f"{name}.png", good)
        write(root / "p_ok" / f"{name}_mask.png", good)
    add("valid", "p_ok", "t_ok", None, "ok")
    (root / "p_empty").mkdir()
    add("empty prediction folder", "p_empty", "t", "p_empty", r"no mask files in the folder")
    write(root / "p_missing" / "a.png", good)
    add("unmatched mask", "p_missing", "t", "t/b.png", r"1 mask\(s\) without a counterpart")
    write(root / "p_cut" / "a.png", good[:40])
    write(root / "p_cut" / "b.png", good)
    add("truncated mask", "p_cut", "t", "p_cut/a.png", r"not a readable image")
    write(root / "p_size" / "a.png", png(np.pad(m, 2) * 255))
    write(root / "p_size" / "b.png", good)
    add("mask of another size", "p_size", "t", "p_size/a.png", r"shape \(36, 36\) differs from the reference \(32, 32\)")
    write(root / "p_vals" / "a.png", png(np.where(m > 0, 255, np.arange(32)[None] % 3 * 60).astype(np.uint8)))
    write(root / "p_vals" / "b.png", good)
    add("mask with stray values", "p_vals", "t", "p_vals/a.png", r"distinct values")
    for name in ("a", "b"):
        nifti(m[..., None], root / "t3" / f"{name}.nii.gz")
        nifti(m[..., None], root / "p_flip" / f"{name}.nii.gz", FLIPPED if name == "a" else AFFINE)
    add("mask of another orientation", "p_flip", "t3", "p_flip/a.nii.gz", r"orientation/position \(affine\) differs")
    for name in ("a", "b"):
        nifti(np.where(m > 0, np.nan, 0)[..., None].astype(np.float32) if name == "b" else m[..., None],
              root / "p_nan" / f"{name}.nii.gz")
    add("NaN mask", "p_nan", "t3", "p_nan/b.nii.gz", r"NaN or infinite")
    write(root / "p_dup" / "a.png", good)
    write(root / "p_dup" / "a_mask.png", good)
    write(root / "p_dup" / "b.png", good)
    add("two masks for one case", "p_dup", "t", "p_dup/a", r"are both masks of case 'a'")

    before = snapshot(root)
    for name, (pred, truth, named, expected) in sets.items():
        out = tmp_path / "out" / f"{name}.csv"
        code, lines, _ = cli(capsys, "evaluate", "--pred", root / pred, "--truth", root / truth, "--out", out)
        if expected == "ok":
            assert code == 0, lines
            report("cli evaluate", name, "ok: " + out.name)
        else:
            assert code == 2 and len(lines) == 1, (name, lines)
            check_error_line(lines[0], [root / named], expected)
            assert not out.exists()
            report("cli evaluate", name, lines[0].replace(str(root), "DATA"))
    assert snapshot(root) == before


def test_cli_info_with_odd_settings(capsys, tmp_path, monkeypatch):
    odd = write(tmp_path / "a_file", b"x")
    for label, value in (("MEDSEG_DATA is a file", odd), ("MEDSEG_DATA missing", tmp_path / "nope")):
        monkeypatch.setenv("MEDSEG_DATA", str(value))
        code, lines, out = cli(capsys, "info", "--json")
        assert code == 0, lines
        assert json.loads(out)["data_home"] == str(value)
        report("cli info", label, "ok")
    code, lines, _ = cli(capsys, "info", "--threads", "0")
    assert code == 2 and len(lines) == 1 and "threads must be a positive int" in lines[0]
    report("cli info", "--threads 0", lines[0])
