"""The fingerprint and the planner: hand-made structures, the choices they lead to, the
``plan`` command's answers to degenerate data, and runs that repeat from a saved plan."""

import json

import numpy as np
import pytest

import medseg_course as mc
from medseg_course.fingerprint import fingerprint, resize_ceiling, structure_geometry
from medseg_course.planning import choose_input, estimate_memory_gb, plan_2d
from medseg_course.samples import SliceCase


def _case(name, mask, channels=1):
    mask = np.asarray(mask, np.uint8)
    image = mask[None, ..., None].astype(np.float32).repeat(channels, axis=-1)
    return SliceCase(name, image, mask[None])


def _disc(size, radius):
    yy, xx = np.mgrid[0:size, 0:size]
    return (np.hypot(yy - size / 2, xx - size / 2) <= radius).astype(np.uint8)


def _lines(size, width=1, step=24):
    mask = np.zeros((size, size), np.uint8)
    for row in range(step // 2, size, step):
        mask[row : row + width, 8:-8] = 1
    return mask


def test_structure_geometry_of_a_line_and_a_disc():
    mask = np.zeros((64, 64), np.uint8)
    mask[5:8, 4:60] = 1  # a line 3 pixels wide
    mask |= _disc(64, 10).astype(np.uint8) * (np.mgrid[0:64, 0:64][0] > 12)
    geometry = structure_geometry(mask)
    assert geometry["components"] == 2
    assert sorted(geometry["thickness_px"])[0] == 3  # the line: twice the distance 2, minus one
    assert 19 <= max(geometry["thickness_px"]) <= 21  # the disc of radius 10
    assert np.median(geometry["widths_px"][: len(geometry["widths_px"]) // 2]) <= 21


def test_resize_ceiling_keeps_blobs_and_loses_thin_lines():
    blobs = [_case(f"b{i}", _disc(512, 150 + 10 * i)) for i in range(3)]
    lines = [_case(f"l{i}", _lines(512)) for i in range(3)]
    assert resize_ceiling(blobs, 512) == 1.0  # native size: nothing lost
    small = [_case(f"s{i}", _disc(32, 6 + i)) for i in range(3)]
    assert choose_input(small, 32)[:2] == ("resize", 32)  # images smaller than a patch: their own size
    assert resize_ceiling(blobs, 128) > 0.98
    assert resize_ceiling(lines, 128) < 0.5  # 1-pixel lines at a quarter of the resolution
    assert choose_input(blobs, 512)[:2] == ("resize", 128)
    mode, side, ceilings, reason = choose_input(lines, 512)
    assert (mode, side) == ("patch", None) and "patches" in reason and max(ceilings.values()) < 0.98


def test_fingerprint_refuses_degenerate_data_in_one_line():
    disc = _disc(32, 8)
    with pytest.raises(mc.datasets.DataSetError, match="at least 2"):
        fingerprint([_case("a", disc)])
    with pytest.raises(mc.datasets.DataSetError, match="no mask has any foreground"):
        fingerprint([_case("a", disc * 0), _case("b", disc * 0)])
    with pytest.raises(mc.datasets.DataSetError, match="different channel counts.*a: 1, b: 3"):
        fingerprint([_case("a", disc), _case("b", disc, channels=3)])


def test_vessel_and_lesion_photographs_get_different_plans_for_stated_reasons():
    """Thin vessels that resizing erases train on native patches; large lesions in large
    photographs are resized whole (context), each with the measured reason."""
    images, masks = mc.phantoms.make_vessel_images(3, shape=(384, 384), seed=1)
    vessels = [SliceCase(f"v{i}", images[i][None].astype(np.float32), masks[i][None]) for i in range(3)]
    images, masks = mc.phantoms.make_lesion_photos(3, shape=(288, 384), seed=1)
    lesions = [SliceCase(f"s{i}", images[i][None].astype(np.float32), masks[i][None]) for i in range(3)]
    plans = {name: plan_2d(fingerprint(cases), cases, time_budget_min=5)
             for name, cases in (("vessels", vessels), ("lesions", lesions))}
    assert plans["vessels"]["choices"]["mode"]["value"] == "patch"
    assert "thin structures vanish" in plans["vessels"]["choices"]["mode"]["reason"]
    assert plans["lesions"]["choices"]["mode"]["value"] == "resize"
    assert plans["lesions"]["choices"]["image_size"]["value"] == 128
    fp = plans["vessels"]["fingerprint"]
    assert fp["modality"] == "colour photograph" and fp["structures"]["width_px"]["p10"] <= 2
    assert plans["lesions"]["fingerprint"]["structures"]["width_px"]["p10"] > 20


def test_memory_estimate_grows_with_the_batch(tf_setup):
    model = mc.models.build_unet((64, 64, 1), depth=3, base_filters=8)
    small, large = (estimate_memory_gb(model, batch, 0) for batch in (2, 32))
    assert 0.6 < small < large


def _folder(root, masks, channels=None):
    from medseg_course.writers import write_png

    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(masks):
        grey = (mask * 200 + 20).astype(np.uint8)
        image = np.stack([grey, grey // 2, 255 - grey], axis=-1) if channels and channels[i] == 3 else grey
        write_png(image, root / "images" / f"case_{i}.png")
        write_png(mask.astype(np.uint8), root / "masks" / f"case_{i}.png")
    return root


@pytest.mark.parametrize(
    "masks, channels, message",
    [
        ([_disc(48, 12)], None, "1 case"),
        ([_disc(48, 12) * 0] * 4, None, "no mask has any foreground"),
        ([_disc(48, 12)] * 4, [1, 3, 1, 3], "different channel counts"),
    ],
    ids=["one_case", "no_foreground", "mixed_channels"],
)
def test_plan_says_what_is_wrong_in_one_line(tmp_path, capsys, masks, channels, message):
    data = _folder(tmp_path / "data", masks, channels)
    assert mc.cli.main(["plan", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_plan_prints_each_choice_with_its_reason_and_json(tmp_path, capsys):
    data = _folder(tmp_path / "data", [_disc(64, 10 + i) for i in range(6)])
    assert mc.cli.main(["plan", str(data), "--time-budget", "3"]) == 0
    text = capsys.readouterr().out
    assert "mode = resize" in text and "base_filters = 16" in text and "depth = 3" in text
    assert mc.cli.main(["plan", str(data), "--json", "--depth", "2"]) == 0
    first = capsys.readouterr().out
    assert mc.cli.main(["plan", str(data), "--json", "--depth", "2"]) == 0
    assert capsys.readouterr().out == first  # same data and options, the same plan
    plan = json.loads(first)
    assert plan["dims"] == 2 and plan["fingerprint"]["cases"] == 6  # training and validation cases (no test here)
    assert plan["choices"]["depth"] == {"value": 2, "reason": "set by you (--depth)", "by": "you"}


def test_a_saved_plan_repeats_the_run(tf_setup, tmp_path, capsys):
    """A budgeted run plans its recipe (size, depth, width, batch), measures its step time
    and records whole epochs in plan.json; training that plan again (no budget, no
    measurement, the phantoms drawn at the plan's size) gives the same log and scores."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert mc.cli.main(["train", "--data", "phantom", "--num-images", "12", "--image-size", "32", "--time-budget", "0.25",
                        "--out", str(first)]) == 0
    plan = json.loads((first / "plan.json").read_text())
    assert {name: plan["choices"][name]["by"] for name in ("mode", "depth", "base_filters", "batch_size", "epochs")} == \
        {"mode": "plan", "depth": "plan", "base_filters": "plan", "batch_size": "plan", "epochs": "plan"}
    assert plan["choices"]["epochs"]["value"] >= 1
    assert {"seconds_per_step", "peak_memory_gb"} <= set(plan["estimate"])
    assert "validation_dice" in plan["postprocess"]
    assert mc.cli.main(["train", "--data", "phantom", "--num-images", "12", "--plan", str(first / "plan.json"),
                        "--out", str(second)]) == 0
    capsys.readouterr()
    logs = [(run / "log.csv").read_text().splitlines() for run in (first, second)]
    columns = logs[0][0].split(",")
    keep = [i for i, name in enumerate(columns) if name != "epoch_time_s"]
    assert [[row.split(",")[i] for i in keep] for row in logs[0]] == [[row.split(",")[i] for i in keep] for row in logs[1]]
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (first, second)]
    assert metrics[0]["summary"] == metrics[1]["summary"]


def test_a_plan_for_other_data_is_refused_and_a_budget_plan_trains_without_budget(tf_setup, tmp_path, capsys):
    grey = _folder(tmp_path / "grey", [_disc(48, 8 + i) for i in range(4)])
    colour = _folder(tmp_path / "colour", [_disc(48, 8 + i) for i in range(4)], channels=[3] * 4)
    assert mc.cli.main(["plan", str(grey), "--json", "--time-budget", "5"]) == 0
    (tmp_path / "plan.json").write_text(capsys.readouterr().out)
    code = mc.cli.main(["train", "--data", str(colour), "--plan", str(tmp_path / "plan.json"), "--out",
                        str(tmp_path / "run_colour")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "another channel count" in err and len(err.splitlines()) == 1
    assert mc.cli.main(["train", "--data", str(grey), "--plan", str(tmp_path / "plan.json"), "--epochs", "1",
                        "--out", str(tmp_path / "run_grey")]) == 0
    assert json.loads((tmp_path / "run_grey" / "plan.json").read_text())["choices"]["epochs"]["value"] == 1


def test_a_recipe_over_the_memory_limit_is_refused(tf_setup, tmp_path, capsys):
    code = mc.cli.main(["train", "--data", "phantom", "--num-images", "12", "--image-size", "32", "--batch-size", "4",
                        "--epochs", "1", "--memory-limit", "0.5", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "over the 0.5 GB limit" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "model.keras").exists()


def test_predict_uses_the_clean_up_the_run_chose(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    assert "postprocess" in config  # chosen on the validation cases
    probs = [np.zeros((16, 16, 1), np.float32)]
    probs[0][2:5, 2:5] = probs[0][8:14, 8:14] = 0.9
    kept = mc.inference.labels_from_probabilities(probs, {**config, "postprocess": {"largest": True}})
    assert kept.sum() == 36  # only the larger square
    assert mc.inference.labels_from_probabilities(probs, {**config, "postprocess": {}}).sum() == 45


def test_ct_gets_one_window_that_training_and_predict_apply(tf_setup, tmp_path, capsys):
    """Volumes in Hounsfield units are recognised as CT and normalised with one window from
    the labelled tissue (nnU-Net's CT rule); the run records it and predict applies it."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    root = tmp_path / "ct"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(4):
        volume = np.full((32, 32, 4), -1000.0, np.float32)  # air
        volume[4:28, 4:28] = 40 + rng.normal(0, 10, (24, 24, 4))  # soft tissue
        mask = np.zeros((32, 32, 4), np.uint8)
        mask[10 + i : 20 + i, 10:20] = 1
        volume[mask > 0] = 120 + rng.normal(0, 10, int(mask.sum()))  # an enhancing lesion
        nib.save(nib.Nifti1Image(volume, np.eye(4)), root / "images" / f"ct{i}.nii.gz")
        nib.save(nib.Nifti1Image(mask, np.eye(4)), root / "masks" / f"ct{i}.nii.gz")
    assert mc.cli.main(["plan", str(root), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    scheme = plan["choices"]["normalisation"]["value"]
    assert plan["fingerprint"]["modality"] == "CT" and scheme["scheme"] == "window"
    assert 80 < scheme["low"] < scheme["mean"] < scheme["high"] < 170
    out = tmp_path / "run"
    assert mc.cli.main(["train", "--data", str(root), "--out", str(out), "--image-size", "32", "--depth", "2",
                        "--base-filters", "4", "--epochs", "1", "--batch-size", "4"]) == 0
    assert json.loads((out / "config.json").read_text())["normalisation_scheme"] == scheme
    image = mc.io.read_image(root / "images" / "ct0.nii.gz")
    normalised = mc.preprocessing.normalise_for(image.to_slices(), scheme)
    assert normalised.min() == pytest.approx((scheme["low"] - scheme["mean"]) / scheme["std"], rel=1e-5)
    assert mc.cli.main(["predict", "--model", str(out), "--input", str(root / "images"), "--out",
                        str(tmp_path / "pred")]) == 0
