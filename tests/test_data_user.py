"""User data sets: paired folders, the Decathlon layout, and the verified downloader."""

import hashlib
import http.server
import io as stdio
import json
import tarfile
import threading

import nibabel as nib
import numpy as np
import pytest

import medseg_course as mc
from medseg_course.data import DataSetError


def write_pair(folder, name, mask_name=None, size=(20, 24), mask_value=255):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(0).integers(0, 255, size).astype(np.uint8)
    mask = np.zeros(size, np.uint8)
    mask[5:12, 6:15] = mask_value
    mc.io.write_png(image, folder / "images" / f"{name}.png")
    import cv2

    cv2.imwrite(str(folder / "masks" / (mask_name or f"{name}.png")), mask)
    return image, (mask > 0).astype(np.uint8)


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_paired_folders_match_by_stem_and_suffix(tmp_path):
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "b", "b_mask.png")
    _, mask_c = write_pair(tmp_path, "c", "c_segmentation.png", mask_value=1)
    (tmp_path / "images" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "masks" / "._a.png").write_bytes(b"\x00")  # macOS resource fork
    before = snapshot(tmp_path)
    cases = mc.data.load_paired_folders(tmp_path)
    assert [c.name for c in cases] == ["a", "b", "c"]
    assert all(c.mask.dtype == np.uint8 and c.mask.shape == (20, 24) for c in cases)
    np.testing.assert_array_equal(cases[2].mask, mask_c)
    assert set(np.unique(cases[0].mask)) == {0, 1}  # 0/255 -> 0/1
    assert snapshot(tmp_path) == before  # nothing in the input folder changed


def test_unmatched_files_are_reported_not_dropped(tmp_path):
    write_pair(tmp_path, "a")
    write_pair(tmp_path, "b")
    (tmp_path / "masks" / "b.png").unlink()
    (tmp_path / "images" / "notes.txt").write_text("x")
    with pytest.raises(DataSetError, match=r"1 image\(s\) without a mask: b.png.*non-image file.*notes.txt.*allow_unmatched"):
        mc.data.find_pairs(tmp_path)
    with pytest.warns(UserWarning, match="b.png"):
        pairs = mc.data.find_pairs(tmp_path, allow_unmatched=True)
    assert [p[0] for p in pairs] == ["a"]


def test_folder_errors(tmp_path):
    with pytest.raises(DataSetError, match="images: folder not found"):
        mc.data.load_paired_folders(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataSetError, match="no image files"):
        mc.data.load_paired_folders(tmp_path)


def test_mask_of_another_size(tmp_path):
    write_pair(tmp_path, "a")
    import cv2

    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.zeros((10, 10), np.uint8))
    with pytest.raises(DataSetError, match=r"masks/a.png: mask shape \(10, 10\) differs"):
        mc.data.load_paired_folders(tmp_path)


def test_unreadable_image_named(tmp_path):
    write_pair(tmp_path, "a")
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataSetError, match="images/a.png: not a readable image"):
        mc.data.load_paired_folders(tmp_path)


@pytest.mark.parametrize(
    "values, expected",
    [
        (np.array([[0, 1], [1, 0]]), [[0, 1], [1, 0]]),
        (np.array([[0, 255], [255, 0]], np.uint8), [[0, 1], [1, 0]]),
        (np.array([[0, 2], [3, 0]], np.uint8), [[0, 2], [3, 0]]),
        (np.array([[0, 250], [3, 255]] + [[0, 0]] * 200, np.uint8)[:2], None),
    ],
)
def test_mask_to_labels_forms(values, expected):
    if expected is None:
        with pytest.raises(DataSetError, match="distinct values"):
            mc.data.mask_to_labels(np.array([[0, 250], [100, 255]], np.uint8))
        return
    np.testing.assert_array_equal(mc.data.mask_to_labels(values), expected)


def test_mask_to_labels_jpeg_noise_and_invert():
    noisy = np.zeros((100, 100), np.uint8)
    noisy[:50] = 250
    noisy[0, :5] = [3, 7, 120, 200, 252]  # compression noise in under 1 % of pixels
    labels = mc.data.mask_to_labels(noisy)
    assert labels[:50].sum() == 50 * 100 - 3 and labels[50:].sum() == 0
    np.testing.assert_array_equal(mc.data.mask_to_labels(np.array([[0, 1]]), invert=True), [[1, 0]])
    with pytest.raises(DataSetError, match="invert applies to binary"):
        mc.data.mask_to_labels(np.array([[0, 2]]), invert=True)
    with pytest.raises(DataSetError, match="colour mask"):
        mc.data.mask_to_labels(np.stack([np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2))], -1).astype(np.uint8))


