"""``medseg-course train --dims 3`` end to end on small NIfTI volumes: train, predict,
evaluate; masks on each input's grid; bad 3D input refused in one line."""

import json
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest

CLI = [sys.executable, "-m", "medseg_course.cli"]


def run(*args, check=True):
    done = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def blob_volume(rng, shape=(20, 22, 26)):
    """An ellipsoid, its front half label 1 and back half label 2, in noise."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    centre = rng.uniform([7, 8, 10], [13, 14, 16])
    inside = (((grid - centre) / rng.uniform([4, 4, 5], [5, 6, 7])) ** 2).sum(-1) <= 1
    label = np.where(inside, np.where(grid[..., 1] >= centre[1], 1, 2), 0).astype(np.uint8)
    image = (rng.normal(size=shape) + 2.0 * inside + 0.7 * (label == 1)) * 300 + 1000
    return image.astype(np.float32), label


def affine(flip):
    matrix = np.diag([1.0, 1.0, 1.2, 1.0])
    if flip:  # the same grid stored left-right mirrored: a data set of mixed orientations
        matrix[0, 0], matrix[0, 3] = -1.0, 19.0
    return matrix


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(10):
        image, label = blob_volume(rng)
        nib.save(nib.Nifti1Image(image, affine(i % 2)), root / "imagesTr" / f"v{i}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine(i % 2)), root / "labelsTr" / f"v{i}.nii.gz")
        entries.append({"image": f"./imagesTr/v{i}.nii.gz", "label": f"./labelsTr/v{i}.nii.gz"})
    manifest = {"labels": {"0": "background", "1": "front", "2": "back"}, "training": entries}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_train_predict_evaluate_3d(task, tmp_path):
    out = tmp_path / "run"
    done = run("train", "--data", task, "--out", out, "--epochs", "3", "--steps-per-epoch", "20",
               "--base-filters", "4", "--patch-shape", "16", "16", "24", "--batch-size", "4", "--augment", "mirror",
               "--bn-momentum", "0.9")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["dims"] == 3 and set(result["test_dice"]) == {"1", "2"}
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "volume" and config["patch_shape"] == [16, 16, 24]
    assert config["augment"] == "mirror" and config["tta"] and config["bn_momentum"] == 0.9
    with zipfile.ZipFile(out / "model.keras") as saved:  # the saved layers, read without TensorFlow
        layers = json.loads(saved.read("config.json"))["config"]["layers"]
    momenta = {layer["config"]["momentum"] for layer in layers if "momentum" in layer["config"]}
    assert momenta == {0.9}
    split = config["split"]
    assert not set(split["test"]) & (set(split["val"]) | set(split["train"]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert {row["case"] for row in metrics["test"]["per_case"]} == set(split["test"])
    assert all("true_volume_ml" in row for row in metrics["test"]["per_case"])

    preds = tmp_path / "preds"
    run("predict", "--model", out / "model.keras", "--input", task / "imagesTr", "--out", preds)
    for i in range(10):
        image = nib.load(task / "imagesTr" / f"v{i}.nii.gz")
        mask = nib.load(preds / f"v{i}_mask.nii.gz")
        assert mask.shape == image.shape
        np.testing.assert_array_equal(mask.affine, image.affine)
    done = run("evaluate", "--pred", preds, "--truth", task / "labelsTr", "--out", tmp_path / "eval.csv")
    summary = json.loads(done.stdout)
    assert summary["cases"] == 10 and summary["dice"] > 0.3


def test_dims_3_on_2d_images_is_one_line(tmp_path):
    from PIL import Image

    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "data" / "images" / f"a{i}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "data" / "masks" / f"a{i}.png")
    done = run("train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--dims", "3", check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--dims 3 needs volumes" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_3d_augmentation_on_a_2d_run_is_one_line(tmp_path):
    done = run("train", "--data", "phantom", "--out", tmp_path / "run", "--augment", "mirror", check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--augment mirror chooses a 3D augmentation" in lines[0]
    assert not (tmp_path / "run").exists()


def test_two_and_a_half_d_trains_on_neighbouring_slices_and_predicts_on_the_grid(task, tmp_path):
    out = tmp_path / "run"
    run("train", "--data", task, "--out", out, "--dims", "2.5", "--epochs", "1", "--image-size", "32",
        "--base-filters", "4")
    config = json.loads((out / "config.json").read_text())
    assert config["dims"] == 2.5 and config["context"] == 1 and config["channels"] == 3
    preds = tmp_path / "preds"
    run("predict", "--model", out, "--input", task / "imagesTr" / "v1.nii.gz", "--out", preds)
    image = nib.load(task / "imagesTr" / "v1.nii.gz")
    mask = nib.load(preds / "v1_mask.nii.gz")
    assert mask.shape == image.shape
    np.testing.assert_array_equal(mask.affine, image.affine)


def test_two_and_a_half_d_holds_out_test_subjects_and_scores_them_once(task, tmp_path):
    import shutil

    root = tmp_path / "task"
    shutil.copytree(task, root)
    manifest = json.loads((root / "dataset.json").read_text())
    for i, entry in enumerate(manifest["training"]):
        entry["subject"] = f"s{i // 2}"  # v0 and v1 are one person, v2 and v3 another, ...
    (root / "dataset.json").write_text(json.dumps(manifest))
    out = tmp_path / "run"
    done = run("train", "--data", root, "--out", out, "--dims", "2.5", "--epochs", "1", "--image-size", "32",
               "--base-filters", "4", "--val-fraction", "0.2", "--test-fraction", "0.2")
    split = json.loads((out / "config.json").read_text())["split"]
    subject = {f"v{i}": f"s{i // 2}" for i in range(10)}
    parts = {part: {subject[name] for name in names} for part, names in split.items()}
    assert len(split["test"]) == 2 and not parts["test"] & (parts["train"] | parts["val"])
    assert not parts["val"] & parts["train"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {row["case"] for row in metrics["test"]["per_case"]} == set(split["test"])
    assert set(metrics["test"]["per_label"]) == {"1", "2"}
    assert set(json.loads(done.stdout.strip().splitlines()[-1])["test_dice"]) == {"1", "2"}


@pytest.mark.parametrize("data, fraction, expected", [
    ("phantom", "0.2", "--test-fraction holds out cases of a data folder"),
    ("task", "0.95", "cannot give"),
])
def test_a_test_fraction_that_cannot_work_is_one_line(task, tmp_path, data, fraction, expected):
    source = task if data == "task" else data
    done = run("train", "--data", source, "--out", tmp_path / "run", "--dims", "2", "--test-fraction", fraction,
               check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "run").exists()
