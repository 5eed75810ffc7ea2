import random

import keras
import numpy as np
import pytest
import tensorflow as tf

import medseg_course as mc


@pytest.fixture(scope="module")
def small_data():
    return mc.data.make_phantoms(24, image_size=32, seed=0)


def test_dataset_batches(tf_setup, small_data):
    images, masks = small_data
    ds = mc.training.make_dataset(images, masks, batch_size=10, shuffle=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [10, 10, 4]
    np.testing.assert_array_equal(batches[0][0].numpy(), images[:10])


def test_dataset_without_autotune_yields_the_same_batches(tf_setup, small_data):
    # make_dataset switches tf.data's autotuner off for speed; the shuffled, augmented
    # batches of two epochs must be exactly those of the same pipeline with it on.
    import tensorflow as tf

    images, masks = small_data
    options = tf.data.Options()
    options.autotune.enabled = True

    def epochs(dataset, count=2):  # reshuffled and re-augmented at every iteration
        return [[(a.numpy(), b.numpy()) for a, b in dataset] for _ in range(count)]

    def pipeline():
        return mc.training.make_dataset(images, masks, batch_size=8, augment=mc.training.Augmentation(), seed=3)

    ours, tuned = pipeline(), pipeline().with_options(options)
    assert not ours.options().autotune.enabled and tuned.options().autotune.enabled
    for epoch_ours, epoch_tuned in zip(epochs(ours), epochs(tuned), strict=True):
        for (a_img, a_mask), (b_img, b_mask) in zip(epoch_ours, epoch_tuned, strict=True):
            np.testing.assert_array_equal(a_img, b_img)
            np.testing.assert_array_equal(a_mask, b_mask)


def test_augmentation_moves_image_and_mask_together(tf_setup):
    # The image *is* its mask: any geometric mismatch would show as a difference.
    spec = mc.data.PhantomSpec(noise="none", blur_sigma=0, bias_strength=0, texture=0, intensity_scale=(1, 1))
    _, masks = mc.data.make_phantoms(8, 32, spec=spec, seed=0)
    aug = mc.training.Augmentation(intensity=0, noise=0, rotation_deg=20, scale=0.1, translate=0.1)
    ds = mc.training.make_dataset(masks.copy(), masks, batch_size=8, augment=aug, seed=1)
    image, mask = next(iter(ds))
    changed = np.mean(image.numpy() != masks)
    assert changed > 0.01  # the transform did something
    agree = np.mean((image.numpy() >= 0.5) == (mask.numpy() >= 0.5))
    assert agree > 0.99
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0}  # nearest keeps the mask binary


def test_augmentation_multiclass_labels_stay_labels(tf_setup):
    images, labels = mc.data.make_phantoms(4, 32, target="multiclass", seed=0)
    ds = mc.training.make_dataset(images, labels, 4, augment=mc.training.Augmentation(), seed=0)
    _, mask = next(iter(ds))
    assert mask.dtype.name == "uint8" and set(np.unique(mask.numpy())) <= {0, 1, 2}


def test_augmentation_is_seeded_and_changes_per_epoch(tf_setup, small_data):
    images, masks = small_data
    make = lambda seed: mc.training.make_dataset(images, masks, 24, augment=mc.training.Augmentation(), seed=seed)
    ds = make(0)
    epoch1 = next(iter(ds))[0].numpy()
    epoch2 = next(iter(ds))[0].numpy()
    assert not np.allclose(epoch1, epoch2)
    np.testing.assert_array_equal(epoch1, next(iter(make(0)))[0].numpy())


def test_fit_learns_and_writes_outputs(tf_setup, small_data, tmp_path):
    images, masks = small_data
    model = mc.models.build_unet((32, 32, 1), depth=2, base_filters=8)
    mc.training.compile_model(model, "dice_ce", 3e-3)
    history = mc.training.fit(model, (images[:16], masks[:16]), (images[16:], masks[16:]), epochs=3, out_dir=tmp_path)
    assert set(history) >= {"loss", "dice", "val_loss", "val_dice", "epoch_time_s"}
    assert history["loss"][-1] < history["loss"][0]
    assert (tmp_path / "best.keras").exists()
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 4 and "val_dice" in log[0]
    reloaded = keras.models.load_model(tmp_path / "best.keras")
    assert reloaded.count_params() == model.count_params()
    with pytest.raises(FileExistsError, match="overwrite"):
        mc.training.fit(model, (images[:16], masks[:16]), (images[16:], masks[16:]), epochs=1, out_dir=tmp_path)