def make_msd(root, num_cases=4, lie=False):
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    training = []
    for i in range(num_cases):
        volume = np.random.default_rng(i).random((16, 16, 6)).astype(np.float32)
        label = np.zeros((16, 16, 6), np.uint8)
        label[4:10, 4:10, 1:5] = 1
        label[6:8, 6:8, 2:4] = 2
        nib.save(nib.Nifti1Image(volume, affine), root / "imagesTr" / f"case_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{i:03d}.nii.gz")
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    if lie:
        training.append({"image": "./imagesTr/case_999.nii.gz", "label": "./labelsTr/case_999.nii.gz"})
    manifest = {"name": "Toy", "labels": {"0": "background", "1": "anterior", "2": "posterior"}, "training": training}
    (root / "dataset.json").write_text(json.dumps(manifest))


def test_msd_layout_and_case_split(tmp_path):
    make_msd(tmp_path / "Task99_Toy")
    cases, manifest = mc.data.load_msd(tmp_path / "Task99_Toy")
    assert [c.name for c in cases] == [f"case_{i:03d}" for i in range(4)]
    assert manifest["labels"] == {0: "background", 1: "anterior", 2: "posterior"}
    images, masks = mc.data.volume_slices(cases[0])
    assert images.shape == (6, 16, 16, 1) and masks.shape == (6, 16, 16)
    assert cases[0].image.spacing_mm == (1.0, 1.0, 2.0)
    split = mc.data.split_cases([c.name for c in cases], val_fraction=0.25, seed=0)
    assert sorted(sum(split.values(), [])) == sorted(c.name for c in cases)
    assert len(split["val"]) == 1 and not set(split["val"]) & set(split["train"])


def test_msd_dataset_json_that_lies(tmp_path):
    make_msd(tmp_path, lie=True)
    with pytest.raises(DataSetError, match="case_999.nii.gz: listed in dataset.json but missing"):
        mc.data.load_msd(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataSetError, match="not a valid Decathlon dataset.json"):
        mc.data.load_msd(tmp_path)


def test_msd_undeclared_label(tmp_path):
    make_msd(tmp_path, num_cases=1)
    manifest = json.loads((tmp_path / "dataset.json").read_text())
    manifest["labels"] = {"0": "background", "1": "anterior"}
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DataSetError, match=r"labels \[2\] are not declared"):
        mc.data.load_msd(tmp_path)


def test_split_cases_errors():
    with pytest.raises(ValueError, match="cannot give"):
        mc.data.split_cases(["a", "b"], val_fraction=0.5, test_fraction=0.5)


@pytest.fixture
def served_archive(tmp_path):
    """A Decathlon-layout tar served over HTTP on 127.0.0.1 by a server the test starts and stops."""
    make_msd(tmp_path / "src" / "Task99_Toy", num_cases=2)
    buffer = stdio.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(tmp_path / "src" / "Task99_Toy", arcname="Task99_Toy")
    serve_dir = tmp_path / "www"
    serve_dir.mkdir()
    (serve_dir / "Task99_Toy.tar").write_bytes(buffer.getvalue())
    evil = stdio.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        tar.addfile(info, stdio.BytesIO(b"bad"))
    (serve_dir / "Task98_Evil.tar").write_bytes(evil.getvalue())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(serve_dir), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", serve_dir
    server.shutdown()
    server.server_close()


