"""Training throughput on this machine, and the time the quick-tour chapter takes.

Prints one JSON object with:

* ``unet16_128`` and ``article_128``: images per second of training (after a warm-up epoch
  that absorbs tracing and graph compilation) for the 16-filter U-Net (depth 4) and the
  article's encoder-decoder (64-512 filters) at 128x128, through the package's tf.data +
  ``fit`` path; each the median of three timed runs (single runs on the 2-core machine
  vary by up to ~40 %, so one sample is not a measurement);
* ``unet16_128_vs_plain_fit``: the package's path (its model, with ``FusedBatchNormalization``;
  oneDNN's kernels, which the package turns on by default, ``TF_ENABLE_ONEDNN_OPTS=1``; its
  input pipeline and ``fit``) against a plain ``model.fit`` on NumPy arrays in a process with
  TensorFlow's defaults, of the same architecture built from Keras's stock layers (as a user
  writing it would: ``keras.layers.BatchNormalization``), same initial weights, loss,
  optimizer and batch, each in its own worker process (the settings a process starts
  TensorFlow with cannot be changed afterwards), timed in alternation so that drifts in the
  machine's speed hit every arm alike. Each round starts
  fresh workers, in an order rotated by one arm per round, and times them in that order: on a
  2-core Intel Xeon the worker started and timed last ran 10-20 % faster than the first
  whichever arm it was, so with a fixed order the comparison measured the order. Two more
  arms, plain ``model.fit`` in a process set up like the package's with the stock layers and
  then with the package's model, split the gain into what the process settings, the model's
  layers and the input pipeline give;
* ``levers`` (with ``--levers``): the package's path with one setting changed, in the same
  alternation: op determinism off (``setup(deterministic=False)``); XLA (``jit_compile=True``,
  which Keras leaves off on CPU-only machines and refuses under op determinism, so this arm
  runs without determinism too: compare it with that arm); batch 32; and tf.data's autotuner
  on (``autotune``: the package switches it off, which changes no value); and, on a CPU whose
  ``/proc/cpuinfo`` lists AVX512-BF16 or AMX, mixed precision (``bf16``: Keras's
  ``mixed_bfloat16`` policy, bfloat16 convolutions with float32 weights and loss; elsewhere
  the arm is left out: such a CPU has no bfloat16 arithmetic to gain from);
* ``flops``: the U-Net's training FLOPs per image (its convolutions, counted from the layer
  shapes), the machine's measured float32 matrix-multiply rate, and the share of it the
  training step achieves (with the ``bf16`` arm: the same against the bfloat16 rate);

and the wall-clock seconds of executing ``book/00_quick_tour.ipynb`` in a fresh kernel.

Usage: ``python benchmarks/train_throughput.py [--save results/train_throughput.json]
[--skip-tour] [--levers]``. Threads are pinned to 2 (``mc.environment.setup``), as in the book.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The package's default CPU setting (README, "CPU speed"), also set by importing it; the
# plain arm drops it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _report import emit, machine  # noqa: E402

SIZE, BATCH, IMAGES, EPOCHS = 128, 16, 64, 2


# ------------------------------------------------------------------ worker processes


def _worker(arm):
    """One arm of the alternating comparison: warm up, then time EPOCHS epochs per 'run'.

    ``plain``: what a user without the package does: TensorFlow imported first, with its
    own defaults (threads, kernels), then ``model.fit`` on NumPy arrays, the U-Net built
    from Keras's stock layers.
    ``plain_setup``: the same in a process set up by ``mc.environment.setup``.
    ``plain_setup_model``: that, with the package's model (``FusedBatchNormalization``).
    ``package``: ``mc.environment.setup`` + the package's model + ``mc.training.make_dataset`` +
    ``mc.training.fit``.
    """
    if arm == "plain":
        os.environ.pop("TF_ENABLE_ONEDNN_OPTS", None)  # TensorFlow's own default
        import tensorflow  # noqa: F401, PLC0415  (first, as a plain user would)
    import medseg_course as mc  # noqa: PLC0415

    if arm != "plain":
        # Keras refuses XLA while TensorFlow's op determinism is on, so the XLA arm runs without it
        mc.environment.setup(seed=0, threads=2, deterministic=arm not in ("package_nondeterministic", "package_xla"))
    import keras  # noqa: PLC0415

    if arm == "package_bf16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    images, masks = mc.data.make_phantoms(IMAGES, image_size=SIZE, seed=0)
    if arm in ("plain", "plain_setup"):  # the same U-Net from Keras's stock layers
        fused = mc.models.FusedBatchNormalization
        mc.models.FusedBatchNormalization = keras.layers.BatchNormalization  # what build_unet uses
        try:
            model = mc.models.build_unet((SIZE, SIZE, 1), depth=4, base_filters=16)
        finally:
            mc.models.FusedBatchNormalization = fused
    else:
        model = mc.models.build_unet((SIZE, SIZE, 1), depth=4, base_filters=16)
    mc.training.compile_model(model, loss="dice_ce", learning_rate=1e-3, jit_compile=arm == "package_xla" or "auto")
    if arm.startswith("package"):
        batch = 32 if arm == "package_batch32" else BATCH
        data = mc.training.make_dataset(images, masks, batch_size=batch, seed=0)
        if arm == "package_autotune":  # the package's pipeline before it switched tf.data's autotuner off
            import tensorflow as tf  # noqa: PLC0415

            options = tf.data.Options()
            options.autotune.enabled = True
            data = data.with_options(options)

        def run(epochs):
            mc.training.fit(model, data, epochs=epochs)
    else:

        def run(epochs):
            model.fit(images, masks, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0)

    run(1)  # warm-up: tracing and compilation
    status = {"onednn": mc.environment.onednn_enabled(), "matmul_gflops": _matmul_gflops(),
              "matmul_bf16_gflops": _matmul_gflops(dtype="bfloat16") if arm == "package_bf16" else None}
    print(json.dumps(status), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start = time.perf_counter()
        run(EPOCHS)
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def _matmul_gflops(n=2048, repeats=5, dtype="float32"):
    """Best-of-``repeats`` matrix-multiply rate of this process in ``dtype``, in GFLOP/s."""
    import tensorflow as tf  # noqa: PLC0415

    a = tf.cast(tf.random.stateless_uniform((n, n), seed=(0, 1)), dtype)
    b = tf.cast(tf.random.stateless_uniform((n, n), seed=(0, 2)), dtype)
    tf.linalg.matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return round(2 * n**3 / best / 1e9, 1)


LEVERS = ("package_xla", "package_nondeterministic", "package_batch32", "package_autotune", "package_bf16")
ARMS = ("package", "plain", "plain_setup", "plain_setup_model", *LEVERS)


def _arms(levers):
    """The arms to run: the bfloat16 one only on a CPU with bfloat16 matrix instructions."""
    if not levers:
        return ARMS[:4]
    return tuple(arm for arm in ARMS if arm != "package_bf16" or machine()["bf16_hardware"])


def against_plain_fit(rounds=3, levers=False):
    """Images/s of each arm over ``rounds`` rounds; round r starts fresh workers and times
    them once each, in the arms' order rotated by r (so no arm is always first or last)."""
    arms = _arms(levers)
    rates = {arm: [] for arm in arms}
    status = {}
    orders = []
    for r in range(rounds):
        order = arms[r % len(arms):] + arms[: r % len(arms)]
        orders.append(list(order))
        workers = {}
        try:
            for arm in order:  # started one after another, so warm-ups do not overlap either
                workers[arm] = subprocess.Popen(
                    [sys.executable, __file__, "--worker", arm],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                )
                status[arm] = json.loads(workers[arm].stdout.readline())
            for arm in order:
                workers[arm].stdin.write("run\n")
                workers[arm].stdin.flush()
                seconds = json.loads(workers[arm].stdout.readline())["seconds"]
                rates[arm].append(IMAGES * EPOCHS / seconds)
        finally:
            for worker in workers.values():
                worker.stdin.close()
                worker.wait(timeout=60)
    medians = {arm: statistics.median(values) for arm, values in rates.items()}
    lever_rates = {
        arm.removeprefix("package_"): {"images_per_s": round(medians[arm], 2),
                                       "ratio_to_package": round(medians[arm] / medians["package"], 3)}
        for arm in arms if arm in LEVERS
    }
    return {
        "package_images_per_s": round(medians["package"], 2),
        "plain_fit_images_per_s": round(medians["plain"], 2),
        "ratio": round(medians["package"] / medians["plain"], 3),
        "plain_fit_with_setup_images_per_s": round(medians["plain_setup"], 2),
        "plain_fit_with_setup_and_model_images_per_s": round(medians["plain_setup_model"], 2),
        "ratio_from_setup": round(medians["plain_setup"] / medians["plain"], 3),
        "ratio_from_model": round(medians["plain_setup_model"] / medians["plain_setup"], 3),
        "ratio_from_pipeline": round(medians["package"] / medians["plain_setup_model"], 3),
        "runs": {arm: [round(r, 2) for r in values] for arm, values in rates.items()},
        "orders": orders,
        "onednn": {arm: status[arm]["onednn"] for arm in arms},
        "matmul_gflops": {arm: status[arm]["matmul_gflops"] for arm in arms},
        **({"matmul_bf16_gflops": status["package_bf16"]["matmul_bf16_gflops"]} if "package_bf16" in arms else {}),
        "batch_size": BATCH,
        "images_per_run": IMAGES * EPOCHS,
        **({"levers": lever_rates} if lever_rates else {}),
    }


