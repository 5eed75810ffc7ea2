"""The benchmark scripts' arithmetic (not their timings: benchmarks are not tests)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _cli_runs  # noqa: E402


def test_conv_flops_counts_by_hand(tf_setup):
    import keras

    import train_throughput

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)
    x = keras.layers.Conv2D(1, 1)(x)
    model = keras.Model(inputs, x)
    first, up, head = 2 * 8 * 8 * 9 * 1 * 4, 2 * 4 * 4 * 4 * 4 * 2, 2 * 8 * 8 * 1 * 2 * 1
    forward, training = train_throughput.conv_flops(model)
    assert forward == first + up + head
    assert training == 2 * first + 3 * (up + head)  # no input gradient for the first layer


def test_curve_helpers():
    curve = {"seconds": [10.0, 20.0, 30.0], "val_dice": [0.5, 0.91, 0.89]}
    assert _cli_runs.seconds_to(curve, 0.9) == 20.0
    assert _cli_runs.seconds_to(curve, 0.95) is None
    assert _cli_runs.dice_at(curve, 25) == 0.91
    assert _cli_runs.dice_at(curve, 5) == 0.0


def test_time_to_dice_ratios():
    import time_to_dice

    # an article seed that never reached the target counts with the seconds it trained
    result = time_to_dice.ratios([5.0, 6.0, 5.5], [48.0, None, 70.0], [48.0, 90.0, 70.0])
    assert result["article_seconds_counted"] == [48.0, 90.0, 70.0]
    assert result["ratio_median"] == round(70.0 / 5.5, 1)
    assert result["ratio_worst_case"] == 8.0
    assert result["lower_bound"] is True
    assert time_to_dice.ratios([5.0], [50.0], [50.0])["lower_bound"] is False


@pytest.mark.parametrize("figure", ["images_per_s", "ratio"])
def test_table_prints_committed_results(capsys, figure):
    import table

    assert table.main([]) == 0
    assert figure in capsys.readouterr().out


def test_plan_suite_splits_each_task_by_case(tmp_path):
    """The development suite's tasks: test cases never among the training cases; the
    template brain's slabs of 8 slices 12 apart, so a test slab has no training neighbour."""
    import plan_suite

    for task in ("nuclei", "brain_gm"):
        plan_suite.build_task(task, tmp_path / task)
        names = {part: sorted(p.name for p in (tmp_path / task / part / "images").iterdir()) for part in ("train", "test")}
        assert names["test"] and not set(names["train"]) & set(names["test"])
        masks = {part: sorted(p.name for p in (tmp_path / task / part / "masks").iterdir()) for part in ("train", "test")}
        assert masks == names
    assert len(list((tmp_path / "nuclei").glob("*/images/*.png"))) == 16
    starts = sorted(int(name[6:9]) for name in (p.name for p in (tmp_path / "brain_gm").glob("*/images/*.nii.gz")))
    assert set(np.diff(starts)) == {12}


def test_plain_unet_is_the_stated_recipe(tf_setup):
    import plain_unet

    model = plain_unet.unet(128, 3, 1)
    assert model.output_shape == (None, 128, 128, 1)
    assert sum(isinstance(layer, __import__("keras").layers.MaxPooling2D) for layer in model.layers) == 4
    assert model.layers[1].filters == 16
