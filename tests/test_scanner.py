"""mc.scanner: the fixed scanner shifts of chapters 7, 10 and 13 (NumPy only)."""

import subprocess
import sys

import numpy as np
import pytest

from medseg_course import scanner


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0.1, 0.9, (3, 16, 20, 1)).astype(np.float32)


def test_neutral_settings_return_the_images(images):
    out = scanner.simulate_scanner(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out, images)


def test_each_step_by_hand(images):
    field = scanner.bias_ramp((16, 20), 0.2)
    assert field[0, 0] == pytest.approx(1 - 0.2 * 1.4) and field[-1, -1] == pytest.approx(1 + 0.2 * 1.4)
    assert field[:, -1].mean() > field[:, 0].mean()  # rises left to right (weight 0.8) and down (0.6)
    np.testing.assert_allclose(scanner.simulate_scanner(images, bias=0.2), images * field[..., None], rtol=1e-6)
    np.testing.assert_allclose(scanner.simulate_scanner(images, gain=1.5, clip=(0, 1)),
                               np.clip(images * 1.5, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(scanner.simulate_scanner(images, gamma=0.5), np.sqrt(images), rtol=1e-6)
    blurred = scanner.simulate_scanner(images, blur=2.0)
    assert blurred.std() < images.std() and blurred.mean() == pytest.approx(images.mean(), abs=1e-3)
    # (N, H, W) works the same as (N, H, W, 1)
    np.testing.assert_array_equal(scanner.simulate_scanner(images[..., 0], bias=0.2, gamma=0.7),
                                  scanner.simulate_scanner(images, bias=0.2, gamma=0.7)[..., 0])


def test_rician_noise_is_seeded_and_lifts_dark_pixels():
    dark = np.zeros((2, 64, 64), np.float32)
    a = scanner.simulate_scanner(dark, noise=0.1, seed=3)
    np.testing.assert_array_equal(a, scanner.simulate_scanner(dark, noise=0.1, seed=3))
    assert (a >= 0).all() and a.mean() == pytest.approx(0.1 * np.sqrt(np.pi / 2), rel=0.05)  # Rayleigh mean
    rng = np.random.default_rng(3)
    first = scanner.simulate_scanner(dark, noise=0.1, seed=rng)
    second = scanner.simulate_scanner(dark, noise=0.1, seed=rng)
    np.testing.assert_array_equal(first, a)
    assert not np.array_equal(first, second)  # a generator is advanced: new noise each call
    gauss = scanner.simulate_scanner(dark, noise=0.1, noise_kind="gaussian", seed=0)
    assert gauss.mean() == pytest.approx(0, abs=0.01) and gauss.std() == pytest.approx(0.1, rel=0.05)


def test_add_noise_kinds():
    x = np.full((1000,), 0.5)
    rng = np.random.default_rng(0)
    expected = 0.5 + np.random.default_rng(0).normal(0, 0.1, x.shape)
    np.testing.assert_array_equal(scanner.add_noise(x, 0.1, "gaussian", seed=rng), expected)
    assert scanner.add_noise(x, 0.1, "speckle", seed=0).std() == pytest.approx(0.05, rel=0.1)
    np.testing.assert_array_equal(scanner.add_noise(x, 0.0, seed=0), x)
    np.testing.assert_array_equal(scanner.add_noise(x, 0.1, "none"), x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gain": 0}, "gain"),
        ({"gamma": -1}, "gamma"),
        ({"noise": -0.1}, "noise"),
        ({"blur": -1}, "blur"),
        ({"noise_kind": "poisson"}, "noise_kind must be one of"),
        ({"clip": (1, 0)}, "clip must be None or"),
        ({"bias": 1.0}, "must stay positive"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(images, kwargs, match):
    kwargs.setdefault("noise", 0.01)
    with pytest.raises(ValueError, match=match):
        scanner.simulate_scanner(images, **kwargs)


def test_bad_images_and_gamma_on_negative_values(images):
    with pytest.raises(ValueError, match="images"):
        scanner.simulate_scanner(images[0, ..., 0])  # (H, W): no batch axis
    with pytest.raises(ValueError, match="images"):
        scanner.simulate_scanner((images * 255).astype(np.uint8))
    with pytest.raises(ValueError, match="non-negative intensities"):
        scanner.simulate_scanner(images - 0.5, gamma=0.8)
    np.testing.assert_array_equal(scanner.simulate_scanner(images - 0.5, gamma=0.8, clip=(0, 1)) >= 0, True)
    with pytest.raises(ValueError, match="shape must be"):
        scanner.bias_ramp((4, 4, 1), 0.1)
    with pytest.raises(ValueError, match="kind must be one of"):
        scanner.add_noise(images, 0.1, kind="salt")


def test_import_starts_no_tensorflow():
    code = "import sys, medseg_course.scanner; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