# ------------------------------------------------------------------ in this process


def training_rate(mc, model, images, masks, batch_size, epochs, repeats=3):
    """Images/s of ``repeats`` timed runs of ``epochs`` epochs, after one warm-up epoch
    (timed too: mostly tracing)."""
    mc.training.compile_model(model, loss="dice_ce", learning_rate=1e-3)
    data = mc.training.make_dataset(images, masks, batch_size=batch_size, seed=0)
    start = time.perf_counter()
    mc.training.fit(model, data, epochs=1)  # warm-up: tracing and compilation
    first_epoch_s = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        mc.training.fit(model, data, epochs=epochs)
        rates.append(len(images) * epochs / (time.perf_counter() - start))
    return {
        "images_per_s": round(statistics.median(rates), 2),
        "images_per_s_runs": [round(r, 2) for r in rates],
        "images_per_run": len(images) * epochs,
        "batch_size": batch_size,
        "parameters": model.count_params(),
        "first_epoch_s": round(first_epoch_s, 2),
    }


def conv_flops(model):
    """Forward and training FLOPs per image of a model's convolutions (a multiply-add = 2).

    Training = forward + the gradient with respect to the weights (the same count again) +
    the gradient with respect to the input (again, except for layers fed by the model's
    input, whose input gradient nobody needs). Element-wise layers (batch norm, ReLU,
    pooling) add well under 1 % and are left out.
    """
    import keras  # noqa: PLC0415

    inputs = {id(t) for t in model.inputs}
    forward = training = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            (_, h, w, c_in), c_out = layer.input.shape, layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            (_, h, w, _), c_out = layer.output.shape, layer.filters
            c_in = layer.input.shape[-1]
        else:
            continue
        kh, kw = layer.kernel_size
        flops = 2 * h * w * kh * kw * c_in * c_out
        forward += flops
        training += flops * (2 if id(layer.input) in inputs else 3)
    return forward, training


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="also write the JSON to this file")
    parser.add_argument("--skip-tour", action="store_true", help="do not time the quick tour")
    parser.add_argument("--levers", action="store_true",
                        help="also time XLA, determinism off, batch 32, tf.data's autotuner and "
                             "(where the CPU has it) bfloat16")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of fresh workers (a full rotation of the order takes one per arm)")
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker)
        return

    # first: its workers must not share the CPU with us
    comparison = against_plain_fit(rounds=args.rounds, levers=args.levers)
    import medseg_course as mc  # noqa: PLC0415

    info = mc.environment.setup(seed=0, threads=2)
    images, masks = mc.data.make_phantoms(IMAGES, image_size=SIZE, seed=0)
    unet = mc.models.build_unet((SIZE, SIZE, 1), depth=4, base_filters=16)
    article = mc.models.build_seed_encoder_decoder((SIZE, SIZE, 1))
    unet_rate = training_rate(mc, unet, images, masks, batch_size=BATCH, epochs=EPOCHS)
    forward, training = conv_flops(unet)
    matmul = comparison["matmul_gflops"]["package"]
    achieved = training * comparison["package_images_per_s"] / 1e9
    result = {
        "machine": {
            **machine(),
            "threads": info.threads,
            "device": info.device,
            "onednn": info.onednn,
            "tensorflow": info.versions.get("tensorflow-cpu", info.versions.get("tensorflow")),
        },
        "unet16_128": unet_rate,
        "article_128": training_rate(mc, article, images[:16], masks[:16], batch_size=8, epochs=1),
        "unet16_128_vs_plain_fit": comparison,
        "flops": {
            "forward_gflop_per_image": round(forward / 1e9, 3),
            "training_gflop_per_image": round(training / 1e9, 3),
            "achieved_gflops": round(achieved, 1),
            "matmul_gflops": matmul,
            "share_of_matmul_rate": round(achieved / matmul, 3),
        },
    }
    if "matmul_bf16_gflops" in comparison:  # the bfloat16 arm, against the bfloat16 matrix rate
        bf16_achieved = training * comparison["levers"]["bf16"]["images_per_s"] / 1e9
        result["flops"]["bf16"] = {
            "achieved_gflops": round(bf16_achieved, 1),
            "matmul_gflops": comparison["matmul_bf16_gflops"],
            "share_of_matmul_rate": round(bf16_achieved / comparison["matmul_bf16_gflops"], 3),
        }
    if not args.skip_tour:
        from notebook_times import time_notebook  # noqa: PLC0415

        result["quick_tour_seconds"] = time_notebook(ROOT / "book" / "00_quick_tour.ipynb")["seconds"]
    emit(result, args.save)


if __name__ == "__main__":
    main()
