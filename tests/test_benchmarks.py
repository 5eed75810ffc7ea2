"""The benchmark scripts' arithmetic (not their timings: benchmarks are not tests)."""

import sys
from pathlib import Path

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


@pytest.mark.parametrize("figure", ["images_per_s", "ratio"])
def test_table_prints_committed_results(capsys, figure):
    import table

    assert table.main([]) == 0
    assert figure in capsys.readouterr().out
