import keras
import numpy as np
import pytest

import medseg_course as mc


@pytest.fixture(scope="module")
def shift_model(tf_setup):
    """A model whose output depends on orientation: it copies the pixel to the left."""
    inputs = keras.Input((8, 8, 1))
    shifted = keras.layers.Lambda(lambda x: keras.ops.pad(x[:, :, :-1, :], ((0, 0), (0, 0), (1, 0), (0, 0))))(inputs)
    return keras.Model(inputs, shifted)


def test_plain_prediction_and_single_image(shift_model):
    images = np.random.default_rng(0).random((3, 8, 8, 1)).astype("float32")
    out = mc.inference.predict(shift_model, images)
    np.testing.assert_allclose(out[:, :, 1:], images[:, :, :-1], rtol=1e-6)
    np.testing.assert_allclose(mc.inference.predict(shift_model, images[0]), out[0], rtol=1e-6)


def test_tta_averages_flipped_back_predictions(shift_model):
    images = np.random.default_rng(1).random((2, 8, 8, 1)).astype("float32")
    out = mc.inference.predict(shift_model, images, tta=("none", "lr"))
    left = np.zeros_like(images)
    left[:, :, 1:] = images[:, :, :-1]
    right = np.zeros_like(images)
    right[:, :, :-1] = images[:, :, 1:]
    np.testing.assert_allclose(out, (left + right) / 2, rtol=1e-6)


def test_tta_on_symmetric_model_is_identity(tf_setup):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Activation("sigmoid")])
    images = np.random.default_rng(2).random((2, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(mc.inference.predict(model, images, tta=True),
                               mc.inference.predict(model, images), rtol=1e-6)


@pytest.mark.parametrize(
    "images, kwargs, message",
    [
        (np.zeros((2, 16, 16, 1)), {}, "model expects"),
        (np.zeros((2, 8, 8, 3)), {}, "model expects"),
        (np.zeros((8, 8)), {}, "rank"),
        (np.zeros((1, 8, 8, 1)), {"tta": ("rot90",)}, "tta"),
        (np.full((1, 8, 8, 1), np.nan), {}, "NaN"),
    ],
)
def test_bad_input(shift_model, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mc.inference.predict(shift_model, images, **kwargs)
