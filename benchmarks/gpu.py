"""The benchmarks on a GPU, with and without mixed precision, through any Keras 3 backend.

Written for a machine with an NVIDIA GPU and no TensorFlow: the package's models, losses,
Dice metric and inference run on Keras 3's JAX (or PyTorch) backend unchanged; its
``tf.data`` input pipeline and ``fit`` helper need TensorFlow, so every arm here trains with
a plain ``model.fit`` on NumPy arrays, and the augmentation of the CLI's recipe is left out.
Run it as ``KERAS_BACKEND=jax python benchmarks/gpu.py --save results/gpu.json``; on a CPU
``--quick`` checks that the script runs (tiny sizes, no figures worth keeping).

Prints one JSON object with:

* ``matmul_tflops``: the device's measured matrix-multiply rate per dtype (8192^3 on a GPU),
  the ceiling the training figures are set against (float32 as the backend computes it by
  default, which on NVIDIA GPUs since Ampere is TF32 in JAX, and at full float32 precision);
* ``unet16_128``: training images/s of the 16-filter U-Net (depth 4) at 128x128, as in
  ``train_throughput.py``, for each dtype policy (``float32``, ``mixed_bfloat16``,
  ``mixed_float16``) at batch 16 (the CPU benchmark's) and a GPU-sized batch; with its
  first-epoch seconds (mostly compilation), training FLOPs per image and the share of the
  matching matmul rate achieved;
* ``article_256``: the article's encoder-decoder (64-512 filters) at its own size, 256x256,
  batch 8, per policy (2-core CPU: 0.8 images/s, which is why the chapters shrink it);
* ``time_to_dice``: seconds (compilation included) until held-out Dice reaches 0.90 on the
  phantom task of ``time_to_dice.py`` (160 phantoms at 128x128, 32 held out), for the CLI's
  recipe (U-Net depth 3, 8 filters, batch 8, Dice + cross-entropy, Adam 1e-3; no augmentation
  here) and the article's (its model, BCE, Adam 1e-3, batch 8), in the same run;
* ``inference``: 256x256 slices/s with and without flip TTA and the seconds of a
  sliding-window prediction of a 1024x1024 image, as in ``inference.py``, in float32 and
  mixed bfloat16, at batch 8 and 64.

Every timed figure is the median of three runs after a warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# JAX: allocate as needed rather than 75 % of the card up front (the figures don't change)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import keras  # noqa: E402  (after KERAS_BACKEND is set)
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from _report import emit, machine  # noqa: E402
from inference import median_seconds  # noqa: E402  (median of 3 timed calls after a warm-up)
from train_throughput import conv_flops  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
SECTIONS = ("matmul", "training", "article", "time_to_dice", "inference")


def _log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def device_report():
    """Backend, device name and versions."""
    report = {"keras_backend": keras.config.backend(), "keras": keras.__version__,
              "python": platform.python_version()}
    if keras.config.backend() == "jax":
        import jax  # noqa: PLC0415

        device = jax.devices()[0]
        report.update(jax=jax.__version__, device=f"{device.platform}:{device.device_kind}",
                      devices=len(jax.devices()))
    elif keras.config.backend() == "torch":
        import torch  # noqa: PLC0415

        report.update(torch=torch.__version__,
                      device=f"cuda:{torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu")
    else:
        report["device"] = "see the backend"
    return report


def _sync(x):
    """Wait until ``x`` is computed (reads one element back to the host)."""
    ops.convert_to_numpy(ops.reshape(x, (-1,))[:1])


def matmul_tflops(n, repeats=10):
    """Matrix-multiply rate per dtype, TFLOP/s: ``repeats`` chained products, median of 3 timings."""
    rng = np.random.default_rng(0)
    a32 = rng.standard_normal((n, n), dtype=np.float32)
    b32 = rng.standard_normal((n, n), dtype=np.float32)
    rates = {}
    cases = [("float32", "float32", None), ("bfloat16", "bfloat16", None), ("float16", "float16", None)]
    if keras.config.backend() == "jax":
        cases.insert(1, ("float32_highest", "float32", "highest"))
    for label, dtype, precision in cases:
        a, b = ops.convert_to_tensor(a32, dtype), ops.convert_to_tensor(b32, dtype)

        def run(a=a, b=b):
            c = a
            for _ in range(repeats):
                c = ops.matmul(b, c) * 1e-2  # chained, so no product can be skipped
            _sync(c)

        scope = contextlib.nullcontext()
        if precision:  # JAX only: float32 at full precision instead of TF32
            import jax  # noqa: PLC0415

            scope = jax.default_matmul_precision(precision)
        with scope:
            seconds, _ = median_seconds(run)
        rates[label] = round(2 * n**3 * repeats / seconds / 1e12, 2)
    return rates


def _compile(model, loss, learning_rate=1e-3):
    """``mc.training.compile_model``'s settings; that module imports TensorFlow, absent here."""
    import medseg_course as mc  # noqa: PLC0415

    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=mc.losses.get_loss(loss),
                  metrics=[mc.metrics.DiceMetric()])
    return model


