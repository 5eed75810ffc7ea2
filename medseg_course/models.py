"""Model builders: the article's encoder-decoder and a U-Net.

Both return ``keras.Model`` built with the functional API, with named layers
(``enc1_conv1``, ``dec2_up``, ...), channels-last inputs and a sigmoid head for one class or
a softmax head for several.
"""

from __future__ import annotations

import random

import keras
from keras import layers

from medseg_course.utils import check_positive

__all__ = ["AlwaysDropout", "FusedBatchNormalization", "build_model", "build_seed_encoder_decoder", "build_unet", "count_parameters",
           "portable", "with_mc_dropout"]


@keras.saving.register_keras_serializable(package="medseg_course")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras's ``BatchNormalization``, computed by TensorFlow's fused kernel.

    The same layer (arguments, weights, moving statistics, saved form) with the same
    arithmetic up to rounding: Keras 3 normalises with separate mean, variance, subtract,
    multiply and add operations, forward and backward, and on a 2-core CPU those memory
    passes cost more than the convolutions around them. ``FusedBatchNormV3`` does each
    direction in one pass: ``model.fit`` of a 16-filter U-Net at 128x128 ran 1.18x faster
    with it than with Keras's layer on a 2-core Intel Xeon, and under ``mixed_bfloat16``
    (where Keras's layer casts to float32 and back) bfloat16 ran at 1.96x the float32 rate
    with it and 1.38x with Keras's layer (``benchmarks/train_throughput.py``). Models are
    saved with Keras's layer in its place (``portable``), so they load without this package.

    The fused kernel is used for channels-last images and volumes (4-D and 5-D inputs) on the
    TensorFlow backend, without
    a mask or batch renormalisation; anything else (the JAX or PyTorch backends, a masked
    call, ``renorm=True``) runs Keras's own code. The moving variance is updated with the
    batch's biased variance, as Keras does (the kernel reports the unbiased one).
    """

    def _fusable(self, inputs, mask):
        return (
            mask is None
            and not self.renorm
            and keras.config.backend() == "tensorflow"
            and len(inputs.shape) in (4, 5)
            and self.axis in (-1, len(inputs.shape) - 1)
        )

    @staticmethod
    def _data_format(inputs):
        return "NHWC" if len(inputs.shape) == 4 else "NDHWC"

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # noqa: PLC0415  (only on the TensorFlow backend)

        channels = inputs.shape[-1]  # inputs arrive in the compute dtype (Keras autocasts them)
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, data_format=self._data_format(inputs), is_training=True,
            )
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
            variance = variance * tf.maximum(count - 1.0, 1.0) / count  # unbiased -> biased
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=scale, offset=offset,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, data_format=self._data_format(inputs), is_training=False,
            )
        return tf.cast(outputs, self.compute_dtype)


def _check_input_shape(input_shape, levels):
    """(height, width, channels) for images or (depth, height, width, channels) for volumes;
    every spatial size divisible by ``2**levels``. Returns the spatial sizes and channels."""
    try:
        sizes = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) not in (3, 4):
        raise ValueError(
            "input_shape must be (height, width, channels), e.g. (128, 128, 1), or (depth, height, width, "
            f"channels) for a 3D model, e.g. (48, 64, 48, 1). Received: input_shape={input_shape!r}"
        )
    if min(sizes) < 1:
        raise ValueError(f"input_shape must be positive. Received: input_shape={input_shape!r}")
    factor = 2**levels
    spatial = sizes[:-1]
    if any(size % factor for size in spatial):
        names = "Height and width" if len(spatial) == 2 else "Depth, height and width"
        padded = "x".join(str(-(-size // factor) * factor) for size in spatial)
        raise ValueError(
            f"{names} must be divisible by 2**{levels} = {factor} so that "
            f"{levels} poolings and up-samplings restore the input size. Received: "
            f"input_shape={tuple(input_shape)}. Resize or pad the images "
            f"(e.g. to {padded})."
        )
    return sizes


def _check_num_classes(num_classes):
    check_positive(num_classes, "num_classes", integer=True)
    if num_classes == 2:
        raise ValueError(
            "num_classes=2 is ambiguous: use num_classes=1 for a binary task (sigmoid head, "
            "one foreground channel), or >= 3 for background plus several structures "
            "(softmax head)."
        )


def _head(x, num_classes, conv=None):
    activation = "sigmoid" if num_classes == 1 else "softmax"
    return (conv or layers.Conv2D)(num_classes, 1, activation=activation, name="head", dtype="float32")(x)


def build_seed_encoder_decoder(input_shape=(256, 256, 1), num_classes=1, width=1.0):
    """The source article's encoder-decoder, layer for layer.

    Conv(64) - Pool - Conv(128) - Pool - Conv(256) - Pool - Conv(512) - Up - Conv(256) -
    Up - Conv(128) - Up - Conv(64) - Conv1x1(1, sigmoid); every convolution 3x3, ReLU,
    'same' padding; 2x2 max-pooling and 2x nearest up-sampling. No skip connections and no
    normalisation, exactly as written. At ``width=1`` and one input channel it has
    3,098,625 parameters.

    Parameters
    ----------
    input_shape : (int, int, int)
        (height, width, channels); height and width divisible by 8. The article uses
        (256, 256, 1); at that size it trains at ~0.8 images/s on a 2-core CPU, so the
        course trains it smaller.
    num_classes : int
        1 for binary (sigmoid), >= 3 for multi-class (softmax).
    width : float
        Multiplier on every filter count (0.25 gives 16-32-64-128), for CPU budgets.

    Returns
    -------
    keras.Model
        Input ``(B, H, W, C)`` (or ``(B, D, H, W, C)``) float32; output of the same spatial
        shape with ``num_classes`` channels of probabilities.

    Raises
    ------
    ValueError
        For a bad ``input_shape``, ``num_classes`` or ``width``.

    Examples
    --------
    >>> model = build_seed_encoder_decoder((64, 64, 1))      # doctest: +SKIP
    >>> model.count_params()                                 # doctest: +SKIP
    3098625
    """
    if len(_check_input_shape(input_shape, 3)) != 3:
        raise ValueError(
            "The article's encoder-decoder is 2D: input_shape must be (height, width, channels). "
            f"Received: input_shape={tuple(input_shape)}; build_unet builds a 3D U-Net."
        )
    _check_num_classes(num_classes)
    check_positive(width, "width")

    def conv(x, filters, name):
        filters = max(1, int(round(filters * width)))
        return layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)(x)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = conv(inputs, 64, "enc1_conv")
    x = layers.MaxPooling2D(2, name="enc1_pool")(x)
    x = conv(x, 128, "enc2_conv")
    x = layers.MaxPooling2D(2, name="enc2_pool")(x)
    x = conv(x, 256, "enc3_conv")
    x = layers.MaxPooling2D(2, name="enc3_pool")(x)
    x = conv(x, 512, "bottleneck_conv")
    for level, filters in zip((3, 2, 1), (256, 128, 64)):
        x = layers.UpSampling2D(2, name=f"dec{level}_up")(x)
        x = conv(x, filters, f"dec{level}_conv")
    outputs = _head(x, num_classes)
    return keras.Model(inputs, outputs, name="seed_encoder_decoder")


def build_unet(
    input_shape=(128, 128, 1),
    num_classes=1,
    depth=4,
    base_filters=16,
    batch_norm=True,
    dropout=0.0,
    bn_momentum=0.5,
    skips=True,
):
    """U-Net (Ronneberger et al., 2015): an encoder-decoder with skip connections.

    Each level has two 3x3 convolutions (+ batch norm) + ReLU; filters double per level
    down to the bottleneck (``base_filters * 2**depth``); the decoder up-samples with
    2x2 transposed convolutions and concatenates the encoder's features at the same
    resolution, which carry the fine boundary detail pooling threw away. Given a volume's
    shape it builds the 3D U-Net (Cicek et al., 2016): the same network with 3x3x3
    convolutions, 2x2x2 pooling and up-sampling.

    Parameters
    ----------
    input_shape : (int, int, int) or (int, int, int, int)
        (height, width, channels) for a 2D model; (depth, height, width, channels) for a
        3D one. Every spatial size divisible by ``2**depth``.
    num_classes : int
        1 for binary (sigmoid), >= 3 for multi-class (softmax, background included).
    depth : int
        Number of poolings (1-6).
    base_filters : int
        Filters at the first level.
    batch_norm : bool
        Batch normalisation (``FusedBatchNormalization``) after each convolution.
    dropout : float
        Dropout rate in [0, 1) before the bottleneck's second convolution.
    bn_momentum : float
        Momentum of the batch norms' moving statistics (the mean and variance used at
        inference), in [0, 1): each step keeps this share of the old value. Keras's
        default 0.99 starts them at (0, 1) and forgets that start after hundreds of steps,
        so in a CPU-sized run the statistics used at inference stay far from the ones the
        network was trained with and validation Dice collapses. Measured on the CLI's
        phantom task (8-filter U-Net, batch 8, 16 steps an epoch, three seeds): with 0.9
        the held-out Dice after the first epoch was 0.00-0.08 and reached 0.9 at epoch 3-4;
        with 0.5 it was 0.72-0.89 and reached 0.9 at epoch 2, and the best Dice of 25
        epochs was the same (0.9897-0.9907 against 0.9893-0.9914). ``benchmarks/bn_momentum.py``
        has the curves.
    skips : bool
        False drops the skip connections (the decoder sees only the up-sampled
        bottleneck), the control that isolates what they contribute (chapter 8).

    Returns
    -------
    keras.Model
        Input ``(B, H, W, C)`` (or ``(B, D, H, W, C)``) float32; output of the same spatial
        shape with ``num_classes`` channels of probabilities.

    Raises
    ------
    ValueError
        For a bad ``input_shape``, ``num_classes``, ``depth``, ``base_filters`` or
        ``dropout``.
    """
    check_positive(depth, "depth", integer=True)
    if depth > 6:
        raise ValueError(f"depth must be between 1 and 6. Received: depth={depth}")
    volume = len(_check_input_shape(input_shape, depth)) == 4
    conv, pool, up = ((layers.Conv3D, layers.MaxPooling3D, layers.Conv3DTranspose) if volume else
                      (layers.Conv2D, layers.MaxPooling2D, layers.Conv2DTranspose))
    _check_num_classes(num_classes)
    check_positive(base_filters, "base_filters", integer=True)
    if not (0 <= dropout < 1):
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    if not (0 <= bn_momentum < 1):
        raise ValueError(
            f"bn_momentum must be in [0, 1) (0.5 by default; Keras uses 0.99). "
            f"Received: bn_momentum={bn_momentum!r}"
        )

    def block(x, filters, prefix):
        for i in (1, 2):
            if prefix == "bottleneck" and i == 2 and dropout > 0:
                x = layers.Dropout(dropout, name=f"{prefix}_dropout")(x)
            x = conv(filters, 3, padding="same", use_bias=not batch_norm, name=f"{prefix}_conv{i}")(x)
            if batch_norm:
                x = FusedBatchNormalization(momentum=bn_momentum, name=f"{prefix}_bn{i}")(x)
            x = layers.Activation("relu", name=f"{prefix}_relu{i}")(x)
        return x

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x, encoder = inputs, []
    for level in range(1, depth + 1):
        x = block(x, base_filters * 2 ** (level - 1), f"enc{level}")
        encoder.append(x)
        x = pool(2, name=f"enc{level}_pool")(x)
    x = block(x, base_filters * 2**depth, "bottleneck")
    for level in range(depth, 0, -1):
        filters = base_filters * 2 ** (level - 1)
        x = up(filters, 2, strides=2, name=f"dec{level}_up")(x)
        if skips:
            x = layers.Concatenate(name=f"dec{level}_concat")([x, encoder[level - 1]])
        x = block(x, filters, f"dec{level}")
    outputs = _head(x, num_classes, conv)
    name = ("unet3d" if volume else "unet") + f"_d{depth}_f{base_filters}" + ("" if skips else "_noskips")
    return keras.Model(inputs, outputs, name=name)


def build_model(name, input_shape, num_classes=1, depth=4, base_filters=16, width=1.0, precision="float32",
                bn_momentum=0.5):
    """``"unet"`` (``build_unet``) or ``"seed"`` (``build_seed_encoder_decoder``), as
    ``medseg-course train --model`` builds it. Under ``precision="bfloat16"`` its layers
    compute in bfloat16 (Keras's ``mixed_bfloat16``: float32 weights, loss and head); the
    policy is set only while the layers are made, so the caller's global policy is kept.
    ``bn_momentum`` is the U-Net's batch-norm momentum (``build_unet``)."""
    previous = keras.config.dtype_policy()
    if precision == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        if name == "seed":
            return build_seed_encoder_decoder(input_shape, num_classes=num_classes, width=width)
        return build_unet(input_shape, num_classes=num_classes, depth=depth, base_filters=base_filters,
                          bn_momentum=bn_momentum)
    finally:
        keras.config.set_dtype_policy(previous)


def count_parameters(model):
    """Return ``{"trainable": n, "non_trainable": m, "total": n + m}`` for a Keras model."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    non_trainable = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return {"trainable": trainable, "non_trainable": non_trainable, "total": trainable + non_trainable}


class AlwaysDropout(layers.Dropout):
    """``Dropout`` that stays active at inference: each call drops other units.

    Monte-Carlo dropout (Gal and Ghahramani, 2016) predicts many times with dropout on and
    reads the spread of the predictions as the model's uncertainty.
    """

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


def with_mc_dropout(model):
    """A copy of ``model``, same weights, whose ``Dropout`` layers stay active at inference."""

    def clone(layer):
        cls = AlwaysDropout if isinstance(layer, layers.Dropout) else layer.__class__
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def portable(model):
    """A copy of ``model``, same weights, built from Keras's own layers only.

    ``FusedBatchNormalization`` becomes Keras's ``BatchNormalization`` with the same
    configuration, weights and moving statistics: the fused kernel only speeds up training,
    and at inference the two agree to float32 rounding (probabilities within a few 1e-6 on
    the course's U-Nets; under ``mixed_bfloat16`` within about 1e-3, bfloat16's rounding). The copy is not compiled (a compiled
    model's file would name the course's loss and metric), so ``keras.saving.load_model``
    reads its ``.keras`` file where ``medseg_course`` is not installed: in plain Keras, a
    colleague's environment or a serving stack. ``AlwaysDropout`` (``with_mc_dropout``) is
    kept: Monte Carlo dropout is the course's, and a copy without it would predict
    differently. ``training.save_model`` saves this copy.
    """

    def clone(layer):
        if isinstance(layer, FusedBatchNormalization):
            return layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    # Re-created layers draw default seeds from Python's random module: restore its state, so
    # that saving a model does not change the weights of the models built after it.
    state = random.getstate()
    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    finally:
        random.setstate(state)
    copy.set_weights(model.get_weights())
    # clone_model compiles the copy like the original; a new model over the same layers is not
    return keras.Model(copy.inputs, copy.outputs, name=model.name)
