"""Figures: image/mask overlays with contours, montages and training curves.

Colours follow the Okabe-Ito palette, which stays distinguishable with the common forms
of colour blindness: ground truth in bluish green, predictions in orange.
"""

from __future__ import annotations

import numpy as np

from medseg_course.utils import check_array

__all__ = ["TRUTH_COLOUR", "PREDICTION_COLOUR", "OKABE_ITO", "use_colourblind_palette", "overlay", "save_overlay", "montage",
           "plot_history"]

TRUTH_COLOUR = "#009E73"  # Okabe-Ito bluish green
PREDICTION_COLOUR = "#E69F00"  # Okabe-Ito orange
#: The Okabe-Ito palette (blue, orange, bluish green, vermillion, sky blue, reddish purple,
#: yellow, black), in the order line plots use it.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")


def use_colourblind_palette():
    """Make Matplotlib's (and so pandas') line and bar colours cycle through ``OKABE_ITO``.

    Matplotlib's default cycle puts red and green side by side, which readers with the
    common forms of colour blindness cannot tell apart. ``mc.environment.setup`` calls this; it
    changes ``matplotlib.rcParams["axes.prop_cycle"]`` for the rest of the session.
    """
    import matplotlib as mpl  # noqa: PLC0415
    from cycler import cycler  # noqa: PLC0415

    mpl.rcParams["axes.prop_cycle"] = cycler(color=list(OKABE_ITO))


def _plane(array, name):
    array = check_array(array, name, ndim=(2, 3), dtype_kind="biuf")
    if array.ndim == 3:
        if array.shape[-1] == 1:
            return array[..., 0]
        if array.shape[-1] != 3:
            raise ValueError(
                f"{name} must be (H, W), (H, W, 1) or RGB (H, W, 3). Received: "
                f"{name}.shape={array.shape}"
            )
    return array


def overlay(image, truth=None, prediction=None, ax=None, title=None, spacing_mm=None):
    """Show an image with the contours of its ground truth and/or prediction.

    Parameters
    ----------
    image : array, shape (H, W), (H, W, 1) or (H, W, 3)
    truth, prediction : array, shape (H, W) or (H, W, 1), optional
        Binary masks (or label maps: one contour per label boundary).
    ax : matplotlib Axes, optional
        Where to draw; a new figure is made if omitted.
    title : str, optional
    spacing_mm : (float, float), optional
        Pixel size; when given, axes are labelled in millimetres.

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.lines import Line2D  # noqa: PLC0415

    image = _plane(image, "image")
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    extent = None
    if spacing_mm is not None:
        extent = (0, image.shape[1] * spacing_mm[1], image.shape[0] * spacing_mm[0], 0)
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("y (mm)")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.imshow(image, cmap="gray", extent=extent, interpolation="nearest")
    handles = []
    for mask, colour, label, style in (
        (truth, TRUTH_COLOUR, "ground truth", "-"),
        (prediction, PREDICTION_COLOUR, "prediction", "--"),
    ):
        if mask is None:
            continue
        plane = _plane(mask, label).astype(float)
        if plane.shape != image.shape[:2]:
            raise ValueError(
                f"{label} mask shape {plane.shape} does not match image shape {image.shape[:2]}"
            )
        levels = np.unique(plane)[:-1] + 0.5
        if levels.size:
            ax.contour(plane, levels=levels, colors=colour, linewidths=1.2, linestyles=style, extent=extent,
                       origin="upper" if extent else None)
        handles.append(Line2D([], [], color=colour, linestyle=style, label=label))
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize="x-small", framealpha=0.7)
    if title:
        ax.set_title(title, fontsize="small")
    return ax


def montage(images, truths=None, predictions=None, titles=None, ncols=4, size=2.5):
    """A grid of overlays.

    Parameters
    ----------
    images : array, shape (N, H, W, C)
    truths, predictions : array, shape (N, H, W, 1) or (N, H, W), optional
    titles : sequence of str, optional
    ncols : int
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    images = check_array(images, "images", ndim=(3, 4), dtype_kind="biuf")
    count = len(images)
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= count:
            ax.axis("off")
            continue
        overlay(
            images[i],
            None if truths is None else truths[i],
            None if predictions is None else predictions[i],
            ax=ax,
            title=None if titles is None else titles[i],
        )
        if i:
            legend = ax.get_legend()
            if legend is not None:
                legend.remove()
    fig.tight_layout()
    return fig


def plot_history(history, metrics=("loss", "dice"), title=None):
    """Training and validation curves from ``mc.training.fit``'s history dict.

    Parameters
    ----------
    history : dict of str to list of float
    metrics : sequence of str
        Keys to plot; ``val_<key>`` is drawn beside each when present.
    title : str, optional

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt  # noqa: PLC0415

    missing = [m for m in metrics if m not in history]
    if missing:
        raise ValueError(f"history has no {missing}; available keys: {sorted(history)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], color="#0072B2", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], color=PREDICTION_COLOUR, linestyle="--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_overlay(image, truth, prediction, path, title=None):
    """Write ``overlay(image, truth, prediction)`` to an image file (PNG by ``path``'s suffix).

    ``image`` may carry a channel axis: one channel, RGB, or several (an MR scan's sequences;
    the first is shown). Drawn on its own ``Figure``, without pyplot, so it neither needs a
    display nor changes a notebook's backend.
    """
    from matplotlib.figure import Figure  # noqa: PLC0415

    image = np.asarray(image)
    display = image[..., 0] if image.ndim == 3 and image.shape[-1] != 3 else image  # grey, or a multi-channel scan's first
    if title is not None:  # file names need not be UTF-8: escape what cannot be drawn
        title = str(title).encode("utf-8", "backslashreplace").decode("utf-8")
    figure = Figure(figsize=(4, 4))
    overlay(display, truth, prediction, ax=figure.subplots(), title=title)
    figure.savefig(path, dpi=80, bbox_inches="tight")
