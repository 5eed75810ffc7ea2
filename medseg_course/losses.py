"""Segmentation losses: cross-entropy written from the formula, Dice, and their sum.

Each loss is a pure function returning one value per image, shape ``(B,)``, built from
``keras.ops`` so it accepts NumPy arrays and backend tensors alike, plus a
``keras.losses.Loss`` class (mean over the batch) with ``get_config`` for training and
saving.

Shapes (channels-last):

* ``y_pred``: ``(B, H, W, C)`` probabilities in [0, 1]: C = 1 sigmoid foreground
  probability, C >= 3 softmax class probabilities.
* ``y_true``: the same shape (binary mask or one-hot), or integer labels ``(B, H, W)`` /
  ``(B, H, W, 1)`` when C >= 3.

Volumes work the same way with a depth axis, ``(B, D, H, W, C)``; sums and means then run
over every voxel of each volume.

The binary cross-entropy of one image of N pixels with targets y_i and predicted
probabilities p_i is

    BCE = -(1/N) * sum_i [ y_i * log(p_i) + (1 - y_i) * log(1 - p_i) ]

The sum covers *both* terms. (The course's source article closes the bracket after the
first term, which would sum only the foreground term and add a single background term.)
Probabilities are clipped to [eps, 1 - eps] so log(0) never occurs.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from medseg_course.utils import check_array, check_positive

__all__ = [
    "binary_cross_entropy",
    "weighted_binary_cross_entropy",
    "categorical_cross_entropy",
    "soft_dice_loss",
    "dice_ce_loss",
    "focal_loss",
    "tversky_loss",
    "focal_tversky_loss",
    "BinaryCrossEntropy",
    "WeightedBinaryCrossEntropy",
    "SoftDiceLoss",
    "DiceCELoss",
    "FocalLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "LossSwitch",
    "get_loss",
]

EPSILON = 1e-7


def _static_shape(x):
    return tuple(x.shape)


def _prepare(y_true, y_pred):
    """Validate shapes; return float32 (y_true one-hot or binary, y_pred), same shape."""
    for name, value in (("y_true", y_true), ("y_pred", y_pred)):
        if isinstance(value, (np.ndarray, list, tuple)):
            check_array(value, name, dtype_kind="biuf")
    y_true_input = np.asarray(y_true) if isinstance(y_true, (list, tuple)) else y_true
    y_pred = ops.convert_to_tensor(y_pred, dtype="float32")
    y_true = ops.convert_to_tensor(y_true)
    pred_shape, true_shape = _static_shape(y_pred), _static_shape(y_true)
    if len(pred_shape) not in (4, 5):
        raise ValueError(
            f"y_pred must have shape (B, H, W, C), or (B, D, H, W, C) for volumes. Received: y_pred.shape={pred_shape}"
        )
    rank = len(pred_shape)
    num_classes = pred_shape[-1]
    is_labels = len(true_shape) == rank - 1 or (
        len(true_shape) == rank and true_shape[-1] == 1 and num_classes not in (None, 1)
    )
    if is_labels:
        if num_classes not in (None, 1) and isinstance(y_true_input, np.ndarray):
            low, high = int(y_true_input.min()), int(y_true_input.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"y_true holds labels {low}..{high} but y_pred has {num_classes} classes "
                    f"(labels 0..{num_classes - 1}). Check num_classes of the model or the label map."
                )
        if num_classes == 1:
            y_true = ops.expand_dims(y_true, -1)
        else:
            if len(true_shape) == rank:
                y_true = ops.squeeze(y_true, -1)
            y_true = ops.one_hot(ops.cast(y_true, "int32"), num_classes)
    y_true = ops.cast(y_true, "float32")
    true_shape = _static_shape(y_true)
    compatible = len(true_shape) == rank and all(
        a is None or b is None or a == b for a, b in zip(true_shape, pred_shape)
    )
    if not compatible:
        raise ValueError(
            "y_true must match y_pred (B, H, W, C), or be integer labels (B, H, W) when "
            f"C >= 3. Received: y_true.shape={_static_shape(ops.convert_to_tensor(y_true))}, "
            f"y_pred.shape={pred_shape}"
        )
    return y_true, y_pred


def _spatial_axes(x):
    """The axes of an image's pixels (or a volume's voxels): all but batch and channels."""
    return tuple(range(1, len(x.shape) - 1))


def _per_image_mean(x):
    return ops.mean(x, axis=tuple(range(1, len(x.shape))))


def binary_cross_entropy(y_true, y_pred, eps=EPSILON):
    """Binary cross-entropy per image, from the formula (both terms inside the sum).

    Parameters
    ----------
    y_true : array, shape (B, H, W, 1), values in {0, 1} (soft labels in [0, 1] allowed)
    y_pred : array, shape (B, H, W, 1), float32 probabilities in [0, 1]
    eps : float
        Probabilities are clipped to [eps, 1 - eps].

    Returns
    -------
    tensor, shape (B,), float32
        Mean over pixels of ``-[y log p + (1 - y) log(1 - p)]``. Equals
        ``keras.losses.binary_crossentropy`` averaged over pixels.

    Raises
    ------
    ValueError
        For mismatched shapes, rank other than 4, or NaN in NumPy input.

    Examples
    --------
    >>> float(binary_cross_entropy(np.ones((1, 1, 1, 1)), np.full((1, 1, 1, 1), 0.5))[0])
    0.6931...
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    p = ops.clip(y_pred, eps, 1 - eps)
    return -_per_image_mean(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))


