import numpy as np
import pytest

import medseg_course as mc
from medseg_course import preprocessing as pp


@pytest.fixture
def noisy():
    images, masks = mc.data.make_phantoms(1, 64, seed=0)
    return images[0], masks[0]


@pytest.mark.parametrize(
    "fn, params",
    [(pp.denoise_gaussian, {"sigma": 1.0}), (pp.denoise_median, {"size": 3}),
     (pp.denoise_bilateral, {}), (pp.denoise_nlm, {})],
)
def test_denoisers_reduce_noise_and_keep_shape(fn, params):
    spec = mc.data.PhantomSpec(noise="none", texture=0)
    clean, _ = mc.data.make_phantoms(1, 64, spec=spec, seed=0)
    noisy, _ = mc.data.make_phantoms(1, 64, spec=mc.data.PhantomSpec(noise_level=0.08, texture=0), seed=0)
    out = fn(noisy[0], **params)
    assert out.shape == noisy[0].shape and out.dtype == np.float32
    rescale = pp.normalize_minmax  # bilateral returns [0, 1]; compare on one scale
    before = np.abs(rescale(noisy[0]) - rescale(clean[0])).mean()
    after = np.abs(rescale(out) - rescale(clean[0])).mean()
    assert after < before


def test_noise_estimate_recovers_known_sigma():
    rng = np.random.default_rng(0)
    smooth = np.add.outer(np.linspace(0, 1, 128), np.linspace(0, 2, 128))  # a ramp: no response
    for sigma in (0.02, 0.1):
        estimate = pp.estimate_noise_sigma(smooth + rng.normal(0, sigma, smooth.shape))
        assert estimate == pytest.approx(sigma, rel=0.05)
    assert pp.estimate_noise_sigma(smooth) == pytest.approx(0, abs=1e-9)


def test_window_intensity_hand_values():
    hu = np.array([[-1000.0, -160.0], [40.0, 240.0]])
    out = pp.window_intensity(hu, level=40, width=400)
    np.testing.assert_allclose(out, [[0.0, 0.0], [0.5, 1.0]])


def test_minmax_and_zscore():
    image = np.array([[1.0, 3.0], [5.0, 7.0]])
    np.testing.assert_allclose(pp.normalize_minmax(image), [[0, 1 / 3], [2 / 3, 1]], rtol=1e-6)
    z = pp.normalize_zscore(image)
    assert z.mean() == pytest.approx(0, abs=1e-6) and z.std() == pytest.approx(1, rel=1e-5)
    region = np.array([[True, True], [False, False]])
    zr = pp.normalize_zscore(image, mask=region)
    np.testing.assert_allclose(zr[region], [-1, 1], rtol=1e-6)
    np.testing.assert_array_equal(pp.normalize_minmax(np.full((3, 3), 5.0)), np.zeros((3, 3)))


def test_zscore_constant_and_bad_mask():
    with pytest.raises(ValueError, match="constant"):
        pp.normalize_zscore(np.ones((4, 4)))
    with pytest.raises(ValueError, match="empty"):
        pp.normalize_zscore(np.arange(16.0).reshape(4, 4), mask=np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="mask must cover"):
        pp.normalize_zscore(np.arange(16.0).reshape(4, 4), mask=np.ones((2, 2), bool))


def test_clip_percentiles_ignores_outlier():
    image = np.linspace(0, 1, 400).reshape(20, 20)
    image[0, 0] = 1000.0
    out = pp.clip_percentiles(image, 1, 99)
    assert out.max() == 1.0 and np.median(out) == pytest.approx(0.5, abs=0.05)


def test_enhancement_ranges(noisy):
    image, _ = noisy
    for fn in (pp.equalize_histogram, pp.clahe):
        out = fn(image)
        assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
    eq = pp.equalize_histogram(image)
    # equalised histogram: the intensity CDF is close to the identity
    assert np.abs(np.sort(eq.ravel()) - np.linspace(0, 1, eq.size)).max() < 0.05


def test_resize_image_and_mask():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 3
    out = pp.resize_mask(mask, (16, 16))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 3}  # no invented labels
    assert (out == 3).sum() == 4 * (mask == 3).sum()
    image = np.arange(64, dtype=np.float32).reshape(8, 8, 1)
    up = pp.resize_image(image, (16, 16))
    assert up.shape == (16, 16, 1) and up.min() >= 0 and up.max() <= 63
    with pytest.raises(ValueError, match="shape"):
        pp.resize_image(image, (16,))


def test_article_preprocess():
    image = np.array([[0, 255], [51, 102]], np.uint8)
    out = pp.article_preprocess(image)
    assert out.shape == (1, 2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, :, 0], [[0, 1], [0.2, 0.4]])
    with pytest.raises(ValueError, match="uint8"):
        pp.article_preprocess(image.astype(np.uint16))
    with pytest.raises(ValueError, match="rank 2"):
        pp.article_preprocess(np.zeros((2, 2, 3), np.uint8))


def test_apply_to_batch_and_rgb():
    batch = np.random.default_rng(0).random((3, 16, 16, 3)).astype(np.float32)
    out = pp.apply_to_batch(pp.denoise_gaussian, batch, sigma=1.0)
    assert out.shape == batch.shape
    np.testing.assert_allclose(out[1, ..., 2], pp.denoise_gaussian(batch[1, ..., 2], 1.0), rtol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pp.denoise_gaussian(np.zeros((2, 2, 2, 2))), "rank"),
        (lambda: pp.denoise_gaussian(np.full((4, 4), np.nan)), "NaN"),
        (lambda: pp.denoise_gaussian(np.zeros((4, 4)), sigma=0), "sigma"),
        (lambda: pp.denoise_median(np.zeros((4, 4)), size=4), "odd"),
        (lambda: pp.window_intensity(np.zeros((4, 4)), 40, -1), "width"),
        (lambda: pp.clahe(np.zeros((4, 4)), clip_limit=2), "clip_limit"),
        (lambda: pp.clip_percentiles(np.zeros((4, 4)), 90, 10), "Percentiles"),
        (lambda: pp.denoise_gaussian(np.array([["a"]])), "dtype"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("shape", [(50, 80), (80, 50), (64, 64), (20, 30)])
def test_fit_and_restore_roundtrip(shape):
    mask = np.zeros(shape, np.uint8)
    mask[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = 2
    fitted, info = pp.fit_to_shape(mask, (64, 64), is_mask=True)
    assert fitted.shape == (64, 64) and set(np.unique(fitted)) <= {0, 2}
    restored = pp.restore_shape(fitted, info, is_mask=True)
    assert restored.shape == shape
    assert np.mean(restored == mask) > 0.97  # nearest resampling twice: at most a boundary pixel
    image = np.random.default_rng(0).random(shape + (3,)).astype(np.float32)
    fitted_image, info = pp.fit_to_shape(image, (64, 64))
    assert fitted_image.shape == (64, 64, 3)
    assert pp.restore_shape(fitted_image, info).shape == shape + (3,)


def test_fit_keeps_aspect_ratio():
    _, info = pp.fit_to_shape(np.zeros((50, 100)), (64, 64))
    assert info.resized_shape == (32, 64) and info.offset == (16, 0) and info.scale == 0.64
    with pytest.raises(ValueError, match="FitInfo"):
        pp.restore_shape(np.zeros((64, 64)), {"scale": 1})
