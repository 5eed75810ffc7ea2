import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest

import medseg_course as mc


def test_overlay_draws_both_contours():
    images, masks = mc.data.make_phantoms(1, 32, seed=0)
    ax = mc.viz.overlay(images[0], masks[0], 1 - masks[0], title="x")
    assert len(ax.collections) == 2  # one contour set each
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ground truth", "prediction"]


def test_overlay_with_spacing_labels_axes_in_mm():
    images, masks = mc.data.make_phantoms(1, 32, seed=0)
    ax = mc.viz.overlay(images[0], masks[0], spacing_mm=(0.5, 0.5))
    assert ax.get_xlabel() == "x (mm)" and ax.get_xlim()[1] == pytest.approx(16)


def test_montage_and_history():
    images, masks = mc.data.make_phantoms(5, 32, seed=0)
    fig = mc.viz.montage(images, masks, masks, ncols=3)
    assert len(fig.axes) == 6
    fig = mc.viz.plot_history({"loss": [1, 0.5], "val_loss": [1.1, 0.6], "dice": [0.5, 0.8]})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="does not match"):
        mc.viz.overlay(np.zeros((8, 8)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="RGB"):
        mc.viz.overlay(np.zeros((8, 8, 2)))
    with pytest.raises(ValueError, match="history has no"):
        mc.viz.plot_history({"loss": [1.0]}, metrics=("dice",))


def test_setup_makes_plots_cycle_through_okabe_ito():
    import matplotlib as mpl

    import medseg_course as mc

    mc.environment.setup(seed=0)
    assert [c.lower() for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]] == [c.lower() for c in mc.viz.OKABE_ITO]