def weighted_binary_cross_entropy(y_true, y_pred, pos_weight=1.0, eps=EPSILON):
    """Binary cross-entropy with the foreground term weighted by ``pos_weight``.

    ``-(1/N) sum_i [w y_i log p_i + (1 - y_i) log(1 - p_i)]``. With a small target (1 % of
    the pixels), ``pos_weight`` near the background/foreground ratio stops the network
    from predicting all background.

    Parameters
    ----------
    y_true, y_pred : see ``binary_cross_entropy``
    pos_weight : float
        Weight w > 0 of foreground pixels; 1 gives plain BCE.

    Returns
    -------
    tensor, shape (B,), float32
    """
    check_positive(pos_weight, "pos_weight")
    y_true, y_pred = _prepare(y_true, y_pred)
    p = ops.clip(y_pred, eps, 1 - eps)
    return -_per_image_mean(pos_weight * y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))


def categorical_cross_entropy(y_true, y_pred, eps=EPSILON):
    """Categorical cross-entropy per image: ``-(1/N) sum_i sum_c y_ic log p_ic``.

    Parameters
    ----------
    y_true : array, one-hot (B, H, W, C) or integer labels (B, H, W)
    y_pred : array, shape (B, H, W, C), softmax probabilities

    Returns
    -------
    tensor, shape (B,), float32
    """
    y_true, y_pred = _prepare(y_true, y_pred)
    p = ops.clip(y_pred, eps, 1.0)
    return -ops.mean(ops.sum(y_true * ops.log(p), axis=-1), axis=_spatial_axes(y_true))


def soft_dice_loss(y_true, y_pred, smooth=1.0, include_background=False):
    """Soft Dice loss per image: ``1 - (2 sum(y p) + s) / (sum(y) + sum(p) + s)``.

    Computed per image and per class from probabilities (no threshold, so it has a
    gradient), then averaged over classes.

    Empty-mask rule: with an empty ground truth and an empty prediction the ratio is
    s / s = 1 and the loss is 0; the smoothing constant ``s`` keeps it defined and softens
    the penalty for a few false-positive pixels on empty images.

    Parameters
    ----------
    y_true, y_pred : see module docstring
    smooth : float
        Smoothing constant s > 0 in numerator and denominator.
    include_background : bool
        Multi-class only: whether channel 0 (background) counts. The binary case has a
        single foreground channel and ignores this.

    Returns
    -------
    tensor, shape (B,), float32 in [0, 1]
    """
    check_positive(smooth, "smooth")
    y_true, y_pred = _prepare(y_true, y_pred)
    if y_pred.shape[-1] not in (None, 1) and not include_background:
        y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
    axes = _spatial_axes(y_true)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    denominator = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2 * intersection + smooth) / (denominator + smooth)
    return 1 - ops.mean(dice, axis=-1)


