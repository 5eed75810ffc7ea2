"""medseg-course train / predict / evaluate, end to end, as a user runs them (subprocesses)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medseg_course as mc

CLI = [sys.executable, "-m", "medseg_course.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
FAST = ["--image-size", "64", "--depth", "3", "--base-filters", "8", "--epochs", "8", "--batch-size", "4"]
AFFINE = np.array([[-0.7, 0, 0, 80.0], [0, 0.7, 0, -100.0], [0, 0, 3.0, 20.0], [0, 0, 0, 1]])


def run(*args, check=True):
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def make_dataset(root, kind, count=24):
    images, masks = mc.data.make_phantoms(count, 64, seed=5)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        grey = np.clip(images[i, ..., 0] / 1.3, 0, 1)
        mask = masks[i, ..., 0].astype(np.uint8)
        if kind == "png":
            mc.io.write_png(grey, root / "images" / f"case{i:02d}.png")
            mc.io.write_png(mask, root / "masks" / f"case{i:02d}_mask.png")
        else:  # 2D NIfTI slices with an oblique-free but anisotropic, flipped geometry
            nib.save(nib.Nifti1Image((grey * 1000).astype(np.int16)[..., None], AFFINE), root / "images" / f"case{i:02d}.nii.gz")
            nib.save(nib.Nifti1Image(mask[..., None], AFFINE), root / "masks" / f"case{i:02d}.nii.gz")
    return masks[..., 0].astype(np.uint8)


@pytest.mark.parametrize("kind", ["png", "nifti"])
def test_train_predict_evaluate(tmp_path, kind):
    data = tmp_path / "data"
    truth = make_dataset(data, kind)
    before = snapshot(data)
    run("train", "--data", data, "--out", tmp_path / "run", *FAST)
    run_dir = tmp_path / "run"
    for name in ("config.json", "log.csv", "model.keras", "best.keras", "resume.npz", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert len(list((run_dir / "overlays").glob("*.png"))) >= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["mode"] == "resize" and config["num_classes"] == 1
    assert not set(config["split"]["train"]) & set(config["split"]["val"])
    assert len((run_dir / "log.csv").read_text().splitlines()) == 9  # header + 8 epochs

    run("predict", "--model", run_dir / "model.keras", "--input", data / "images", "--out", tmp_path / "pred")
    suffix = ".png" if kind == "png" else ".nii.gz"
    predicted = sorted((tmp_path / "pred").glob(f"*_mask{suffix}"))
    assert len(predicted) == 24
    first = mc.io.read_image(predicted[0])
    if kind == "png":
        assert first.pixels.shape == (64, 64)
    else:
        assert first.pixels.shape == (64, 64, 1)
        np.testing.assert_allclose(first.affine, AFFINE)  # the mask lies on its image's grid

    result = run("evaluate", "--pred", tmp_path / "pred", "--truth", data / "masks", "--out", tmp_path / "eval.csv")
    summary = json.loads(result.stdout)
    assert summary["cases"] == 24
    # trivial predictors: all background scores Dice 0; all foreground scores 2|T| / (|T| + N)
    all_foreground = np.mean([2 * t.sum() / (t.sum() + t.size) for t in truth])
    assert summary["dice"] > max(0.0, all_foreground) + 0.3
    import csv

    with open(tmp_path / "eval.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 24 and "hd95" in rows[0]
    assert {r["distance_unit"] for r in rows} == {"mm" if kind == "nifti" else "pixel"}
    if kind == "nifti":  # areas in mm^2 from the 0.7 x 0.7 mm pixels
        t = truth[0]
        assert float(rows[0]["true_area_mm2"]) == pytest.approx(t.sum() * 0.49, rel=1e-6)
    assert snapshot(data) == before  # inputs untouched


def test_train_phantom_default_source(tmp_path):
    result = run("train", "--data", "phantom", "--num-images", "24", "--out", tmp_path / "run", *FAST[:6],
                 "--epochs", "1")
    assert json.loads(result.stdout.splitlines()[-1])["epochs_run"] == 1


def bad(tmp_path, name):
    folder = tmp_path / name
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    return folder


def png_pair(folder, stem, mask_shape=(32, 32)):
    mc.io.write_png(np.eye(32), folder / "images" / f"{stem}.png")
    mc.io.write_png(np.zeros(mask_shape, np.uint8), folder / "masks" / f"{stem}.png")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unmatched", r"image\(s\) without a mask: b.png"),
        ("unreadable", "images/a.png: not a readable image"),
        ("mask_size", r"masks/a.png: mask shape \(16, 16\) differs"),
        ("corrupt_nifti", "images/a.nii.gz: not a readable NIfTI"),
        ("empty", "no image files in the folder"),
        ("unknown_layout", "unknown layout"),
    ],
)
def test_bad_data_gives_one_line_error(tmp_path, case, expected):
    folder = bad(tmp_path, case)
    png_pair(folder, "a")
    if case == "unmatched":
        mc.io.write_png(np.eye(32), folder / "images" / "b.png")
    elif case == "unreadable":
        (folder / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    elif case == "mask_size":
        mc.io.write_png(np.zeros((16, 16), np.uint8), folder / "masks" / "a.png", overwrite=True)
    elif case == "corrupt_nifti":
        (folder / "images" / "a.png").unlink()
        (folder / "images" / "a.nii.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    elif case == "empty":
        for p in (folder / "images").iterdir():
            p.unlink()
    elif case == "unknown_layout":
        (folder / "masks" / "a.png").unlink()
        (folder / "masks").rmdir()
    before = snapshot(folder)
    result = run("train", "--data", folder, "--out", tmp_path / "run", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medseg-course train: error:"), result.stderr
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert snapshot(folder) == before
    assert not (tmp_path / "run").exists()


def test_run_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run("train", "--data", "phantom", "--out", out, check=False)
    assert result.returncode == 2 and "--overwrite" in result.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_predict_refuses_to_write_into_input(tmp_path):
    (tmp_path / "imgs").mkdir()
    result = run("predict", "--model", tmp_path / "nothing.keras", "--input", tmp_path / "imgs",
                 "--out", tmp_path / "imgs" / "out", check=False)
    assert result.returncode == 2 and "inside the input folder" in result.stderr


def test_help_for_every_command():
    for command in ("train", "predict", "evaluate", "info"):
        result = run(command, "--help")
        assert "usage: medseg-course " + command in result.stdout
