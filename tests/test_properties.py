"""Property-based tests (hypothesis): metrics, losses and preprocessing over random shapes,
dtypes and empty masks.

Each property holds for every input hypothesis draws, not only for the hand-picked cases of
the other test files: metric ranges and identities, the empty-mask rules, losses that stay
finite and non-negative at probabilities of exactly 0 and 1, and preprocessing that keeps
shapes and ranges for any finite image, constant images included. Runs are derandomized
(the same examples every time, no example database), so CI is repeatable.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import medseg_course as mc

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=20, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

MASK_DTYPES = st.sampled_from([np.bool_, np.uint8, np.int32, np.float32, np.float64])
IMAGE_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64])


@st.composite
def mask_pairs(draw, ndim=None, max_side=10):
    """Two binary masks of one random shape (2D, or a batch), random dtype, often empty."""
    ndim = draw(st.sampled_from([2, 3])) if ndim is None else ndim
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(ndim))
    dtype = draw(MASK_DTYPES)

    def one():
        kind = draw(st.sampled_from(["random", "empty", "full"]))
        if kind == "empty":
            return np.zeros(shape, dtype)
        if kind == "full":
            return np.ones(shape, dtype)
        return draw(hnp.arrays(np.bool_, shape)).astype(dtype)

    return one(), one()


@st.composite
def images(draw, max_side=12, channels=True):
    dtype = draw(IMAGE_DTYPES)
    shape = (draw(st.integers(2, max_side)), draw(st.integers(2, max_side)))
    if channels and draw(st.booleans()):
        shape += (draw(st.integers(1, 3)),)
    if np.dtype(dtype).kind == "f":
        elements = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(max(int(info.min), -30000), min(int(info.max), 60000))
    return draw(hnp.arrays(dtype, shape, elements=elements))


# ---------------------------------------------------------------------------- metrics


@FAST
@given(mask_pairs())
def test_overlap_metrics_ranges_identities_and_empty_rules(pair):
    truth, pred = pair
    counts = mc.metrics.confusion_counts(truth, pred)
    pixels = truth.size if truth.ndim == 2 else truth[0].size
    assert np.all(counts["tp"] + counts["fp"] + counts["fn"] + counts["tn"] == pixels)
    d = np.atleast_1d(mc.metrics.dice(truth, pred))
    i = np.atleast_1d(mc.metrics.iou(truth, pred))
    assert np.all((0 <= d) & (d <= 1)) and np.all((0 <= i) & (i <= 1))
    np.testing.assert_allclose(i, d / (2 - d))  # IoU and Dice are one monotone map apart
    np.testing.assert_array_equal(d, np.atleast_1d(mc.metrics.dice(pred, truth)))  # symmetric
    assert np.all(np.atleast_1d(mc.metrics.dice(truth, truth)) == 1)  # perfect = 1, empty too
    both_empty = (counts["tp"] + counts["fp"] + counts["fn"]) == 0
    np.testing.assert_array_equal(d[both_empty], 1.0)
    assert np.all(np.atleast_1d(mc.metrics.dice(truth, pred, empty_value=0.0))[both_empty] == 0.0)
    for name in ("precision", "sensitivity", "specificity"):
        value = np.atleast_1d(getattr(mc.metrics, name)(truth, pred))
        assert np.all(np.isnan(value) | ((0 <= value) & (value <= 1))), name


@FAST
@given(mask_pairs(ndim=2, max_side=9), st.floats(0.2, 5.0))
def test_surface_distances_scale_with_spacing_and_follow_the_empty_rules(pair, spacing):
    truth, pred = pair
    hd = mc.metrics.hausdorff_distance(truth, pred, percentile=100)
    hd_scaled = mc.metrics.hausdorff_distance(truth, pred, spacing_mm=(spacing, spacing), percentile=100)
    hd95 = mc.metrics.hausdorff_distance(truth, pred)
    empty_t, empty_p = not np.any(truth), not np.any(pred)
    if empty_t and empty_p:
        assert hd == 0.0 and hd95 == 0.0
    elif empty_t or empty_p:
        assert np.isnan(hd) and np.isnan(hd95)  # undefined, never a silent 0
    else:
        assert 0 <= hd95 <= hd + 1e-9
        assert hd_scaled == pytest.approx(hd * spacing)
        assert hd == mc.metrics.hausdorff_distance(pred, truth, percentile=100)  # symmetric
        assert mc.metrics.hausdorff_distance(truth, truth) == 0.0
        sd = mc.metrics.surface_dice(truth, pred, tolerance_mm=hd)
        assert sd == pytest.approx(1.0)  # every boundary point lies within the maximum distance


@FAST
@given(mask_pairs(ndim=2), st.integers(2, 5))
def test_non_binary_masks_are_refused_with_a_clear_message(pair, value):
    truth, pred = pair
    bad = truth.astype(np.int32)
    bad.flat[0] = value
    with pytest.raises(ValueError, match="y_true"):
        mc.metrics.dice(bad, pred)


# ----------------------------------------------------------------------------- losses


@st.composite
def loss_inputs(draw):
    batch, height, width = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    truth = draw(st.sampled_from(["random", "empty", "full"]))
    shape = (batch, height, width, 1)
    y = {"empty": np.zeros(shape), "full": np.ones(shape)}.get(truth)
    if y is None:
        y = draw(hnp.arrays(np.bool_, shape)).astype(np.float32)
    # probabilities anywhere in [0, 1], including exactly 0 and 1 (log(0) must not leak out)
    p = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0]) | st.floats(0, 1, width=32)))
    return y.astype(np.float32), p


@SLOW
@given(loss_inputs())
def test_losses_are_finite_non_negative_and_per_image(tf_setup, data):
    y, p = data
    for name in ("bce", "dice", "dice_ce", "focal", "tversky", "focal_tversky", "weighted_bce"):
        value = np.asarray(mc.losses.get_loss(name)(y, p))
        assert value.shape in ((y.shape[0],), ()), name
        assert np.all(np.isfinite(value)) and np.all(value >= -1e-6), (name, value)
    dice_loss = np.asarray(mc.losses.soft_dice_loss(y, p))
    assert np.all(dice_loss <= 1 + 1e-6)
    # a perfect prediction scores (close to) the minimum
    assert np.all(np.asarray(mc.losses.soft_dice_loss(y, y)) <= 1e-6)
    assert np.all(np.asarray(mc.losses.binary_cross_entropy(y, y)) < 1e-5)


@SLOW
@given(loss_inputs())
def test_bce_is_the_formula_with_both_terms_inside_the_sum(tf_setup, data):
    y, p = data
    eps = np.float32(mc.losses.EPSILON)  # clipped in float32, as the loss does
    clipped = np.clip(p, eps, np.float32(1) - eps).astype(np.float64)
    expected = -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(mc.losses.binary_cross_entropy(y, p)), expected, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------------- preprocessing


@FAST
@given(images())
def test_intensity_normalisations_keep_shape_and_range_for_any_finite_image(image):
    for fn in (mc.preprocessing.clip_percentiles, mc.preprocessing.normalize_minmax):
        out = fn(image)
        assert out.shape == image.shape and out.dtype == np.float32
        assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 1
    window = mc.preprocessing.window_intensity(image, level=40, width=400)
    assert window.shape == image.shape and 0 <= window.min() and window.max() <= 1
    if np.ptp(image.astype(np.float64)) == 0:  # constant images: defined, not NaN
        assert np.all(mc.preprocessing.normalize_minmax(image) == 0)
        with pytest.raises(ValueError, match="constant"):
            mc.preprocessing.normalize_zscore(image)
    else:
        z = mc.preprocessing.normalize_zscore(image.astype(np.float64))
        assert abs(float(z.mean())) < 1e-3 and abs(float(z.std()) - 1) < 1e-3


@FAST
@given(images(channels=False), st.integers(4, 20), st.integers(4, 20))
def test_fit_to_shape_and_back(image, height, width):
    fitted, info = mc.preprocessing.fit_to_shape(image, (height, width))
    assert fitted.shape == (height, width)
    restored = mc.preprocessing.restore_shape(fitted, info)
    assert restored.shape == image.shape[:2]
    labels = (image.astype(np.int64) % 3).astype(np.uint8)
    fitted_mask, mask_info = mc.preprocessing.fit_to_shape(labels, (height, width), is_mask=True)
    assert set(np.unique(fitted_mask)) <= set(np.unique(labels)) | {0}  # no invented labels
    back = mc.preprocessing.restore_shape(fitted_mask, mask_info, is_mask=True)
    assert back.shape == labels.shape and set(np.unique(back)) <= set(np.unique(labels)) | {0}


@FAST
@given(images(max_side=10))
def test_denoising_keeps_shape_and_finiteness(image):
    for fn in (mc.preprocessing.denoise_gaussian, mc.preprocessing.denoise_median):
        out = fn(image)
        assert out.shape == image.shape and np.all(np.isfinite(out))


@FAST
@given(images(max_side=8), st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_pixels_are_refused_by_name(image, bad):
    image = image.astype(np.float32)
    image.flat[0] = bad
    with pytest.raises(ValueError, match="image"):
        mc.preprocessing.clip_percentiles(image)