def dice_ce_loss(y_true, y_pred, dice_weight=1.0, ce_weight=1.0, smooth=1.0):
    """Soft Dice plus cross-entropy (binary for C = 1, categorical otherwise).

    Cross-entropy gives smooth, well-scaled gradients at every pixel; Dice measures overlap
    and is insensitive to how much background there is. Their sum is the default of
    nnU-Net and a robust first choice.

    Parameters
    ----------
    y_true, y_pred : see module docstring
    dice_weight, ce_weight : float
        Non-negative weights of the two terms.
    smooth : float
        Dice smoothing constant.

    Returns
    -------
    tensor, shape (B,), float32
    """
    check_positive(dice_weight, "dice_weight", allow_zero=True)
    check_positive(ce_weight, "ce_weight", allow_zero=True)
    binary = _static_shape(ops.convert_to_tensor(y_pred))[-1] == 1
    ce = binary_cross_entropy if binary else categorical_cross_entropy
    return dice_weight * soft_dice_loss(y_true, y_pred, smooth) + ce_weight * ce(y_true, y_pred)


def focal_loss(y_true, y_pred, gamma=2.0, alpha=0.25, eps=EPSILON):
    """Focal loss (Lin et al., 2017): cross-entropy that down-weights easy pixels.

    Binary: ``-(1/N) sum_i [a y (1-p)^g log p + (1-a)(1-y) p^g log(1-p)]``; multi-class:
    ``-(1/N) sum_i sum_c y_c (1-p_c)^g log p_c`` (``alpha`` unused). With ``gamma = 0`` and
    ``alpha = 0.5`` it is half the BCE.

    Parameters
    ----------
    y_true, y_pred : see module docstring
    gamma : float
        Focusing exponent (>= 0); 2 in the paper.
    alpha : float
        Foreground weight in [0, 1] (binary only).

    Returns
    -------
    tensor, shape (B,), float32
    """
    check_positive(gamma, "gamma", allow_zero=True)
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]. Received: alpha={alpha}")
    y_true, y_pred = _prepare(y_true, y_pred)
    if y_pred.shape[-1] == 1:
        p = ops.clip(y_pred, eps, 1 - eps)
        pos = alpha * y_true * ops.power(1 - p, gamma) * ops.log(p)
        neg = (1 - alpha) * (1 - y_true) * ops.power(p, gamma) * ops.log(1 - p)
        return -_per_image_mean(pos + neg)
    p = ops.clip(y_pred, eps, 1.0)
    per_pixel = ops.sum(y_true * ops.power(1 - p, gamma) * ops.log(p), axis=-1)
    return -ops.mean(per_pixel, axis=_spatial_axes(y_true))


def tversky_loss(y_true, y_pred, alpha=0.3, beta=0.7, smooth=1.0, include_background=False):
    """Tversky loss (Salehi et al., 2017): ``1 - (TP + s) / (TP + a FP + b FN + s)`` per class.

    Soft counts from probabilities. ``alpha = beta = 0.5`` is the soft Dice loss;
    ``beta > alpha`` penalises missed foreground more than false alarms, which raises
    sensitivity for small structures.

    Returns
    -------
    tensor, shape (B,), float32 in [0, 1]
    """
    return 1 - _tversky_index(y_true, y_pred, alpha, beta, smooth, include_background)


def _tversky_index(y_true, y_pred, alpha, beta, smooth, include_background):
    for name, value in (("alpha", alpha), ("beta", beta)):
        check_positive(value, name, allow_zero=True)
    check_positive(smooth, "smooth")
    y_true, y_pred = _prepare(y_true, y_pred)
    if y_pred.shape[-1] not in (None, 1) and not include_background:
        y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
    axes = _spatial_axes(y_true)
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum((1 - y_true) * y_pred, axis=axes)
    fn = ops.sum(y_true * (1 - y_pred), axis=axes)
    return ops.mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth), axis=-1)


