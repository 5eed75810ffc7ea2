import keras
import numpy as np
import pytest

import medseg_course as mc


def test_bce_hand_value():
    y = np.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    p = np.array([0.8, 0.4]).reshape(1, 1, 2, 1)
    expected = -(np.log(0.8) + np.log(0.6)) / 2  # both terms inside the sum
    np.testing.assert_allclose(mc.losses.binary_cross_entropy(y, p), [expected], rtol=1e-6)


def test_bce_matches_keras():
    rng = np.random.default_rng(0)
    y = (rng.random((3, 8, 8, 1)) > 0.5).astype("float32")
    p = rng.uniform(0.01, 0.99, (3, 8, 8, 1)).astype("float32")
    ours = np.asarray(mc.losses.binary_cross_entropy(y, p))
    reference = np.asarray(keras.losses.binary_crossentropy(y, p)).mean(axis=(1, 2))
    np.testing.assert_allclose(ours, reference, rtol=1e-5)


def test_article_bracket_differs_from_correct_bce():
    # The misplaced bracket sums only the foreground term and adds one background term.
    y = np.array([1.0, 0.0, 0.0]).reshape(1, 1, 3, 1)
    p = np.array([0.9, 0.2, 0.3]).reshape(1, 1, 3, 1)
    correct = float(mc.losses.binary_cross_entropy(y, p)[0])
    wrong = -(np.sum(y * np.log(p)) + (1 - y[0, 0, -1, 0]) * np.log(1 - p[0, 0, -1, 0])) / 3
    assert correct == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.7)) / 3)
    assert abs(correct - wrong) > 0.05


def test_weighted_bce_weight_one_is_bce_and_weights_foreground():
    y = np.array([1.0, 0.0]).reshape(1, 1, 2, 1)
    p = np.array([0.8, 0.4]).reshape(1, 1, 2, 1)
    plain = mc.losses.binary_cross_entropy(y, p)
    np.testing.assert_allclose(mc.losses.weighted_binary_cross_entropy(y, p, 1.0), plain, rtol=1e-6)
    np.testing.assert_allclose(
        mc.losses.weighted_binary_cross_entropy(y, p, 3.0), [-(3 * np.log(0.8) + np.log(0.6)) / 2], rtol=1e-6
    )


def test_soft_dice_hand_values():
    y = np.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 2, 2, 1)
    p = np.array([1.0, 0.5, 0.5, 0.0]).reshape(1, 2, 2, 1)
    # 1 - (2*1.5 + s) / (2 + 2 + s) with s = 1e-6 -> 0.25
    np.testing.assert_allclose(mc.losses.soft_dice_loss(y, p, smooth=1e-6), [0.25], atol=1e-6)
    perfect = mc.losses.soft_dice_loss(y, y, smooth=1e-6)
    np.testing.assert_allclose(perfect, [0.0], atol=1e-6)


def test_soft_dice_empty_mask_rule():
    empty = np.zeros((1, 4, 4, 1))
    np.testing.assert_allclose(mc.losses.soft_dice_loss(empty, empty), [0.0])


def test_multiclass_labels_and_one_hot_agree():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (2, 6, 6))
    logits = rng.normal(size=(2, 6, 6, 3))
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    one_hot = np.eye(3)[labels]
    for fn in (mc.losses.soft_dice_loss, mc.losses.categorical_cross_entropy, mc.losses.dice_ce_loss):
        np.testing.assert_allclose(fn(labels, probs), fn(one_hot, probs), rtol=1e-6)
        np.testing.assert_allclose(fn(labels[..., None], probs), fn(one_hot, probs), rtol=1e-6)
    expected_ce = -np.log(np.take_along_axis(probs, labels[..., None], -1)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(mc.losses.categorical_cross_entropy(labels, probs), expected_ce, rtol=1e-5)


def test_dice_ce_is_sum():
    rng = np.random.default_rng(3)
    y = (rng.random((2, 4, 4, 1)) > 0.5).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 4, 4, 1)).astype("float32")
    total = mc.losses.dice_ce_loss(y, p)
    parts = mc.losses.soft_dice_loss(y, p) + mc.losses.binary_cross_entropy(y, p)
    np.testing.assert_allclose(total, parts, rtol=1e-6)


