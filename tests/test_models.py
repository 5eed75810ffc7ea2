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
        (lambda: mc.models.build_seed_encoder_decoder((100, 100, 1)), "divisible"),
        (lambda: mc.models.build_seed_encoder_decoder(width=0), "width"),
    ],
)
def test_bad_arguments(tf_setup, call, message):
    with pytest.raises(ValueError, match=message):
        call()