def focal_tversky_loss(y_true, y_pred, alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0):
    """Focal Tversky loss (Abraham and Khan, 2019): ``(1 - TI)^gamma``.

    With ``gamma < 1`` the loss falls more slowly than ``1 - TI`` as an image gets nearly
    right, so images with small, hard structures keep a larger share of the gradient late
    in training.

    Returns
    -------
    tensor, shape (B,), float32 in [0, 1]
    """
    check_positive(gamma, "gamma")
    index = _tversky_index(y_true, y_pred, alpha, beta, smooth, False)
    return ops.power(ops.maximum(1 - index, 0.0), gamma)


# ---------------------------------------------------------------------- Keras classes


@keras.saving.register_keras_serializable(package="medseg_course")
class BinaryCrossEntropy(keras.losses.Loss):
    """Keras loss wrapping ``binary_cross_entropy`` (mean over the batch)."""

    def __init__(self, eps=EPSILON, name="bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.eps = eps

    def call(self, y_true, y_pred):
        return binary_cross_entropy(y_true, y_pred, self.eps)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package="medseg_course")
class WeightedBinaryCrossEntropy(keras.losses.Loss):
    """Keras loss wrapping ``weighted_binary_cross_entropy``."""

    def __init__(self, pos_weight=1.0, eps=EPSILON, name="weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        check_positive(pos_weight, "pos_weight")
        self.pos_weight, self.eps = pos_weight, eps

    def call(self, y_true, y_pred):
        return weighted_binary_cross_entropy(y_true, y_pred, self.pos_weight, self.eps)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight, "eps": self.eps}