@pytest.mark.parametrize(
    "y, p, message",
    [
        (np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 5, 1)), "must match"),
        (np.zeros((4, 4)), np.zeros((4, 4)), r"\(B, H, W, C\)"),
        (np.zeros((1, 2, 2, 1)), np.full((1, 2, 2, 1), np.nan), "NaN"),
    ],
)
def test_bad_input(y, p, message):
    with pytest.raises(ValueError, match=message):
        mc.losses.binary_cross_entropy(y, p)


def test_labels_outside_class_range():
    probs = np.full((1, 2, 2, 3), 1 / 3, "float32")
    with pytest.raises(ValueError, match="3 classes"):
        mc.losses.soft_dice_loss(np.array([[[0, 1], [2, 3]]]), probs)


def test_bad_parameters():
    with pytest.raises(ValueError, match="pos_weight"):
        mc.losses.WeightedBinaryCrossEntropy(pos_weight=0)
    with pytest.raises(ValueError, match="Unknown loss"):
        mc.losses.get_loss("hinge")


@pytest.mark.parametrize("name", ["bce", "weighted_bce", "dice", "dice_ce"])
def test_keras_classes_roundtrip_config(name):
    loss = mc.losses.get_loss(name)
    clone = type(loss).from_config(loss.get_config())
    y = np.ones((2, 4, 4, 1), "float32")
    p = np.full((2, 4, 4, 1), 0.7, "float32")
    assert float(clone(y, p)) == pytest.approx(float(loss(y, p)))
    assert float(loss(y, p)) == pytest.approx(float(np.mean(getattr(mc.losses, {
        "bce": "binary_cross_entropy", "weighted_bce": "weighted_binary_cross_entropy",
        "dice": "soft_dice_loss", "dice_ce": "dice_ce_loss"}[name])(y, p))), rel=1e-6)


def test_focal_reduces_to_bce():
    rng = np.random.default_rng(4)
    y = (rng.random((2, 4, 4, 1)) > 0.5).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 4, 4, 1)).astype("float32")
    np.testing.assert_allclose(mc.losses.focal_loss(y, p, gamma=0, alpha=0.5),
                               0.5 * np.asarray(mc.losses.binary_cross_entropy(y, p)), rtol=1e-5)
    # an easy pixel (p = 0.9 for y = 1) loses (1 - 0.9)^2 = 1 % of its weight
    easy = mc.losses.focal_loss(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 0.9), gamma=2, alpha=1)
    np.testing.assert_allclose(easy, [-0.01 * np.log(0.9)], rtol=1e-5)


def test_tversky_hand_values():
    y = np.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 2, 2, 1)
    p = np.array([1.0, 0.0, 1.0, 0.0]).reshape(1, 2, 2, 1)  # TP 1, FP 1, FN 1
    np.testing.assert_allclose(mc.losses.tversky_loss(y, p, 0.3, 0.7, smooth=1e-6), [1 - 1 / 2], atol=1e-6)
    np.testing.assert_allclose(mc.losses.tversky_loss(y, p, 0.5, 0.5, 1e-6), mc.losses.soft_dice_loss(y, p, 1e-6), atol=1e-6)
    np.testing.assert_allclose(mc.losses.focal_tversky_loss(y, p, 0.3, 0.7, gamma=1.0, smooth=1e-6), [0.5], atol=1e-6)
    np.testing.assert_allclose(mc.losses.focal_tversky_loss(y, p, 0.3, 0.7, gamma=0.5, smooth=1e-6), [0.5**0.5], atol=1e-6)


def test_multiclass_dice_with_and_without_background():
    labels = np.array([[[0, 1], [1, 2]]])
    probs = np.eye(3, dtype="float32")[labels]  # perfect prediction
    np.testing.assert_allclose(mc.losses.soft_dice_loss(labels, probs, include_background=True), [0.0], atol=1e-6)
    wrong_background = probs.copy()
    wrong_background[0, 0, 0] = [0, 0, 1]  # background pixel predicted as class 2
    without = float(mc.losses.soft_dice_loss(labels, wrong_background, smooth=1e-6)[0])
    with_bg = float(mc.losses.soft_dice_loss(labels, wrong_background, smooth=1e-6, include_background=True)[0])
    # class 1 perfect (loss 0); class 2: Dice 2*1/(1+2), loss 1/3 -> mean over classes 1, 2: 1/6.
    # Background: its only pixel was missed, Dice 0, loss 1 -> (1 + 0 + 1/3) / 3 = 4/9.
    assert without == pytest.approx(1 / 6, abs=1e-5)
    assert with_bg == pytest.approx(4 / 9, abs=1e-5)