def _set_policy(policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)


def fit_rate(model, images, masks, batch_size, epochs=1):
    """Images/s of plain ``model.fit`` (median of 3 after a warm-up epoch) and the warm-up's seconds."""
    start = time.perf_counter()
    model.fit(images, masks, batch_size=batch_size, epochs=1, verbose=0)
    first_epoch_s = time.perf_counter() - start
    seconds, runs = median_seconds(
        lambda: model.fit(images, masks, batch_size=batch_size, epochs=epochs, verbose=0), repeats=3)
    count = len(images) * epochs
    return {"images_per_s": round(count / seconds, 1), "runs_images_per_s": [round(count / r, 1) for r in runs],
            "first_epoch_s": round(first_epoch_s, 2), "batch_size": batch_size, "images_per_run": count}


def training(size, images, masks, batches, policies, matmul):
    """The 16-filter U-Net (depth 4) per policy and batch, with its FLOP share."""
    import medseg_course as mc  # noqa: PLC0415

    unet = {}
    ceiling = {"float32": matmul["float32"], "mixed_bfloat16": matmul["bfloat16"], "mixed_float16": matmul["float16"]}
    for policy in policies:
        _set_policy(policy)
        model = _compile(mc.models.build_unet((size, size, 1), depth=4, base_filters=16), "dice_ce")
        _, per_image = conv_flops(model)
        for batch in batches:
            rate = fit_rate(model, images, masks, batch)
            achieved = per_image * rate["images_per_s"] / 1e12
            rate.update(training_gflop_per_image=round(per_image / 1e9, 3), achieved_tflops=round(achieved, 2),
                        share_of_matmul_rate=round(achieved / ceiling[policy], 3))
            unet[f"{policy}_batch{batch}"] = rate
            _log("unet", policy, batch, rate["images_per_s"], "img/s")
    return unet


def article(size, images, masks, policies):
    import medseg_course as mc  # noqa: PLC0415

    result = {}
    for policy in policies:
        _set_policy(policy)
        model = _compile(mc.models.build_seed_encoder_decoder((size, size, 1)), "bce")
        result[policy] = fit_rate(model, images, masks, batch_size=8)
        _log("article", policy, result[policy]["images_per_s"], "img/s")
    return result


class _TimeToTarget(keras.callbacks.Callback):
    """Seconds since ``fit`` began and ``val_dice`` at each epoch's end; stops training once
    ``val_dice`` reaches ``target`` or the seconds pass ``budget``."""

    def __init__(self, target, budget):
        super().__init__()
        self.target, self.budget, self.seconds, self.val_dice = target, budget, [], []

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(round(time.perf_counter() - self.start, 2))
        self.val_dice.append(round(float(logs["val_dice"]), 4))
        if self.val_dice[-1] >= self.target or self.seconds[-1] > self.budget:
            self.model.stop_training = True


def _curve(model, train, val, target, budget, batch_size=8, max_epochs=400):
    clock = _TimeToTarget(target, budget)
    model.fit(*train, validation_data=val, batch_size=batch_size, epochs=max_epochs, verbose=0, callbacks=[clock])
    reached = next((s for s, d in zip(clock.seconds, clock.val_dice) if d >= target), None)
    return {"seconds_to_target": reached, "seconds": clock.seconds, "val_dice": clock.val_dice}