@keras.saving.register_keras_serializable(package="medseg_course")
class SoftDiceLoss(keras.losses.Loss):
    """Keras loss wrapping ``soft_dice_loss``."""

    def __init__(self, smooth=1.0, include_background=False, name="soft_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        check_positive(smooth, "smooth")
        self.smooth, self.include_background = smooth, include_background

    def call(self, y_true, y_pred):
        return soft_dice_loss(y_true, y_pred, self.smooth, self.include_background)

    def get_config(self):
        return {
            **super().get_config(),
            "smooth": self.smooth,
            "include_background": self.include_background,
        }


@keras.saving.register_keras_serializable(package="medseg_course")
class DiceCELoss(keras.losses.Loss):
    """Keras loss wrapping ``dice_ce_loss``."""

    def __init__(self, dice_weight=1.0, ce_weight=1.0, smooth=1.0, name="dice_ce", **kwargs):
        super().__init__(name=name, **kwargs)
        check_positive(dice_weight, "dice_weight", allow_zero=True)
        check_positive(ce_weight, "ce_weight", allow_zero=True)
        self.dice_weight, self.ce_weight, self.smooth = dice_weight, ce_weight, smooth

    def call(self, y_true, y_pred):
        return dice_ce_loss(y_true, y_pred, self.dice_weight, self.ce_weight, self.smooth)

    def get_config(self):
        return {
            **super().get_config(),
            "dice_weight": self.dice_weight,
            "ce_weight": self.ce_weight,
            "smooth": self.smooth,
        }


@keras.saving.register_keras_serializable(package="medseg_course")
class FocalLoss(keras.losses.Loss):
    """Keras loss wrapping ``focal_loss``."""

    def __init__(self, gamma=2.0, alpha=0.25, name="focal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.gamma, self.alpha = gamma, alpha

    def call(self, y_true, y_pred):
        return focal_loss(y_true, y_pred, self.gamma, self.alpha)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma, "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="medseg_course")
class TverskyLoss(keras.losses.Loss):
    """Keras loss wrapping ``tversky_loss``."""

    def __init__(self, alpha=0.3, beta=0.7, smooth=1.0, name="tversky", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.beta, self.smooth = alpha, beta, smooth

    def call(self, y_true, y_pred):
        return tversky_loss(y_true, y_pred, self.alpha, self.beta, self.smooth)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="medseg_course")
class FocalTverskyLoss(keras.losses.Loss):
    """Keras loss wrapping ``focal_tversky_loss``."""

    def __init__(self, alpha=0.3, beta=0.7, gamma=0.75, smooth=1.0, name="focal_tversky", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def call(self, y_true, y_pred):
        return focal_tversky_loss(y_true, y_pred, self.alpha, self.beta, self.gamma, self.smooth)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "gamma": self.gamma,
            "smooth": self.smooth,
        }


@keras.saving.register_keras_serializable(package="medseg_course")
class LossSwitch(keras.losses.Loss):
    """Several losses in one compiled training step; ``select`` chooses the one that trains.

    Comparing losses means training the same model once per loss. Compiling a model per
    loss makes TensorFlow trace and optimise a new training step each time, which costs
    several seconds for a small U-Net on 2 CPU cores, often as much as the training. Compile
    once with a ``LossSwitch`` instead; the step holds every candidate behind a switch on a
    variable and runs only the selected one, so changing the selection reuses the step::

        switch = mc.losses.LossSwitch({"BCE": BinaryCrossEntropy(), "Dice + BCE": DiceCELoss()})
        mc.training.compile_model(model, switch)
        for name in switch.names:
            switch.select(name)
            mc.training.reinitialize(model, seed=0)  # fresh weights, the step kept
            mc.training.fit(model, ...)

    Training with a selected loss gives what training with that loss alone gives, up to
    floating-point rounding (TensorFlow optimises the step's graph as a whole, so an
    operation may be evaluated in another order).

    Parameters
    ----------
    losses : dict of str to keras.losses.Loss or str
        The candidates by name; a string value is a name for ``get_loss``.
    selected : str, optional
        The loss that trains until ``select`` is called; default the first.

    Raises
    ------
    ValueError
        If ``losses`` is empty or holds something that is not a loss, ``selected`` is not one
        of its names, or the Keras backend is not TensorFlow (JAX compiles the variable's
        value into the step, so a later ``select`` would be ignored).
    """

    def __init__(self, losses, selected=None, name="loss_switch", **kwargs):
        super().__init__(name=name, **kwargs)
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"LossSwitch needs the TensorFlow backend; this Keras runs on {keras.backend.backend()!r}, whose "
                "compiled step would keep the first selection. Compile one model per loss instead."
            )
        if not isinstance(losses, dict) or not losses:
            raise ValueError("losses must be a non-empty dict of name to loss, e.g. {'BCE': mc.losses.BinaryCrossEntropy()}.")
        self.losses = {}
        for key, loss in losses.items():
            if isinstance(loss, str):
                loss = get_loss(loss)
            if not callable(loss):
                raise ValueError(f"losses[{key!r}] is a {type(loss).__name__}, not a loss; pass a keras.losses.Loss or a name from LOSS_NAMES.")
            self.losses[str(key)] = loss
        self._index = keras.Variable(0, dtype="int32", trainable=False, name="loss_switch_index")
        self.select(self.names[0] if selected is None else selected)

    @property
    def names(self):
        """The candidates' names, in order."""
        return tuple(self.losses)

    @property
    def selected(self):
        """The name of the loss that trains now."""
        return self.names[int(keras.ops.convert_to_numpy(self._index.value))]

    def select(self, name):
        """Make loss ``name`` the one that training (and any call of this loss) computes from now on."""
        if name not in self.losses:
            raise ValueError(f"Unknown loss {name!r}; this LossSwitch holds {list(self.names)}.")
        self._index.assign(self.names.index(name))

    def __call__(self, y_true, y_pred, sample_weight=None):
        # each candidate reduces with its own settings; only the selected branch runs
        branches = [lambda loss=loss: loss(y_true, y_pred, sample_weight=sample_weight) for loss in self.losses.values()]
        return ops.switch(self._index.value, branches)

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        return {
            **super().get_config(),
            "losses": {key: keras.saving.serialize_keras_object(loss) for key, loss in self.losses.items()},
            "selected": self.selected,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["losses"] = {key: keras.saving.deserialize_keras_object(value) for key, value in config["losses"].items()}
        return cls(**config)


_LOSSES = {
    "bce": BinaryCrossEntropy,
    "weighted_bce": WeightedBinaryCrossEntropy,
    "dice": SoftDiceLoss,
    "dice_ce": DiceCELoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
}


LOSS_NAMES = tuple(_LOSSES)


def get_loss(name, **params):
    """Return a loss instance by name (a key of ``LOSS_NAMES``), e.g. ``get_loss("dice_ce")``."""
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss {name!r}. Choose one of {sorted(_LOSSES)}.")
    return _LOSSES[name](**params)
