import numpy as np
import pytest

import medseg_course as mc


def test_article_model_layer_for_layer(tf_setup):
    model = mc.models.build_seed_encoder_decoder((64, 64, 1))
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [64, 128, 256, 512, 256, 128, 64, 1]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 7 + [(1, 1)]
    names = [layer.__class__.__name__ for layer in model.layers]
    assert names.count("MaxPooling2D") == 3 and names.count("UpSampling2D") == 3
    assert "Concatenate" not in names  # no skip connections in the article's model
    # 640 + 73,856 + 295,168 + 1,180,160 + 1,179,904 + 295,040 + 73,792 + 65
    assert model.count_params() == 3_098_625
    assert model.output_shape == (None, 64, 64, 1)
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_article_model_width_multiplier(tf_setup):
    model = mc.models.build_seed_encoder_decoder((32, 32, 1), width=0.25)
    assert model.get_layer("enc1_conv").filters == 16
    assert model.get_layer("bottleneck_conv").filters == 128


def test_unet_structure(tf_setup):
    model = mc.models.build_unet((64, 64, 1), depth=3, base_filters=8)
    assert model.output_shape == (None, 64, 64, 1)
    for level in (1, 2, 3):
        assert model.get_layer(f"dec{level}_concat") is not None
    assert model.get_layer("bottleneck_conv1").filters == 64
    counts = mc.models.count_parameters(model)
    assert counts["total"] == model.count_params() and counts["non_trainable"] > 0


def test_unet_without_skips_is_the_control(tf_setup):
    with_skips = mc.models.build_unet((64, 64, 1), depth=3, base_filters=8)
    without = mc.models.build_unet((64, 64, 1), depth=3, base_filters=8, skips=False)
    names = {layer.name for layer in without.layers}
    assert not any(name.endswith("_concat") for name in names) and without.output_shape == (None, 64, 64, 1)
    # the same layers otherwise: only the decoder's first convolutions lose the skip channels
    assert names == {layer.name for layer in with_skips.layers} - {f"dec{level}_concat" for level in (1, 2, 3)}
    assert without.get_layer("dec1_conv1").kernel.shape == (3, 3, 8, 8)
    assert with_skips.get_layer("dec1_conv1").kernel.shape == (3, 3, 16, 8)


def test_unet_multiclass_softmax(tf_setup):
    model = mc.models.build_unet((32, 32, 3), num_classes=3, depth=2, base_filters=4)
    out = model.predict(np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32"), verbose=0)
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out.sum(-1), 1, rtol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mc.models.build_unet((60, 60, 1), depth=3), "divisible by 2\\*\\*3 = 8"),
        (lambda: mc.models.build_unet((64, 64)), "input_shape"),
        (lambda: mc.models.build_unet((64, 64, 1), num_classes=2), "ambiguous"),
        (lambda: mc.models.build_unet((64, 64, 1), depth=7), "depth"),
        (lambda: mc.models.build_unet((64, 64, 1), dropout=1.0), "dropout"),
        (lambda: mc.models.build_unet((64, 64, 1), bn_momentum=1.0), "bn_momentum must be in \\[0, 1\\)"),
        (lambda: mc.models.build_seed_encoder_decoder((100, 100, 1)), "divisible"),
        (lambda: mc.models.build_seed_encoder_decoder(width=0), "width"),
    ],
)
def test_bad_arguments(tf_setup, call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _batch_norm_pair(channels=5, rank=4):
    import keras

    rng = np.random.default_rng(0)
    keras_bn = keras.layers.BatchNormalization(momentum=0.9)
    fused_bn = mc.models.FusedBatchNormalization(momentum=0.9)
    for layer in (keras_bn, fused_bn):
        layer.build((None,) + (8,) * (rank - 2) + (channels,))
    for name in ("gamma", "beta"):
        value = rng.normal(1.0 if name == "gamma" else 0.0, 0.3, channels).astype("float32")
        getattr(keras_bn, name).assign(value)
        getattr(fused_bn, name).assign(value)
    return keras_bn, fused_bn


@pytest.mark.parametrize("shape", [(4, 8, 8, 5), (4, 6, 8, 8, 5)], ids=["image", "volume"])
def test_fused_batch_norm_matches_keras(tf_setup, shape):
    """Same outputs, gradients and moving statistics as Keras's layer, up to rounding, for
    images and volumes."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype("float32"))
    weights = tf.constant(rng.normal(size=shape).astype("float32"))
    results = []
    for layer in _batch_norm_pair(rank=len(shape)):
        for _ in range(2):  # two steps: the moving statistics move from their start
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True) * weights)
            grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([layer(x, training=True), *grads, layer.moving_mean, layer.moving_variance,
                        layer(x, training=False)])
    for ours, keras_value in zip(results[1], results[0]):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_value), rtol=1e-4, atol=1e-4)


def test_fused_batch_norm_in_unet_saves_and_loads(tf_setup, tmp_path):
    model = mc.models.build_unet((32, 32, 1), depth=2, base_filters=4)
    bns = [layer for layer in model.layers if "_bn" in layer.name]
    assert bns and all(type(layer) is mc.models.FusedBatchNormalization for layer in bns)
    assert {layer.momentum for layer in bns} == {0.5}  # bn_momentum's default
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    import keras

    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer(bns[0].name)) is mc.models.FusedBatchNormalization
    assert loaded.get_layer(bns[0].name).momentum == 0.5
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_fused_batch_norm_falls_back_for_a_mask(tf_setup):
    keras_bn, fused_bn = _batch_norm_pair(channels=3)
    x = np.random.default_rng(2).random((2, 8, 8, 3)).astype("float32")
    mask = np.ones((2, 8, 8), bool)
    mask[0, :4] = False
    np.testing.assert_allclose(np.asarray(fused_bn(x, training=True, mask=mask)),
                               np.asarray(keras_bn(x, training=True, mask=mask)), rtol=1e-6, atol=1e-6)


def test_unet_3d_from_a_volume_shape(tf_setup):
    model = mc.models.build_unet((16, 24, 32, 1), num_classes=3, depth=3, base_filters=4)
    assert model.name == "unet3d_d3_f4"
    assert model.output_shape == (None, 16, 24, 32, 3)
    assert model.get_layer("enc1_conv1").kernel.shape == (3, 3, 3, 1, 4)
    x = np.random.default_rng(0).random((1, 16, 24, 32, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0).sum(-1), 1.0, rtol=1e-5)  # softmax per voxel
    twin = mc.models.portable(model)
    np.testing.assert_allclose(twin.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match=r"Depth, height and width must be divisible by 2\*\*3 = 8.*16x24x40"):
        mc.models.build_unet((16, 24, 36, 1), depth=3)
    with pytest.raises(ValueError, match="encoder-decoder is 2D"):
        mc.models.build_seed_encoder_decoder((16, 16, 16, 1))
