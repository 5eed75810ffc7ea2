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


def test_predict_equals_keras_predict_bit_for_bit(tf_setup):
    # predict calls the model batch by batch (faster than model.predict); same numbers,
    # the last, smaller batch included
    keras.utils.set_random_seed(0)
    model = mc.models.build_unet((16, 16, 1), depth=2, base_filters=4)
    images = np.random.default_rng(3).random((11, 16, 16, 1)).astype("float32")
    expected = model.predict(images, batch_size=4, verbose=0)
    np.testing.assert_array_equal(mc.inference.predict(model, images, batch_size=4), expected)


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


def test_gaussian_weights():
    w = mc.inference.gaussian_weights((9, 9))
    assert w[4, 4] == 1.0 and w[0, 0] < 0.01 and w.min() > 0
    np.testing.assert_allclose(w, w.T)


def test_sliding_window_equals_direct_prediction_for_a_pointwise_model(tf_setup):
    # A pixel-wise model gives the same answer whatever the tiling: blending must not change it.
    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(inputs))
    image = np.random.default_rng(3).normal(size=(37, 50, 1)).astype("float32")
    out = mc.inference.predict_sliding_window(model, image, overlap=0.5, batch_size=4)
    assert out.shape == (37, 50, 1)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-image)), rtol=1e-5)
    small = mc.inference.predict_sliding_window(model, image[:10, :12], overlap=0.25)
    assert small.shape == (10, 12, 1)  # padded up to one tile, cropped back


def test_sliding_window_bad_overlap(tf_setup):
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, inputs)
    with pytest.raises(ValueError, match="overlap"):
        mc.inference.predict_sliding_window(model, np.zeros((8, 8, 1)), overlap=1.0)
