"""The plain recipe a user could copy instead: a Keras U-Net in the style of the keras-io example.

Slices resized to 128x128 (``--size``), z-scored per slice, a U-Net of depth 4 with 16
filters (two 3x3 convolutions with ReLU per level, one at the bottleneck, max pooling,
transposed convolutions),
Adam at 1e-3, cross-entropy, batch 8, 20 % of the training cases held out to keep the weights
of the best validation loss (keras-io's ModelCheckpoint), training until ``--minutes`` have
passed (checked after each epoch: the last epoch may end past the budget). TensorFlow's own
thread and determinism settings. Predictions are resized back (linear) to each image's own grid and written as
``medseg-course predict`` writes them, so ``medseg-course evaluate`` scores both the same way.
Only the file reading comes from the package.

Usage: ``python benchmarks/plain_unet.py TRAIN_DIR TEST_IMAGES_DIR OUT_DIR --minutes M [--seed S] [--size 128]``;
prints one JSON line (``epochs_run``, ``train_s``).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from medseg_course.datasets import load_paired_folders, prediction_inputs  # noqa: E402
from medseg_course.io import image_suffix, read_image, write_mask  # noqa: E402


def zscore(x):
    return ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)


def resize(x, size, nearest=False):
    out = cv2.resize(x, (size, size), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)
    return out if out.ndim == 3 else out[..., None]


def unet(size, channels, classes, depth=4, filters=16):
    x = inputs = keras.Input((size, size, channels))
    skips = []
    for level in range(depth):
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(filters * 2**depth, 3, padding="same", activation="relu")(x)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters * 2**level, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skips[level]])
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters * 2**level, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv2D(classes, 1, activation="sigmoid" if classes == 1 else "softmax")(x))


def slices(case, size):
    images, masks = case.image.to_slices(), case.image.to_slices(case.mask)
    return [zscore(resize(im.astype(np.float32), size)) for im in images], [resize(m.astype(np.uint8), size, True)
                                                                           for m in masks]


class Budget(keras.callbacks.Callback):
    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.start, self.best, self.weights = seconds, time.perf_counter(), np.inf, None

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_loss"] < self.best:
            self.best, self.weights = logs["val_loss"], self.model.get_weights()
        self.model.stop_training = time.perf_counter() - self.start > self.seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("train"), parser.add_argument("test_images"), parser.add_argument("out")
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    cases = load_paired_folders(args.train)
    order = np.random.default_rng(args.seed).permutation(len(cases))
    n_val = max(1, round(0.2 * len(cases)))
    data = {}
    for part, picks in (("val", order[:n_val]), ("train", order[n_val:])):
        pairs = [slices(cases[i], args.size) for i in picks]
        data[part] = (np.stack([x for xs, _ in pairs for x in xs]), np.stack([y for _, ys in pairs for y in ys]))
    classes = 1 if max(int(y.max()) for _, y in data.values()) <= 1 else max(int(y.max()) for _, y in data.values()) + 1
    model = unet(args.size, data["train"][0].shape[-1], classes)
    loss = "binary_crossentropy" if classes == 1 else "sparse_categorical_crossentropy"
    model.compile(keras.optimizers.Adam(1e-3), loss)
    budget = Budget(args.minutes * 60)
    history = model.fit(*data["train"], batch_size=8, epochs=100000, validation_data=data["val"], callbacks=[budget],
                        verbose=0)
    train_s = time.perf_counter() - budget.start
    model.set_weights(budget.weights)
    os.makedirs(args.out, exist_ok=True)
    for path in prediction_inputs(args.test_images):
        image = read_image(path)
        labels = []
        for im in image.to_slices():
            probs = model.predict(zscore(resize(im.astype(np.float32), args.size))[None], verbose=0)[0]
            back = cv2.resize(probs, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR)
            back = back[..., None] if back.ndim == 2 else back
            labels.append((back[..., 0] >= 0.5) if classes == 1 else np.argmax(back, axis=-1))
        stem = path.name[: -len(image_suffix(path))]
        ext = ".png" if image.format == "raster" else ".nii.gz"
        write_mask(image.from_slices(np.stack(labels).astype(np.uint8)), os.path.join(args.out, f"{stem}_mask{ext}"),
                   like=image)
    print(json.dumps({"epochs_run": len(history.history["loss"]), "train_s": round(train_s, 1)}))


if __name__ == "__main__":
    sys.exit(main())