def test_download_verifies_checksum_and_unpacks(served_archive, tmp_path, monkeypatch):
    url, serve_dir = served_archive
    good = hashlib.md5((serve_dir / "Task99_Toy.tar").read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(DataSetError, match="checksum mismatch"):
        mc.data.download_msd("Task99_Toy", cache_dir=cache, base_url=url, md5="0" * 32, progress=False)
    assert not (cache / "Task99_Toy.tar").exists()  # the bad download was deleted
    monkeypatch.setenv("MEDSEG_DATA", str(cache))
    folder = mc.data.download_msd("Task99_Toy", base_url=url, md5=good, progress=False)
    assert folder == cache / "Task99_Toy"
    cases, _ = mc.data.load_msd(folder)
    assert len(cases) == 2
    # second call: already unpacked, no network needed
    assert mc.data.download_msd("Task99_Toy", base_url="http://127.0.0.1:9/", md5=good) == folder


def test_download_refuses_unsafe_archive(served_archive, tmp_path):
    url, serve_dir = served_archive
    md5 = hashlib.md5((serve_dir / "Task98_Evil.tar").read_bytes()).hexdigest()
    with pytest.raises(DataSetError, match=r"unsafe archive member '../escape.txt' \(a '..' component\)"):
        mc.data.download_msd("Task98_Evil", cache_dir=tmp_path / "c", base_url=url, md5=md5, progress=False)
    assert not (tmp_path / "escape.txt").exists()


def test_known_tasks_have_published_checksums():
    assert mc.data.MSD_TASKS["Task04_Hippocampus"] == "9d24dba78a72977dbd1d2e110310f31b"
    assert mc.data.MSD_TASKS["Task09_Spleen"] == "410d4a301da4e5b2f6f86ec3ddba524e"
    with pytest.raises(ValueError, match="Unknown Decathlon task"):
        mc.data.download_msd("Task42_Nothing")


def crafted_archives(folder):
    """Tar and zip archives that try to write outside the folder they are unpacked into."""
    import zipfile

    def tar(name, *members):
        buffer = stdio.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as handle:
            ok = tarfile.TarInfo("task/ok.txt")
            ok.size = 2
            handle.addfile(ok, stdio.BytesIO(b"ok"))
            for info in members:
                handle.addfile(info, stdio.BytesIO(b"bad") if info.isfile() else None)
        (folder / name).write_bytes(buffer.getvalue())

    def member(name, kind=tarfile.REGTYPE, link=""):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        info.size = 3 if kind == tarfile.REGTYPE else 0
        return info

    def zip_(name, member_name, link=None):
        with zipfile.ZipFile(folder / name, "w") as handle:
            handle.writestr("task/ok.txt", "ok")
            info = zipfile.ZipInfo(member_name)
            if link is not None:
                info.external_attr = (0o120777 << 16)  # a symbolic link, its target as content
            handle.writestr(info, link if link is not None else "bad")

    tar("absolute.tar", member("/tmp/medseg_escape.txt"))
    tar("dotdot.tar", member("task/../../escape.txt"))
    tar("symlink.tar", member("task/passwd", tarfile.SYMTYPE, "../../../etc/passwd"))
    tar("hardlink.tar", member("task/h", tarfile.LNKTYPE, "../outside.txt"))
    zip_("absolute.zip", "/tmp/medseg_escape.txt")
    zip_("dotdot.zip", "task/../../escape.txt")
    zip_("symlink.zip", "task/passwd", "../../../etc/passwd")
    return {
        "absolute.tar": "an absolute path", "dotdot.tar": "a '..' component",
        "symlink.tar": "a link to '../../../etc/passwd', outside the folder",
        "hardlink.tar": "a link to '../outside.txt', outside the folder",
        "absolute.zip": "an absolute path", "dotdot.zip": "a '..' component",
        "symlink.zip": "a link to '../../../etc/passwd', outside the folder",
    }


def test_safe_extract_refuses_crafted_archives_served_locally(served_archive, tmp_path):
    import urllib.request

    url, serve_dir = served_archive
    expected = crafted_archives(serve_dir)
    for name, reason in expected.items():
        archive = tmp_path / "downloads" / name
        archive.parent.mkdir(exist_ok=True)
        with urllib.request.urlopen(url + name, timeout=10) as response:  # from 127.0.0.1
            archive.write_bytes(response.read())
        target = tmp_path / "unpacked" / name
        with pytest.raises(DataSetError) as info:
            mc.data.safe_extract(archive, target)
        assert str(info.value).startswith(f"{archive}: refusing "), info.value
        assert reason in str(info.value) and "nothing was extracted" in str(info.value)
        assert list(target.rglob("*")) == []  # checked before anything was written
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "outside.txt").exists()
    import pathlib

    assert not pathlib.Path("/tmp/medseg_escape.txt").exists()


def test_safe_extract_unpacks_a_clean_archive_and_never_replaces_files(served_archive, tmp_path):
    url, serve_dir = served_archive
    files = mc.data.safe_extract(serve_dir / "Task99_Toy.tar", tmp_path / "out")
    assert (tmp_path / "out" / "Task99_Toy" / "dataset.json").is_file() and files
    with pytest.raises(DataSetError, match="already exists; the archive would replace it"):
        mc.data.safe_extract(serve_dir / "Task99_Toy.tar", tmp_path / "out")
    (tmp_path / "junk.tar").write_bytes(b"not an archive at all")
    with pytest.raises(DataSetError, match="not a tar or zip archive"):
        mc.data.safe_extract(tmp_path / "junk.tar", tmp_path / "out2")


def test_split_by_subject_keeps_a_subjects_cases_together():
    names = [f"c{i:02d}" for i in range(30)]
    plain = mc.data.split_cases(names, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert mc.data.split_cases(names, val_fraction=0.2, test_fraction=0.2, seed=3, groups={}) == plain
    groups = {name: f"s{i // 2}" for i, name in enumerate(names)}  # two cases per subject
    split = mc.data.split_cases(names, val_fraction=0.2, test_fraction=0.2, seed=3, groups=groups)
    part_of = {name: part for part, members in split.items() for name in members}
    assert sorted(part_of) == names
    assert all(part_of[a] == part_of[b] for a, b in zip(names[::2], names[1::2]))
    assert {part: len(members) for part, members in split.items()} == {"val": 6, "test": 6, "train": 18}


def test_the_hippocampus_files_carry_their_subjects():
    cases, _ = mc.data.load_hippocampus()
    subjects = {c.subject for c in cases}
    assert len(cases) == 208 and None not in subjects and len(subjects) == 147
