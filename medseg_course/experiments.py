"""The book's comparative experiments, as functions of the seed.

Chapters 5, 13 and 14 compare recipes (losses, augmentation, preprocessing, more data).
One training run per recipe cannot rank them: another seed, or another CPU's rounding,
trains a different model. Each experiment here is therefore a class whose ``run(seed)``
trains every recipe under that seed and returns that seed's records (flat dicts). A chapter
runs one seed (or three) live; ``experiments/run.py`` runs many and commits the records with the machine
they came from (``experiments/results/``); the chapter loads them, states intervals over
the seeds (``mc.stats``) and checks that its live run agrees with them.

The seed fixes the initial weights and, for ``LesionLab`` and ``RecipeExperiment``, the
order and augmentation of the batches and (``LesionLab``) the draw of the training images;
the validation and test images are the same for every seed, so differences between recipes
are paired. The U-Nets of chapters 10, 13 and 14 train through ``mc.recipes.RecipeTrainer``;
the boundary measures (``boundary_errors``...) live in ``mc.boundaries`` and are re-exported.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from medseg_course import data, inference, losses, metrics, models, preprocessing, training
from medseg_course.boundaries import boundary_distance, boundary_errors, edge_sharpness
from medseg_course.classical import classical_brain, random_forest
from medseg_course.recipes import RecipeTrainer
from medseg_course.scanner import simulate_scanner

__all__ = ["ArticleVersusUNet", "BrainMethods", "Leakage", "LesionLab", "LossLab", "RecipeExperiment",
           "ScannerAugmentation", "boundary_distance", "boundary_errors", "edge_sharpness", "machine"]


def machine():
    """The CPU, core count and TensorFlow settings a record was computed with."""
    from medseg_course import environment  # noqa: PLC0415

    return {"cpu": environment.cpu_name(), "cores": os.cpu_count(),
            "onednn": environment.onednn_enabled(), "versions": environment.package_versions()}


class LesionLab:
    """Chapter 13's experiment: small lesions in an organ, seven trainings per seed.

    A U-Net (depth 3, 16 filters, dropout 0.2, Dice + CE) trained for ``steps`` steps of 8
    images on 4, 16 or 64 labelled images (repeated to 64), with and without augmentation,
    and once on preprocessed images (median denoising, then z-score). Evaluated on one test
    set: where the errors are, Dice by lesion size, a robustness lab of five image shifts at
    four severities, the learning curve, and Monte-Carlo dropout uncertainty against the
    deterministic model's own confidence.
    """

    sizes = (4, 16, 64)
    shifts = {"noise": ("noise_level", (0.05, 0.1, 0.15, 0.2)),
              "blur": ("blur_sigma", (1.0, 2.0, 3.0, 4.0)),
              "bias field": ("bias_strength", (0.15, 0.3, 0.45, 0.6)),
              "contrast": ("lesion_contrast", (0.2, 0.14, 0.1, 0.07)),
              "resolution": ("downsample", (1, 2, 3, 4))}

    def __init__(self, image_size=64, steps=64, test_images=64):
        self.size = image_size
        self.steps = steps
        self.spec = data.PhantomSpec(lesion_radius=(0.05, 0.1))
        self.val_x, self.val_y = self._phantoms(32, seed=1)
        self.test_x, self.test_y = self._phantoms(test_images, seed=3)
        self.truth = self.test_y[..., 0] > 0
        self.distance = boundary_distance(self.truth)
        self.trainer = RecipeTrainer(image_size)

    def _phantoms(self, n, seed, **changes):
        return data.make_phantoms(n, image_size=self.size, seed=seed, target="lesion",
                                  spec=replace(self.spec, **changes))

    def training_images(self, seed):
        """The 64 labelled training images of ``seed`` (the first ``n`` are the n-image set)."""
        return self._phantoms(64, seed=1000 + seed)

    @staticmethod
    def preprocess(x):
        P = preprocessing
        return P.apply_to_batch(P.normalize_zscore, P.apply_to_batch(lambda im: P.denoise_median(im, 3), x))

    def train(self, seed, n=64, augment=False, prepare=None):
        """A trained copy of the U-Net: ``n`` labelled images of ``seed``'s draw."""
        prepare = prepare or (lambda x: x)
        x, y = self.training_images(seed)
        reps = 64 // n  # the n images repeated to 64: the same steps for every n
        model, _ = self.trainer.train(np.repeat(prepare(x[:n]), reps, 0), np.repeat(y[:n], reps, 0), seed,
                                      dropout=0.2, augment=training.Augmentation() if augment else None,
                                      epochs=self.steps * 8 // 64, validation=(prepare(self.val_x), self.val_y),
                                      copy=True)
        return model

    def train_all(self, seed):
        """The seven models of one seed: ``{(n, augmented): model}`` and ``"preprocessing"``."""
        trained = {(n, aug): self.train(seed, n, aug) for n in self.sizes for aug in (False, True)}
        trained["preprocessing"] = self.train(seed, 64, prepare=self.preprocess)
        return trained

    def contenders(self, trained):
        return {"baseline": (trained[(64, False)], lambda x: x), "augmentation": (trained[(64, True)], lambda x: x),
                "preprocessing": (trained["preprocessing"], self.preprocess)}

    def dice(self, model, x, y=None, prepare=None):
        prepare = prepare or (lambda x: x)
        y = self.test_y if y is None else y
        return float(metrics.dice(y, inference.predict(model, prepare(x)) > 0.5).mean())

    def errors(self, model):
        """Share of wrong pixels by distance from the true boundary (%), and the reference
        share within 2 px (``boundary_errors``)."""
        import pandas as pd  # noqa: PLC0415

        pred = inference.predict(model, self.test_x)[..., 0] > 0.5
        wrong = pred != self.truth
        bins = pd.cut(self.distance[wrong], [0, 1, 2, 3, 5, np.inf], right=True,
                      labels=["1 px", "2 px", "3 px", "4-5 px", "> 5 px"])
        share = pd.Series(bins).value_counts(normalize=True).sort_index() * 100
        near, reference = boundary_errors(self.truth, pred, self.distance)
        return share, near, reference

    def by_size(self, model):
        """Per-lesion Dice, boundary share and predicted/true area, by thirds of lesion area."""
        import pandas as pd  # noqa: PLC0415
        from scipy import ndimage  # noqa: PLC0415

        pred = inference.predict(model, self.test_x)[..., 0] > 0.5
        rows = []
        for t, p in zip(self.truth, pred, strict=True):
            labels, count = ndimage.label(t)
            for k in range(1, count + 1):
                lesion = labels == k
                local = p & ndimage.binary_dilation(lesion, iterations=3)  # the prediction around this lesion
                rows.append({"area (px)": int(lesion.sum()),
                             "Dice": 2 * (local & lesion).sum() / (local.sum() + lesion.sum()),
                             "boundary pixels (%)": 100 * (lesion & ~ndimage.binary_erosion(lesion)).sum() / lesion.sum(),
                             "predicted / true area": local.sum() / lesion.sum()})
        table = pd.DataFrame(rows)
        table["size"] = pd.qcut(table["area (px)"], 3, labels=["small", "medium", "large"])
        out = table.groupby("size", observed=True).mean()
        out.insert(0, "lesions", table.groupby("size", observed=True).size())
        return out

    def _shifted(self, shift, level):
        if shift == "resolution":
            if level == 1:
                return self.test_x, self.test_y
            P, s = preprocessing, self.size
            small = [P.resize_image(P.resize_image(im, (s // level, s // level)), (s, s)) for im in self.test_x]
            return np.stack(small).reshape(self.test_x.shape), self.test_y
        return self._phantoms(len(self.test_x), seed=3, **{self.shifts[shift][0]: level})

    def robustness(self, trained):
        """Test Dice of the three contenders under each shift and severity (long table)."""
        import pandas as pd  # noqa: PLC0415

        rows = []
        for shift, (_, levels) in self.shifts.items():
            for severity, level in enumerate(levels):
                x, y = self._shifted(shift, level)
                for name, (model, prepare) in self.contenders(trained).items():
                    rows.append({"shift": shift, "severity": severity, "model": name,
                                 "Dice": self.dice(model, x, y, prepare)})
        return pd.DataFrame(rows).pivot_table(index=["shift", "severity"], columns="model", values="Dice")

    def learning_curve(self, trained):
        import pandas as pd  # noqa: PLC0415

        curve = pd.DataFrame({("augmentation" if aug else "no augmentation"):
                              {n: self.dice(trained[(n, aug)], self.test_x) for n in self.sizes}
                              for aug in (False, True)})
        curve.index.name = "labelled training images"
        return curve

    def uncertainty(self, model, samples=20, flag_share=0.05, seed=0):
        """Monte-Carlo dropout against two controls that need no sampling.

        Each method ranks the test pixels by how unsure it is and flags exactly the top
        ``flag_share`` of them:

        - "MC dropout": the standard deviation over ``samples`` predictions with dropout on,
          judged against the errors of their mean;
        - "plain probability": ``1 - |2p - 1|`` of the plain model's probability (highest at
          p = 0.5), judged against the plain model's errors;
        - "boundary distance": nearness to the boundary of the plain model's mask (no
          uncertainty at all: errors sit at boundaries), against the same errors.

        Returns ``(mean_prob, std, result)``: the MC mean and standard deviation per pixel,
        and per method the ratio of mean uncertainty on wrong to right pixels (not for the
        distance rule) and the share of the errors among the flagged pixels (%).
        """
        import keras  # noqa: PLC0415

        mc_model = models.with_mc_dropout(model)
        keras.utils.set_random_seed(seed)
        draws = np.stack([mc_model.predict(self.test_x, verbose=0)[..., 0] for _ in range(samples)])
        mean_prob, std = draws.mean(axis=0), draws.std(axis=0)
        plain = inference.predict(model, self.test_x)[..., 0]
        nearness = -boundary_distance(plain > 0.5)
        result = {}
        for name, prob, unsure in (("MC dropout", mean_prob, std),
                                   ("plain probability", plain, 1 - np.abs(2 * plain - 1)),
                                   ("boundary distance", plain, nearness)):
            errors = (prob > 0.5) != self.truth
            flagged = np.zeros(unsure.size, bool)
            flagged[np.argsort(unsure, axis=None, kind="stable")[-int(round(flag_share * unsure.size)):]] = True
            flagged = flagged.reshape(unsure.shape)
            result[name] = {"caught (%)": float(100 * (errors & flagged).sum() / errors.sum())}
            if name != "boundary distance":
                result[name]["ratio"] = float(unsure[errors].mean() / unsure[~errors].mean())
        return mean_prob, std, result

    def run(self, seed):
        """Every result of one seed, as a list of one flat record."""
        start = time.perf_counter()
        trained = self.train_all(seed)
        baseline = trained[(64, False)]
        _, near, reference = self.errors(baseline)
        sizes = self.by_size(baseline)
        lab = self.robustness(trained)
        curve = self.learning_curve(trained)
        _, _, unc = self.uncertainty(baseline)
        record = {"seed": seed, "errors near (%)": near, "reference near (%)": reference}
        for size in ("small", "large"):
            for column in ("Dice", "predicted / true area"):
                record[f"{size} {column}"] = float(sizes.loc[size, column])
        for (shift, severity), row in lab.iterrows():
            for name, value in row.items():
                record[f"lab {shift} {severity} {name}"] = float(value)
        for n, row in curve.iterrows():
            for name, value in row.items():
                record[f"curve {n} {name}"] = float(value)
        for name, values in unc.items():
            for key, value in values.items():
                record[f"{name} {key}"] = value
        record["seconds"] = time.perf_counter() - start
        return [record]


class RecipeExperiment:
    """Chapter 14's experiment: a baseline and four changes, one at a time, per seed.

    Baseline: a U-Net of depth 3 with 16 filters, binary cross-entropy, 16 labelled
    images, no augmentation, ``steps`` steps of 8 images. Each recipe changes one thing.
    """

    recipes = {"baseline": {},
               "deeper network": {"depth": 4},
               "4x more data": {"images": 64},
               "augmentation": {"augment": True},
               "Dice + CE loss": {"loss": "dice_ce"}}

    def __init__(self, image_size=48, images=16, steps=100):
        self.size, self.images, self.steps = image_size, images, steps
        self.spec = data.PhantomSpec(lesion_radius=(0.04, 0.09))
        self.pool_x, self.pool_y = data.make_phantoms(4 * images, image_size=image_size, seed=0,
                                                      target="lesion", spec=self.spec)
        self.test_x, self.test_y = data.make_phantoms(64, image_size=image_size, seed=3, target="lesion",
                                                      spec=self.spec)
        # the same test anatomy with twice the noise (0.10 instead of 0.05): a shifted scanner
        self.noisy_x, _ = data.make_phantoms(64, image_size=image_size, seed=3, target="lesion",
                                             spec=replace(self.spec, noise_level=0.1))
        self.truth = self.test_y[..., 0] > 0
        self.distance = boundary_distance(self.truth)
        self.trainer = RecipeTrainer(image_size)  # one compiled U-Net per (depth, loss), re-initialised per run

    def train(self, seed, depth=3, loss="bce", images=None, augment=False):
        n = images or self.images
        model, _ = self.trainer.train(self.pool_x[:n], self.pool_y[:n], seed, depth=depth, loss=loss,
                                      augment=training.Augmentation() if augment else None, steps=self.steps)
        return model

    def run(self, seed):
        """One row per recipe for ``seed``."""
        rows = []
        for recipe, change in self.recipes.items():
            start = time.perf_counter()
            model = self.train(seed, **change)
            pred = inference.predict(model, self.test_x)[..., 0] > 0.5
            near, reference = boundary_errors(self.truth, pred, self.distance)
            rows.append({"recipe": recipe, "seed": seed,
                         "Dice": float(metrics.dice(self.test_y, pred[..., None]).mean()),
                         "Dice, 2x noise": float(metrics.dice(self.test_y, inference.predict(model, self.noisy_x) > 0.5).mean()),
                         "errors within 2 px of the boundary (%)": near,
                         "reference within 2 px (%)": reference,
                         "parameters": int(model.count_params()), "seconds": time.perf_counter() - start})
        return rows


class LossLab:
    """Chapter 5's experiment: one U-Net trained with each of six losses, per seed.

    Small lesions (radius 0.04-0.06 of a 64x64 image, at most two, contrast 0.15); 192
    training, 32 validation and 48 test images; a U-Net of depth 3 with 8 filters, Adam at
    3e-3, batches of 16 in the same order for every loss and seed, ``epochs`` epochs. The
    seed draws the initial weights only, so a loss's spread over seeds is its sensitivity
    to where training starts.
    """

    def __init__(self, epochs=5):
        self.epochs = epochs
        spec = data.PhantomSpec(lesion_radius=(0.04, 0.06), max_lesions=2, lesion_contrast=0.15)
        self.images, self.masks = data.make_phantoms(272, image_size=64, spec=spec, target="lesion", seed=0)
        self.x_train, self.y_train = self.images[:192], self.masks[:192]
        self.x_val, self.y_val = self.images[192:224], self.masks[192:224]
        self.x_test, self.y_test = self.images[224:], self.masks[224:]
        share = float(self.y_train.mean())  # from the training masks: the test masks stay unseen
        self.pos_weight = float(np.sqrt((1 - share) / share))
        self.losses = {
            "BCE": losses.BinaryCrossEntropy(),
            "weighted BCE": losses.WeightedBinaryCrossEntropy(pos_weight=self.pos_weight),
            "soft Dice": losses.SoftDiceLoss(),
            "Dice + BCE": losses.DiceCELoss(),
            "focal": losses.FocalLoss(gamma=2.0, alpha=0.25),
            "Tversky": losses.TverskyLoss(alpha=0.3, beta=0.7),
        }
        self._switch = self._model = None

    def train(self, name, seed=0):
        """Test probabilities of the U-Net trained with loss ``name`` from weights drawn under ``seed``."""
        if self._model is None:  # the six losses share one compiled training step
            self._switch = losses.LossSwitch(self.losses)
            self._model = training.compile_model(models.build_unet((64, 64, 1), depth=3, base_filters=8),
                                                 self._switch, learning_rate=3e-3)
        self._switch.select(name)
        training.reinitialize(self._model, seed)  # fresh weights; the same batches for every loss
        training.fit(self._model, training.make_dataset(self.x_train, self.y_train, 16, seed=0),
                     (self.x_val, self.y_val), epochs=self.epochs)
        return inference.predict(self._model, self.x_test)

    def scores(self, prob):
        """Dice, sensitivity and precision of the whole test set at 0.5, and the mean
        probability on lesion and background pixels."""
        pred, y = prob >= 0.5, self.y_test
        return {"Dice": float(metrics.dice(y, pred, per_image=False)),
                "sensitivity": float(metrics.sensitivity(y, pred, per_image=False)),
                "precision": float(metrics.precision(y, pred, per_image=False)),
                "mean p on lesion pixels": float(prob[y > 0].mean()),
                "mean p on background": float(prob[y == 0].mean())}

    def run(self, seed):
        """One row per loss for ``seed``."""
        return [{"loss": name, "seed": seed, **self.scores(self.train(name, seed))} for name in self.losses]


class Leakage:
    """Chapter 6's experiment: how much a slice-wise split of one volume inflates test Dice.

    Grey matter on the MNI152 template's axial slices at 64x64. The seed draws the slab
    assignment (slabs of 8 slices, gaps of 2) and, with the same split sizes, a slice-wise
    random split; then the initial weights and batch order of a U-Net (depth 3, 16
    filters, 20 epochs) trained on each split. Two models per split: copying the mask of
    the nearest training slice (1-nearest neighbour on pixels, no training) and the U-Net.
    """

    def __init__(self, image_size=64, epochs=20):
        self.gm = data.load_mni152_slices("gm", image_size=image_size, resolution=1)
        self.size, self.epochs = image_size, epochs
        self._model = None

    def splits(self, seed):
        """``{"slice-wise": split, "slab": split}``, each ``{"train", "val", "test"}`` indices."""
        slab = data.slab_split(self.gm.slice_index, slab_size=8, gap=2, seed=seed)
        bounds = np.cumsum([len(slab[k]) for k in ("train", "val", "test")])
        perm = np.random.default_rng(seed).permutation(len(self.gm))
        return {"slice-wise": dict(zip(("train", "val", "test"), np.split(perm[: bounds[-1]], bounds[:2]))),
                "slab": slab}

    def nearest_distance(self, split):
        """Distance (slices, 1 mm each) from every test slice to its nearest training slice."""
        test_z, train_z = self.gm.slice_index[split["test"]], self.gm.slice_index[split["train"]]
        return np.abs(test_z[:, None] - train_z[None]).min(axis=1)

    def copy_nearest_dice(self, split):
        """Mean test Dice of copying the mask of the most similar training slice."""
        gm = self.gm
        train = gm.images[split["train"]].reshape(len(split["train"]), -1)
        test = gm.images[split["test"]].reshape(len(split["test"]), -1)
        nearest = ((test[:, None] - train[None]) ** 2).sum(-1).argmin(axis=1)
        return float(metrics.dice(gm.masks[split["test"]], gm.masks[split["train"]][nearest]).mean())

    def unet_dice(self, split, seed):
        """Mean test Dice of the U-Net trained on ``split`` from ``seed``'s initial weights."""
        gm = self.gm
        if self._model is None:
            self._model = training.compile_model(models.build_unet((self.size, self.size, 1), depth=3,
                                                                   base_filters=16))
        training.reinitialize(self._model, seed)
        training.fit(self._model, (gm.images[split["train"]], gm.masks[split["train"]]),
                     (gm.images[split["val"]], gm.masks[split["val"]]), epochs=self.epochs)
        probabilities = inference.predict(self._model, gm.images[split["test"]])
        return float(metrics.dice(gm.masks[split["test"]], probabilities > 0.5).mean())

    def run(self, seed):
        """One row per split for ``seed``."""
        return [{"split": name, "seed": seed, "test slices": len(split["test"]),
                 "median distance to training (slices)": float(np.median(self.nearest_distance(split))),
                 "copy-nearest Dice": self.copy_nearest_dice(split), "U-Net Dice": self.unet_dice(split, seed)}
                for name, split in self.splits(seed).items()]


class ArticleVersusUNet:
    """Chapter 8's experiment: the article's encoder-decoder against a U-Net, same budget.

    Organ phantoms at 64x64 (80 training, 32 validation, 64 test images); 8 epochs of
    batches of 8. The article's model as the article trains it (Adam 1e-3, BCE, no
    augmentation); a U-Net (depth 3, 8 filters) with Dice + CE and augmentation; and the
    same U-Net without its skip connections, the control for what the skips do. The seed
    draws the initial weights, the batch order and the augmentation.
    """

    contenders = ("article's encoder-decoder", "U-Net", "U-Net without skips")

    def __init__(self, image_size=64, epochs=8, batch_size=8):
        self.size, self.epochs, self.batch_size = image_size, epochs, batch_size
        self.train_x, self.train_y = data.make_phantoms(80, image_size=image_size, seed=0)
        self.val_x, self.val_y = data.make_phantoms(32, image_size=image_size, seed=1)
        self.test_x, self.test_y = data.make_phantoms(64, image_size=image_size, seed=2)
        self._models = {}

    def compiled(self, name):
        """The compiled model of contender ``name``: built once, re-initialised for every run."""
        import keras  # noqa: PLC0415

        if name not in self._models:
            shape = (self.size, self.size, 1)
            if name == "article's encoder-decoder":
                model = models.build_seed_encoder_decoder(input_shape=shape)
                model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                              metrics=["accuracy", metrics.DiceMetric()])
            else:
                model = training.compile_model(models.build_unet(shape, depth=3, base_filters=8,
                                                                 skips=name == "U-Net"),
                                               loss="dice_ce", learning_rate=1e-3)
            self._models[name] = model
        return self._models[name]

    def train(self, name, seed):
        """``(model, history, seconds)``: contender ``name`` trained from ``seed``'s weights.
        The model is shared between calls for the same ``name``; clone it to keep it."""
        model = training.reinitialize(self.compiled(name), seed)
        augment = None if name == "article's encoder-decoder" else training.Augmentation()
        batches = training.make_dataset(self.train_x, self.train_y, batch_size=self.batch_size, augment=augment,
                                        seed=seed)
        start = time.perf_counter()
        history = training.fit(model, batches, (self.val_x, self.val_y), epochs=self.epochs)
        return model, history, time.perf_counter() - start

    def scores(self, probabilities):
        """Held-out Dice, HD95 (px; over the images with a non-empty prediction: it is
        undefined for an empty one), the number of empty predictions, surface Dice at 1 px
        (0 for an empty prediction, as every test image holds an organ) and edge sharpness."""
        predicted = probabilities > 0.5
        table = metrics.evaluate(self.test_y, predicted, distances=True, tolerance_mm=1.0)
        return {"Dice": float(table["dice"].mean()), "HD95 (px)": float(table["hd95"].mean()),
                "empty predictions": int((predicted.sum(axis=(1, 2, 3)) == 0).sum()),
                "surface Dice @1 px": float(table["surface_dice"].fillna(0.0).mean()),
                "edge sharpness": edge_sharpness(probabilities, self.test_y)}

    def run(self, seed):
        """One row per contender for ``seed``."""
        rows = []
        for name in self.contenders:
            model, history, seconds = self.train(name, seed)
            rows.append({"model": name, "seed": seed, **self.scores(inference.predict(model, self.test_x)),
                         "epochs with validation Dice < 0.05": int(sum(d < 0.05 for d in history["val_dice"])),
                         "parameters": int(model.count_params()), "seconds": seconds})
        return rows


class ScannerAugmentation:
    """Chapter 10's experiment: does augmentation that imitates other scanners pay off?

    The MNI152 tissue slices with a simulated head at 64x64, split by slabs (seed 0); a
    U-Net (depth 3 by default, 16 filters, 4 classes, Dice + CE) trained 20 epochs with the default
    augmentation, and with noise, bias field and gamma added (``scanner``). Tested on the
    test slabs as they are and under two fixed scanner shifts. The seed draws the initial
    weights, batch order and augmentation; the data and shifts are the same for every seed.
    """

    names = {1: "grey matter", 2: "white matter", 3: "CSF"}
    shifts = {"moderate shift": {"bias": 0.2, "gamma": 0.75, "noise": 0.03},
              "strong shift": {"bias": 0.4, "gamma": 0.6, "noise": 0.05}}
    scanner = training.Augmentation(noise=0.03, bias_field=0.2, gamma=0.3)

    def __init__(self, image_size=64, epochs=20, depth=3):
        self.tissue = data.load_mni152_slices("tissue", image_size=image_size, resolution=1)
        self.pixel_mm = float(self.tissue.spacing_mm[0])
        self.images = data.add_simulated_head(self.tissue.images, self.tissue.masks > 0, pixel_mm=self.pixel_mm,
                                              seed=0)
        self.labels = self.tissue.masks
        self.split = data.slab_split(self.tissue.slice_index, slab_size=8, gap=2, seed=0)
        self.size, self.epochs, self.depth = image_size, epochs, depth
        self.test_x, self.test_labels = self.images[self.split["test"]], self.labels[self.split["test"]]
        self.conditions = {"test slabs": self.test_x,
                           **{name: self.other_scanner(self.test_x, **shift) for name, shift in self.shifts.items()}}
        self.trainer = RecipeTrainer(image_size)

    @staticmethod
    def other_scanner(x, bias, gamma, noise, seed=1):
        """``x`` as another scanner might show it: a linear bias ramp of relative strength
        ``bias`` across the image, clipping to [0, 1], the intensity curve x**gamma and Rician
        noise (``mc.scanner.simulate_scanner``)."""
        return simulate_scanner(x, bias=bias, clip=(0, 1), gamma=gamma, noise=noise, seed=seed)

    def train(self, augmentation, seed):
        """``(model, history)``: a trained copy of the U-Net."""
        tr, val = self.split["train"], self.split["val"]
        return self.trainer.train(self.images[tr], self.labels[tr], seed, num_classes=4, depth=self.depth,
                                  augment=augmentation, epochs=self.epochs,
                                  validation=(self.images[val], self.labels[val]), copy=True)

    @staticmethod
    def segment(model, x):
        return inference.predict(model, x).argmax(axis=-1).astype(np.uint8)

    def tissue_scores(self, predicted):
        """Brain Dice, per-slice mean Dice of each tissue, grey and white matter pooled over
        the slabs, and the signed error of their volumes (predicted / true - 1, in %)."""
        truth = self.test_labels
        per_slice = metrics.dice_per_class(truth, predicted, num_classes=4)  # (slices, 3): GM, WM, CSF
        row = {"brain": float(metrics.dice((truth > 0)[..., None], (predicted > 0)[..., None]).mean())}
        row |= {self.names[k]: float(per_slice[:, k - 1].mean()) for k in self.names}
        row |= {f"{self.names[k]} (slabs pooled)": float(metrics.dice(truth == k, predicted == k, per_image=False))
                for k in (1, 2)}
        row |= {f"{self.names[k]} volume error (%)": float(100 * ((predicted == k).sum() / (truth == k).sum() - 1))
                for k in (1, 2)}
        return row

    def run(self, seed):
        """One row per augmentation and test condition for ``seed``."""
        rows = []
        for augmentation, augment in (("default", training.Augmentation()), ("+ scanner", self.scanner)):
            model, _ = self.train(augment, seed)
            for condition, x in self.conditions.items():
                rows.append({"augmentation": augmentation, "condition": condition, "seed": seed,
                             **self.tissue_scores(self.segment(model, x))})
        return rows


class BrainMethods:
    """Chapter 14's first experiment: brain extraction from 16 labelled slices, three ways.

    The MNI152 slices with a simulated head at 64x64 (the template's 1 mm slices), split by
    slabs; 16 training slices spread evenly over the training slabs. A classical pipeline
    (Otsu, fill holes, largest component: no learning, no seed), a random forest on
    scikit-image's multiscale features (100 trees; the seed draws its bootstrap samples and
    feature subsets) and a U-Net (depth 3, 16 filters, Dice + CE, 100 steps of 8; the seed
    draws the weights and the batches).
    """

    def __init__(self, image_size=64, labelled=16, steps=100):
        tissue = data.load_mni152_slices("tissue", image_size=image_size, resolution=1)
        self.spacing_mm = tissue.spacing_mm[:2]
        self.head = data.add_simulated_head(tissue.images, tissue.masks > 0, pixel_mm=tissue.spacing_mm[0], seed=0)
        self.brain = (tissue.masks > 0).astype("float32")[..., None]
        split = data.slab_split(tissue.slice_index, slab_size=8, gap=2, seed=0)
        self.labelled = split["train"][np.linspace(0, len(split["train"]) - 1, labelled).astype(int)]
        self.test = split["test"]
        self.size, self.steps = image_size, steps
        self.trainer = RecipeTrainer(image_size)

    def classical(self):
        """``mc.classical.classical_brain`` on every test slice."""
        return np.stack([classical_brain(x) for x in self.head[self.test]])[..., None]

    def forest(self, seed):
        """``mc.classical.random_forest`` (features up to 16 px) trained on the labelled slices."""
        return random_forest(self.head[self.labelled], self.brain[self.labelled], self.head[self.test], seed=seed)

    def unet(self, seed):
        model, _ = self.trainer.train(self.head[self.labelled], self.brain[self.labelled], seed, steps=self.steps)
        return inference.predict(model, self.head[self.test]) > 0.5

    def scores(self, predicted):
        truth = self.brain[self.test]
        return {"brain Dice": float(metrics.dice(truth, predicted).mean()),
                "HD95 (mm)": float(metrics.evaluate(truth, predicted, distances=True,
                                                    spacing_mm=self.spacing_mm)["hd95"].mean())}

    def run(self, seed):
        """One row per learned method for ``seed`` (the classical pipeline has no seed:
        ``scores(classical())``)."""
        rows = []
        for method, segment in (("random forest, 20 features", self.forest), ("U-Net", self.unet)):
            start = time.perf_counter()
            predicted = segment(seed)
            rows.append({"method": method, "seed": seed, **self.scores(predicted),
                         "seconds": time.perf_counter() - start})
        return rows
