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
are paired.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from medseg_course import data, inference, losses, metrics, models, preprocessing, training

__all__ = ["boundary_distance", "boundary_errors", "LesionLab", "LossLab", "RecipeExperiment", "machine"]


def boundary_distance(truth):
    """Per-pixel distance (px) to the boundary of ``truth`` ((B, H, W) bool): inside a
    structure the distance to the nearest background pixel, outside to the nearest
    structure pixel; 1 for the pixels next to the boundary on either side."""
    from scipy import ndimage  # noqa: PLC0415

    return np.stack([np.where(t, ndimage.distance_transform_edt(t), ndimage.distance_transform_edt(~t))
                     for t in truth])


def boundary_errors(truth, pred, distance=None, within=2):
    """Share (%) of wrong pixels within ``within`` px of the true boundary, and its reference.

    The reference is the same share among all pixels that truth or prediction calls
    foreground: for small structures most of those lie near a boundary anyway (a disc of
    radius 3 has nearly all its pixels within 2 px of its edge), so "most errors are at the
    boundary" means something only if the errors are nearer the boundary than that.

    Returns
    -------
    (float, float)
        ``(errors_near, reference_near)`` in per cent.
    """
    distance = boundary_distance(truth) if distance is None else distance
    near = distance <= within
    wrong = pred != truth
    region = pred | truth
    return (float(100 * (wrong & near).sum() / max(wrong.sum(), 1)),
            float(100 * (region & near).sum() / max(region.sum(), 1)))


def machine():
    """The CPU, core count and TensorFlow settings a record was computed with."""
    from medseg_course import utils  # noqa: PLC0415

    return {"cpu": utils._cpu_name(), "cores": os.cpu_count(),
            "onednn": utils.onednn_enabled(), "versions": utils.package_versions()}


def _clone_trained(model):
    import keras  # noqa: PLC0415

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


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
        self._unet = None

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
        if self._unet is None:
            self._unet = training.compile_model(
                models.build_unet((self.size, self.size, 1), depth=3, base_filters=16, dropout=0.2), loss="dice_ce")
        training.reinitialize(self._unet, seed)  # fresh weights without re-tracing the step
        x, y = self.training_images(seed)
        reps = 64 // n
        batches = training.make_dataset(np.repeat(prepare(x[:n]), reps, 0), np.repeat(y[:n], reps, 0), batch_size=8,
                                        augment=training.Augmentation() if augment else None, seed=seed)
        training.fit(self._unet, batches, (prepare(self.val_x), self.val_y), epochs=self.steps * 8 // 64)
        return _clone_trained(self._unet)

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
        self._compiled = {}

    def train(self, seed, depth=3, loss="bce", images=None, augment=False):
        key = (depth, loss)
        if key not in self._compiled:
            self._compiled[key] = training.compile_model(
                models.build_unet((self.size, self.size, 1), depth=depth, base_filters=16), loss=loss)
        model = training.reinitialize(self._compiled[key], seed)
        n = images or self.images
        batches = training.make_dataset(self.pool_x[:n], self.pool_y[:n], batch_size=8, seed=seed,
                                        augment=training.Augmentation() if augment else None)
        training.fit(model, batches.repeat().take(self.steps), epochs=1)  # one pass over `steps` batches
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
