"""A model the course saves loads in plain Keras, where medseg_course is not installed."""

import subprocess
import sys

import numpy as np

import medseg_course as mc

# Runs in a fresh interpreter in which importing medseg_course fails, as on a machine
# without the package: only Keras's own layers can be deserialised.
_PLAIN_KERAS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.modules["medseg_course"] = None  # import medseg_course -> ImportError
import numpy as np, keras
model = keras.saving.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
print(sorted({type(layer).__module__.split(".")[0] for layer in model.layers}))
"""


def _predict_without_package(model_path, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([sys.executable, "-c", _PLAIN_KERAS, str(model_path), str(tmp_path / "x.npy"),
                           str(tmp_path / "p.npy")], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['keras']", done.stdout
    return np.load(tmp_path / "p.npy")


def test_cli_model_loads_in_plain_keras_and_predicts_the_same(tiny_run, tmp_path):
    """medseg-course train saves model.keras; plain Keras loads it and predicts what the
    package's pipeline predicts from the same file, to 1e-6."""
    model, config = mc.inference.load_run(tiny_run / "model.keras")
    assert not any(isinstance(layer, mc.models.FusedBatchNormalization) for layer in model.layers)
    x = mc.data.make_phantoms(4, image_size=config["input_size"], seed=7)[0]
    ours = mc.inference.predict(model, x)
    theirs = _predict_without_package(tiny_run / "model.keras", x, tmp_path)
    np.testing.assert_allclose(theirs, ours, atol=1e-6, rtol=0)


def test_save_model_swaps_the_fused_layer_and_keeps_predictions(tf_setup, tmp_path):
    """A trained U-Net with FusedBatchNormalization (moving statistics away from their initial
    values) saved by training.save_model: plain Keras's predictions equal the in-memory
    model's to 1e-6."""
    images, masks = mc.data.make_phantoms(8, image_size=32, seed=0)
    model = mc.models.build_unet((32, 32, 1), depth=2, base_filters=4)
    mc.training.compile_model(model, "dice_ce", 1e-2)
    for _ in range(3):
        model.train_on_batch(images, masks)
    assert any(isinstance(layer, mc.models.FusedBatchNormalization) for layer in model.layers)
    path = mc.training.save_model(model, tmp_path / "unet.keras")
    theirs = _predict_without_package(path, images, tmp_path)
    np.testing.assert_allclose(theirs, model.predict(images, verbose=0), atol=1e-6, rtol=0)