@pytest.mark.parametrize("name", ["focal", "tversky", "focal_tversky"])
def test_new_losses_have_configs(name):
    loss = mc.losses.get_loss(name)
    clone = type(loss).from_config(loss.get_config())
    y = np.ones((1, 4, 4, 1), "float32")
    p = np.full((1, 4, 4, 1), 0.6, "float32")
    assert float(clone(y, p)) == pytest.approx(float(loss(y, p)))


def test_loss_switch_computes_the_selected_loss_and_round_trips():
    rng = np.random.default_rng(5)
    y = (rng.random((2, 8, 8, 1)) > 0.7).astype("float32")
    p = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype("float32")
    candidates = {"BCE": mc.losses.BinaryCrossEntropy(), "Dice + BCE": "dice_ce", "Keras BCE": keras.losses.BinaryCrossentropy()}
    switch = mc.losses.LossSwitch(candidates)
    assert switch.names == ("BCE", "Dice + BCE", "Keras BCE") and switch.selected == "BCE"
    for name, loss in [("BCE", candidates["BCE"]), ("Dice + BCE", mc.losses.DiceCELoss()), ("Keras BCE", candidates["Keras BCE"])]:
        switch.select(name)
        assert float(switch(y, p)) == pytest.approx(float(loss(y, p)), rel=1e-6)
    clone = mc.losses.LossSwitch.from_config(switch.get_config())
    assert clone.selected == "Keras BCE" and float(clone(y, p)) == pytest.approx(float(switch(y, p)))
    with pytest.raises(ValueError, match="Unknown loss 'Dice'.*holds"):
        switch.select("Dice")
    with pytest.raises(ValueError, match="non-empty dict"):
        mc.losses.LossSwitch({})
    with pytest.raises(ValueError, match=r"losses\['x'\] is a int, not a loss"):
        mc.losses.LossSwitch({"x": 3})
    with pytest.raises(ValueError, match="Unknown loss"):
        mc.losses.LossSwitch({"x": "hinge"})


def test_loss_switch_trains_each_loss_in_one_traced_step():
    """Selecting another loss and re-initialising reuses the compiled step and trains as that loss alone does."""
    rng = np.random.default_rng(6)
    x = rng.random((8, 16, 16, 1)).astype("float32")
    y = (x > 0.6).astype("float32")

    def trained(loss, model=None, seed=0):
        if model is None:
            keras.utils.set_random_seed(seed)
            model = mc.models.build_unet((16, 16, 1), depth=2, base_filters=4)
            mc.training.compile_model(model, loss, learning_rate=1e-2)
        else:
            mc.training.reinitialize(model, seed)
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        return model

    candidates = {"BCE": "bce", "soft Dice": "dice"}
    switch = mc.losses.LossSwitch(candidates)
    shared = trained(switch)
    step = shared.train_function
    for name in switch.names:
        switch.select(name)
        trained(switch, shared)
        alone = trained(mc.losses.get_loss(candidates[name]))
        for a, b in zip(shared.get_weights(), alone.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
    assert shared.train_function is step  # traced once


@pytest.mark.parametrize("name", ["dice_ce", "dice", "focal", "tversky", "focal_tversky"])
def test_volume_losses_equal_the_loss_of_the_volume_cut_into_one_image(name):
    """A volume (B, D, H, W, C) is scored over all its voxels: the same value as the loss of
    its slices laid side by side as one image."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 4, 6, 5))
    probs = rng.dirichlet(np.ones(3), size=(2, 4, 6, 5)).astype("float32")
    loss = mc.losses.get_loss(name)
    flat_labels, flat_probs = labels.reshape(2, 24, 5), probs.reshape(2, 24, 5, 3)
    np.testing.assert_allclose(float(loss(labels, probs)), float(loss(flat_labels, flat_probs)), rtol=1e-5)