def test_fit_requires_compiled_model(tf_setup, small_data):
    model = mc.models.build_unet((32, 32, 1), depth=2, base_filters=4)
    with pytest.raises(ValueError, match="compile"):
        mc.training.fit(model, small_data)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x, y: mc.training.make_dataset(x, y[:5]), "same number"),
        (lambda x, y: mc.training.make_dataset(x[..., 0], y), "rank 4"),
        (lambda x, y: mc.training.make_dataset(x, y, batch_size=0), "batch_size"),
        (lambda x, y: mc.training.make_dataset(x, y, augment={"flip": True}), "Augmentation"),
        (lambda x, y: mc.training.Augmentation(scale=1.5), "scale"),
    ],
)
def test_bad_input(tf_setup, small_data, call, message):
    with pytest.raises(ValueError, match=message):
        call(*small_data)


def test_sample_patches_oversamples_foreground():
    image = np.zeros((200, 300, 1), np.float32)
    mask = np.zeros((200, 300), np.uint8)
    mask[100:104, 150:154] = 1  # 16 of 60,000 pixels
    x, y = mc.training.sample_patches([image], [mask], (32, 32), patches_per_image=200, foreground_fraction=0.5, seed=0)
    assert x.shape == (200, 32, 32, 1) and y.shape == (200, 32, 32)
    with_foreground = np.mean(y.reshape(200, -1).max(axis=1) > 0)
    assert 0.4 < with_foreground < 0.6  # uniform sampling would give ~2 %
    small_x, _ = mc.training.sample_patches([np.ones((10, 12, 1))], [np.zeros((10, 12))], (16, 16), 2)
    assert small_x.shape == (2, 16, 16, 1) and small_x[:, 10:].max() == 0  # zero-padded


@pytest.mark.parametrize(
    "aug",
    [
        mc.training.Augmentation(flip=False, rotation_deg=0, scale=0, translate=0, intensity=0, noise=0, elastic=0.03),
        mc.training.Augmentation(flip=False, rotation_deg=0, scale=0, translate=0, intensity=0, noise=0, gamma=0.4),
        mc.training.Augmentation(flip=False, rotation_deg=0, scale=0, translate=0, intensity=0, noise=0, bias_field=0.3),
        mc.training.Augmentation(flip=False, rotation_deg=0, scale=0, translate=0, intensity=0, noise=0, resolution=1.0),
    ],
)
def test_extra_augmentations(tf_setup, aug):
    spec = mc.data.PhantomSpec(noise="none", blur_sigma=0, bias_strength=0, texture=0, intensity_scale=(1, 1))
    images, masks = mc.data.make_phantoms(4, 32, spec=spec, seed=0)
    source = masks.copy() if aug.elastic else images  # gamma leaves a 0/1 image unchanged
    image, mask = next(iter(mc.training.make_dataset(source, masks, 4, shuffle=False, augment=aug, seed=0)))
    image, mask = image.numpy(), mask.numpy()
    assert not np.allclose(image, source, atol=1e-3)  # it changed something
    assert set(np.unique(mask)) <= {0.0, 1.0}
    if aug.elastic:
        assert not np.array_equal(mask, masks)  # geometry moved ...
        assert np.mean((image >= 0.5) == (mask >= 0.5)) > 0.97  # ... for image and mask alike
    else:
        np.testing.assert_array_equal(mask, masks)  # intensity-only: the mask is untouched


