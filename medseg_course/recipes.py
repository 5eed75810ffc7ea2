"""Training several recipes fairly: one compiled U-Net per architecture, re-initialised per run.

Comparing recipes (a loss, augmentation, more data, a deeper network) over several seeds
trains the same few architectures many times. ``RecipeTrainer`` builds and compiles each
architecture once, on first use, and before every training draws fresh weights under the
seed with ``mc.training.reinitialize``: a run then repeats, bit for bit, what a model built
under that seed would do, without TensorFlow tracing the training step again (seconds per
run on two CPU cores). The seed also fixes the order and the augmentation of the batches.
Every recipe gets the same budget, a number of steps or of epochs, stated by the caller.
The experiments of chapters 10, 13 and 14 (``mc.experiments``) train through it.
"""

from __future__ import annotations

from medseg_course import models, training
from medseg_course.utils import check_array, check_positive

__all__ = ["RecipeTrainer", "clone_trained"]


def clone_trained(model):
    """A copy of ``model`` with its weights, independent of later training of ``model``
    (uncompiled: for prediction)."""
    import keras  # noqa: PLC0415

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class RecipeTrainer:
    """Compiled U-Nets for one image size, one per architecture, trained from a seed.

    Parameters
    ----------
    image_size : int
        Height and width of the (square) images.
    channels : int
        Image channels.
    base_filters : int
        Filters of the U-Net's first level (doubling per level).
    batch_size : int
        Images per training step.

    Examples
    --------
    >>> trainer = RecipeTrainer(48)                                      # doctest: +SKIP
    >>> model, _ = trainer.train(x, y, seed=0, loss="bce", steps=100)    # doctest: +SKIP
    >>> deeper, _ = trainer.train(x, y, seed=0, depth=4, steps=100)      # doctest: +SKIP
    """

    def __init__(self, image_size, channels=1, base_filters=16, batch_size=8):
        for value, name in ((image_size, "image_size"), (channels, "channels"), (base_filters, "base_filters"),
                            (batch_size, "batch_size")):
            check_positive(value, name, integer=True)
        self.image_size, self.channels = image_size, channels
        self.base_filters, self.batch_size = base_filters, batch_size
        self._compiled = {}

    def compiled(self, depth=3, loss="dice_ce", num_classes=1, dropout=0.0):
        """The compiled U-Net of this architecture and loss: built on the first call, the same
        object afterwards (its weights are whatever the last training left)."""
        key = (depth, loss, num_classes, dropout)
        if key not in self._compiled:
            shape = (self.image_size, self.image_size, self.channels)
            unet = models.build_unet(shape, num_classes=num_classes, depth=depth, base_filters=self.base_filters,
                                     dropout=dropout)
            self._compiled[key] = training.compile_model(unet, loss=loss)
        return self._compiled[key]

    def train(self, images, masks, seed, *, depth=3, loss="dice_ce", num_classes=1, dropout=0.0, augment=None,
              steps=None, epochs=None, validation=None, copy=False):
        """Train the architecture from weights drawn under ``seed``.

        Parameters
        ----------
        images : array, shape (N, image_size, image_size, channels)
        masks : array, shape (N, H, W, 1) binary, or (N, H, W) integer labels
        seed : int
            Seeds the initial weights, the batch order and the augmentation.
        depth, loss, num_classes, dropout
            The architecture and loss (``compiled``).
        augment : mc.training.Augmentation or None
        steps : int, optional
            Budget in steps of ``batch_size`` images: the shuffled data repeated and cut
            after ``steps`` batches, one pass, so the budget does not grow with the data.
        epochs : int, optional
            Budget in epochs instead (exactly one of ``steps`` and ``epochs``); with
            ``validation`` the weights of the best validation Dice are kept.
        validation : (images, masks), optional
        copy : bool
            Return a copy (``clone_trained``) that the next training leaves alone; without it
            the returned model is the shared compiled one.

        Returns
        -------
        (keras.Model, dict)
            The trained model and its history (``mc.training.fit``).

        Raises
        ------
        ValueError
            For images of another size or rank, masks that do not match them, a bad seed,
            or not exactly one of ``steps`` and ``epochs``.
        """
        images = check_array(images, "images", ndim=4, dtype_kind="biuf")
        expected = (self.image_size, self.image_size, self.channels)
        if images.shape[1:] != expected:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, expected))}) for this trainer. "
                             f"Received: images.shape={images.shape}")
        if (steps is None) == (epochs is None):
            raise ValueError(f"Give exactly one of steps and epochs. Received: steps={steps}, epochs={epochs}")
        check_positive(steps if epochs is None else epochs, "steps" if epochs is None else "epochs", integer=True)
        check_positive(seed, "seed", integer=True, allow_zero=True)
        model = training.reinitialize(self.compiled(depth, loss, num_classes, dropout), seed)
        batches = training.make_dataset(images, masks, batch_size=self.batch_size, augment=augment, seed=seed)
        if steps is not None:
            history = training.fit(model, batches.repeat().take(steps), validation, epochs=1)
        else:
            history = training.fit(model, batches, validation, epochs=epochs)
        return (clone_trained(model) if copy else model), history