def time_to_dice(size, count, held_out, target, budget, policy="float32"):
    """Both recipes on the phantom task, in this order, each from its own fresh model."""
    import medseg_course as mc  # noqa: PLC0415

    images, masks = mc.data.make_phantoms(count, image_size=size, seed=0)
    val = (images[:held_out], masks[:held_out])
    train = (images[held_out:], masks[held_out:])
    _set_policy(policy)
    package = _compile(mc.models.build_unet((size, size, 1), depth=3, base_filters=8), "dice_ce")
    result = {"policy": policy, "target_dice": target, "budget_s": budget,
              "package": _curve(package, train, val, target, budget)}
    _set_policy(policy)
    seed_model = _compile(mc.models.build_seed_encoder_decoder((size, size, 1)), "bce")
    result["article"] = _curve(seed_model, train, val, target, budget)
    fast, slow = result["package"]["seconds_to_target"], result["article"]["seconds_to_target"]
    if fast and slow:
        result["ratio"] = round(slow / fast, 1)
    elif fast:
        result["ratio_at_least"] = round(result["article"]["seconds"][-1] / fast, 1)
    _log("time to dice", {k: result[k]["seconds_to_target"] for k in ("package", "article")})
    return result


def inference(slices, size, window_image, batches, policies):
    import medseg_course as mc  # noqa: PLC0415

    rng = np.random.default_rng(0)
    stack = rng.random((slices, size, size, 1), dtype=np.float32)
    image = rng.random((window_image, window_image, 1), dtype=np.float32)
    result = {}
    for policy in policies:
        _set_policy(policy)
        model = mc.models.build_unet((size, size, 1), depth=4, base_filters=16)
        for batch in batches:
            row = {}
            for label, tta in (("plain", False), ("tta_flips", True)):
                seconds, _ = median_seconds(lambda tta=tta: mc.inference.predict(model, stack, batch_size=batch, tta=tta))
                row[f"slices_per_s_{label}"] = round(slices / seconds, 1)
            seconds, _ = median_seconds(lambda: mc.inference.predict_sliding_window(
                model, image, (size, size), overlap=0.5, batch_size=batch))
            row[f"sliding_window_{window_image}_s"] = round(seconds, 3)
            result[f"{policy}_batch{batch}"] = row
            _log("inference", policy, batch, row)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="write the JSON here (after every section, so a "
                        "run cut short keeps what it measured)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that it runs (CPU)")
    parser.add_argument("--skip", nargs="*", default=(), choices=SECTIONS)
    args = parser.parse_args(argv)
    import medseg_course as mc  # noqa: PLC0415

    quick = args.quick
    result = {"machine": {**machine(), **device_report()}}
    _log(result["machine"])
    policies = POLICIES[:2] if quick else POLICIES
    if "matmul" not in args.skip:
        result["matmul_tflops"] = matmul_tflops(256 if quick else 8192)
        _log("matmul", result["matmul_tflops"])
    ceilings = result.get("matmul_tflops", {"float32": np.nan, "bfloat16": np.nan, "float16": np.nan})
    for section in SECTIONS[1:]:
        if section in args.skip:
            continue
        if section == "training":
            size = 32 if quick else 128
            images, masks = mc.data.make_phantoms(16 if quick else 512, image_size=size, seed=0)
            result["unet16_128"] = training(size, images, masks, (8,) if quick else (16, 128), policies, ceilings)
        elif section == "article":
            size = 32 if quick else 256
            images, masks = mc.data.make_phantoms(16 if quick else 128, image_size=size, seed=0)
            result["article_256"] = article(size, images, masks, policies)
        elif section == "time_to_dice":
            result["time_to_dice"] = (time_to_dice(32, 24, 8, 0.5, 20) if quick
                                      else time_to_dice(128, 160, 32, 0.90, 60))
        else:
            result["inference"] = (inference(8, 32, 64, (8,), policies[:1]) if quick
                                   else inference(64, 256, 1024, (8, 64), POLICIES[:2]))
        if args.save:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_text(json.dumps(result, indent=2) + "\n")
    emit(result, args.save)


if __name__ == "__main__":
    main()