def test_time_budget_and_resume(tf_setup, small_data, tmp_path):
    images, masks = small_data
    model = mc.models.build_unet((32, 32, 1), depth=2, base_filters=4)
    mc.training.compile_model(model)
    history = mc.training.fit(model, (images[:16], masks[:16]), (images[16:], masks[16:]), epochs=50,
                              out_dir=tmp_path, time_budget_s=1e-3)
    assert len(history["loss"]) == 1  # the budget stopped it after the first epoch
    resumed = mc.models.build_unet((32, 32, 1), depth=2, base_filters=4)
    mc.training.compile_model(resumed)
    more = mc.training.fit(resumed, (images[:16], masks[:16]), (images[16:], masks[16:]), epochs=3,
                           out_dir=tmp_path, resume=True)
    assert len(more["loss"]) == 2  # epochs 2 and 3
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 1 + 3
    with pytest.raises(FileNotFoundError, match="Cannot resume"):
        mc.training.fit(resumed, (images, masks), epochs=1, out_dir=tmp_path / "new", resume=True)


def test_reinitialize_restarts_training_from_scratch(tf_setup, small_data):
    images, masks = small_data
    model = mc.training.compile_model(mc.models.build_unet((32, 32, 1), depth=2, base_filters=8), "dice_ce", 3e-3)
    learning_rate = float(model.optimizer.learning_rate.numpy())

    def run(seed):
        mc.training.reinitialize(model, seed)
        assert int(model.optimizer.iterations.numpy()) == 0
        start = [w.copy() for w in model.get_weights()]
        data = mc.training.make_dataset(images, masks, batch_size=8, seed=seed)
        model.fit(data, epochs=2, verbose=0)
        return start, model.get_weights()

    start_a, end_a = run(1)
    start_b, end_b = run(2)
    start_c, end_c = run(1)
    assert int(model.optimizer.iterations.numpy()) == 6
    assert float(model.optimizer.learning_rate.numpy()) == learning_rate  # not reset to 0
    assert any(not np.array_equal(a, b) for a, b in zip(start_a, start_b))  # a new draw per seed
    for a, c in zip(start_a + end_a, start_c + end_c):  # same seed: the same run, bit for bit
        np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="seed"):
        mc.training.reinitialize(model, -1)


def test_reinitialize_equals_a_model_built_under_the_seed(tf_setup, small_data):
    images, masks = small_data

    def build():
        return mc.training.compile_model(mc.models.build_unet((32, 32, 1), depth=2, base_filters=8, dropout=0.3), "bce")

    def train(model):  # shuffled and augmented: tf.data's draws depend on TensorFlow's global seed
        data = mc.training.make_dataset(images, masks, batch_size=8, seed=5, augment=mc.training.Augmentation())
        model.fit(data, epochs=2, verbose=0)
        return model.get_weights()

    keras.utils.set_random_seed(5)
    built = train(build())
    reused = build()
    train(reused)  # trained once already: weights, Adam moments and dropout state all moved
    reinitialized = train(mc.training.reinitialize(reused, 5))
    for a, b in zip(built, reinitialized):
        np.testing.assert_array_equal(a, b)


def test_reinitialize_keeps_the_compiled_steps(tf_setup, small_data, monkeypatch):
    # tf.random.set_seed clears TensorFlow's kernel cache, and with it every model's
    # instantiated training step (seconds to rebuild); reinitialize seeds without it.
    from tensorflow.python import pywrap_tfe

    images, masks = small_data
    model = mc.training.compile_model(mc.models.build_unet((32, 32, 1), depth=2, base_filters=8), "dice_ce")
    model.fit(images, masks, batch_size=8, epochs=1, verbose=0)

    def cleared(*args):
        raise AssertionError("reinitialize cleared TensorFlow's kernel cache")

    monkeypatch.setattr(pywrap_tfe, "TFE_ContextClearCaches", cleared)
    mc.training.reinitialize(model, 3)
    seeded = (random.random(), np.random.random(), tf.random.uniform([2]).numpy())
    monkeypatch.undo()
    keras.utils.set_random_seed(3)
    keras.models.clone_model(model)  # the draws reinitialize makes
    assert seeded[:2] == (random.random(), np.random.random())
    np.testing.assert_array_equal(seeded[2], tf.random.uniform([2]).numpy())  # first draw of a fresh op
