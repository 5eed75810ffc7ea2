"""The planner: from a data set's fingerprint and a time budget to a recipe, each choice with its reason.

nnU-Net showed that a segmentation recipe can be derived from the data with fixed rules
instead of tuned per data set; here the rules must also fit a CPU and a time budget. The
2D rules, in order:

- **Resize or patches.** ``fingerprint.resize_ceiling`` measures the Dice a perfect model
  would keep if slices were resized into the model's input. The input is the smallest side
  of ``SIDES`` from ``MIN_RESIZE_SIDE`` (or the slices' own side, if smaller) whose ceiling
  loses at most ``MAX_RESIZE_LOSS``; if none up to the largest side does, the model trains
  on patches at native resolution (thin structures survive) and predicts by sliding window.
  Small structures in images larger than ``MIN_RESIZE_SIDE`` also train on native patches
  (``choose_input``): whole images would spend most of each step on background.
- **Patch side.** At least 128 pixels, and 4x the typical structure thickness (context to
  recognise a structure whole), up to 256.
- **Depth and width.** The fewest poolings (3 or 4) whose receptive field spans the large
  structures at the model's scale (``receptive_field``: 96 and 200 pixels); 16 filters at the first level with a budget of two minutes or more, else 8 (the
  small network reached a given Dice soonest in 15-60 s runs: ``benchmarks/time_to_dice.py``).
- **Normalisation.** CT (Hounsfield units, from the fingerprint) gets one window for all
  scans from the labelled tissue's percentiles, then its mean and sd, as in nnU-Net; other
  images are clipped to their own 0.5-99.5 percentiles and rescaled to [0, 1].
- **Augmentation.** ``training.Augmentation`` (flips, small rotations, zoom and shift,
  intensity changes, noise) for 2D pictures; none for slices of volumes, where the axes
  carry anatomy and a flip can swap labelled parts (the hippocampus' head and tail). Slices
  exported one per file look like pictures here: pass ``--no-augment`` for them.
- **Epochs.** Without a budget, 15. With one, as many as fit 90 % of it, from a measured
  step time (``slice_runs.train_run`` times a few steps of the real model first); the run
  then trains exactly that many, so a saved plan repeats.
- **Memory.** The batch halves until the estimated peak fits ``memory_limit_gb``.

The 3D rules are the measured hippocampus recipe (``volume_runs.DEFAULTS_3D``): the
median spacing, a patch that holds the median volume, batch 2. Every choice can be set on
the command line instead; the plan says which ones you set.
"""

from __future__ import annotations

import numpy as np

from medseg_course.fingerprint import resize_ceiling

__all__ = ["PLAN_RECORDED", "SIDES", "MIN_RESIZE_SIDE", "MAX_RESIZE_LOSS", "MEMORY_LIMIT_GB", "plan_2d", "plan_2d_for", "plan_3d", "check_plan_fits",
           "apply_overrides", "choose_input",
           "receptive_field", "normalisation_for", "epochs_for_budget", "epoch_overhead_s", "estimate_memory_gb", "format_plan", "settings_from_plan", "PLAN_NAME"]

#: Model input sides the planner considers (multiples of 32, so four poolings divide them).
SIDES = (64, 96, 128, 160, 192, 224, 256)
#: Resize no smaller than this, unless the slices themselves are smaller.
MIN_RESIZE_SIDE = 128
#: The most Dice a perfect model may lose to resizing before the planner prefers patches.
MAX_RESIZE_LOSS = 0.02
#: Peak memory the planner's recipes must stay under (the 2-core, 24 GB course machine's target).
MEMORY_LIMIT_GB = 3.0
#: The plan in a run folder.
PLAN_NAME = "plan.json"
#: Choices a 2D run's config.json records under the same name (a plan rebuilt from an old run).
PLAN_RECORDED = ("depth", "base_filters", "batch_size", "augment", "loss", "learning_rate", "epochs",
                 "patches_per_image")

#: Command-line option of each planned setting (for "set by you" and for messages).
OPTIONS = {"mode": "--mode", "image_size": "--image-size", "patch_size": "--patch-size",
           "patches_per_image": "--patches-per-image", "depth": "--depth", "base_filters": "--base-filters",
           "batch_size": "--batch-size", "augment": "--no-augment", "loss": "--loss", "epochs": "--epochs",
           "learning_rate": "--learning-rate", "patch_shape": "--patch-shape", "augment_3d": "--augment",
           "steps_per_epoch": "--steps-per-epoch", "normalisation": "--normalisation"}


def _round_up(value, step=32):
    return int(-(-int(np.ceil(value)) // step) * step)


def receptive_field(depth):
    """Pixels an output pixel of ``models.build_unet`` sees along one axis: two 3x3
    convolutions per level and at the bottleneck, 2x2 pooling, 2x2 transposed convolutions
    with stride 2 (each output pixel comes from one input pixel: they add nothing)."""
    field, jump = 1, 1
    for _ in range(depth):
        field += 4 * jump + jump  # two convolutions, then the pooling
        jump *= 2
    field += 4 * jump  # the bottleneck's two convolutions
    for _ in range(depth):
        jump //= 2
        field += 4 * jump  # the two convolutions after the transposed one
    return field


def choose_input(cases, longest_side, max_loss=MAX_RESIZE_LOSS, extent_px=None):
    """``(mode, side, ceilings, reason)``: resize to the smallest adequate side, or patches.

    Resizing needs a side from ``MIN_RESIZE_SIDE`` up whose resize ceiling loses at most
    ``max_loss``. Where that side is larger than ``MIN_RESIZE_SIDE`` but the structures
    (``extent_px``, 90th percentile of their extent) fit a patch of that size with a
    quarter to spare, native patches win instead: fewer pixels per sample, half of the
    samples centred on the structures rather than on background.
    """
    own = _round_up(longest_side, 32)
    ceilings = {}
    start = min(MIN_RESIZE_SIDE, own)
    for side in sorted({s for s in SIDES if start <= s <= own} | ({own} if own <= SIDES[-1] else set())):
        ceilings[side] = round(resize_ceiling(cases, side), 4)
        if ceilings[side] >= 1 - max_loss:
            if side > MIN_RESIZE_SIDE and extent_px is not None and 1.25 * extent_px <= MIN_RESIZE_SIDE:
                return "patch", None, ceilings, (
                    f"whole slices would need {side}x{side} (resize ceilings {ceilings}), but the structures "
                    f"({extent_px:g} px across, 90th percentile) fit {MIN_RESIZE_SIDE}-pixel patches with room for "
                    "context: native patches, half centred on them, cost less per sample and spend it where the "
                    "structures are")
            where = "the slices' own size" if side >= longest_side else f"{side}x{side}"
            return "resize", side, ceilings, (
                f"resizing to {where} keeps {ceilings[side]:.3f} of a perfect model's Dice "
                f"(at most {max_loss:g} may be lost; measured on the masks)")
    best = max(ceilings.items(), key=lambda item: item[1]) if ceilings else (own, 1.0)
    return "patch", None, ceilings, (
        f"resizing loses too much: even at {best[0]}x{best[0]} a perfect model would keep only {best[1]:.3f} of its "
        f"Dice (thin structures vanish), so the model trains on native-resolution patches")


def normalisation_for(fp):
    """``(scheme, reason)``: one window for CT (nnU-Net's rule), per-image percentiles otherwise."""
    fg = fp["intensity"]["foreground"]
    if fp["modality"] == "CT" and fg.get("std"):
        scheme = {"scheme": "window", "low": fg["p0.5"], "high": fg["p99.5"], "mean": fg["mean"], "std": fg["std"]}
        return scheme, (f"CT in Hounsfield units: one window for every scan, the labelled tissue's 0.5-99.5 "
                        f"percentiles ({fg['p0.5']:g} to {fg['p99.5']:g} HU), then its mean and sd (nnU-Net's CT rule)")
    return {"scheme": "percentiles"}, (f"{fp['modality']}: intensities without fixed units, so each image is clipped "
                                       "to its own 0.5-99.5 percentiles and rescaled to [0, 1]")


def _choice(value, reason):
    return {"value": value, "reason": reason, "by": "plan"}


def plan_2d(fp, cases, time_budget_min=None, dims=2, image_size=None, patch_size=None):
    """The 2D (or 2.5D) recipe for a fingerprint ``fp`` of ``cases`` (training + validation).

    ``image_size`` or ``patch_size`` given (on the command line) decide the mode: resizing
    to that side, or patches of it; the plan still reports what resizing would cost.

    Returns a plan: ``{"dims", "choices": {name: {"value", "reason", "by"}}, "fingerprint"}``.
    ``epochs`` is provisional until ``epochs_for_budget`` has a measured step time.
    """
    choices = {}
    longest = fp["longest_side_px"]
    if image_size:
        ceiling = round(resize_ceiling(cases, image_size), 4)
        mode, side, ceilings, reason = "resize", image_size, {image_size: ceiling}, (
            f"--image-size given: slices resized to {image_size}x{image_size} (a perfect model would keep "
            f"{ceiling:.3f} of its Dice there)")
    elif patch_size:
        mode, side, ceilings, reason = "patch", None, {}, "--patch-size given: native-resolution patches"
    else:
        mode, side, ceilings, reason = choose_input(cases, longest, extent_px=fp["structures"]["extent_px"]["p90"])
    choices["mode"] = _choice(mode, reason)
    structure = fp["structures"]["thickness_px"]["p50"] or 0
    if mode == "resize":
        choices["image_size"] = _choice(side, f"resize ceiling by side: {ceilings}")
        model_side = side
    else:
        patch = int(min(256, max(128, _round_up(4 * structure, 32)), _round_up(longest, 32)))
        choices["patch_size"] = _choice(patch, f"at least 128 and 4x the typical structure's thickness "
                                               f"({structure:g} px), at most 256; resize ceilings {ceilings}")
        area = float(np.prod(fp["shape_px"]["median"][1:]))
        per_image = int(np.clip(np.ceil(2 * area / patch**2), 8, 32))
        choices["patches_per_image"] = _choice(per_image, "enough patches to cover each slice about twice (8-32)")
        model_side = patch
    scale = model_side / longest if mode == "resize" else 1.0
    extent = min(model_side, scale * (fp["structures"]["extent_px"]["p90"] or 0))
    depth = next((d for d in (3, 4) if receptive_field(d) >= extent), 4)
    depth = min(depth, max(2, int(np.log2(model_side / 8))))
    choices["depth"] = _choice(depth, f"the fewest poolings (3 or 4) whose receptive field ({receptive_field(depth)} px) "
                                      f"spans the large structures ({extent:.0f} px at the model's scale, 90th "
                                      f"percentile of their extent), with a bottleneck of at least 8 px")
    roomy = time_budget_min is not None and time_budget_min >= 2
    choices["base_filters"] = _choice(16 if roomy else 8, "16 filters at the first level for a budget of 2 minutes "
                                      "or more" if roomy else "8 filters, the measured default for short runs (15 "
                                      "epochs without a budget, or a budget under 2 minutes): the fastest to a given "
                                      "Dice in 15-60 s runs (benchmarks/time_to_dice.py)")
    choices["batch_size"] = _choice(8, "8 images per step; halved where the memory estimate needs it")
    volumes = fp["shape_px"]["median"][0] > 1
    if volumes:
        choices["augment"] = _choice(False, "slices of volumes: the axes carry anatomy and flips can swap labelled "
                                            "parts, so no augmentation")
    else:
        choices["augment"] = _choice(True, "2D pictures: flips, small rotations and zooms, intensity changes "
                                           "(slices of volumes saved one per file: pass --no-augment)")
    choices["normalisation"] = _choice(*normalisation_for(fp))
    choices["loss"] = _choice("dice_ce", "Dice + cross-entropy: robust to small foregrounds (chapter 5)")
    choices["learning_rate"] = _choice(1e-3, "Adam's usual 1e-3")
    choices["epochs"] = _choice(15 if time_budget_min is None else None,
                                "15 without a time budget" if time_budget_min is None else
                                "as many as fit 90 % of the budget, from a measured step time")
    return {"dims": dims, "choices": choices, "fingerprint": fp, "time_budget_min": time_budget_min}


def plan_2d_for(cases, settings, dims=2):
    """``plan_2d`` for the command line's ``settings``: the fingerprint of ``cases``
    (training + validation), the budget, and a size given for the mode the user chose
    (``--image-size`` for resizing, ``--patch-size`` for patches), with every option given
    marked as the user's (``apply_overrides``)."""
    from medseg_course.fingerprint import fingerprint  # noqa: PLC0415

    mode = settings.get("mode") if settings.get("mode") in ("resize", "patch") else None
    plan = plan_2d(fingerprint(cases, settings.get("data")), cases, settings.get("time_budget_min"), dims,
                   settings.get("image_size") if mode != "patch" else None,
                   settings.get("patch_size") if mode != "resize" else None)
    return apply_overrides(plan, settings)


def plan_3d(fp, defaults, time_budget_min=None, patch_shape=None):
    """The 3D recipe: the measured hippocampus ``defaults`` (``volume_runs.DEFAULTS_3D``),
    the median spacing and a patch holding the median volume."""
    DEFAULTS_3D = defaults  # noqa: N806
    choices = {
        "patch_shape": _choice(patch_shape, "the median volume rounded up to a multiple of 2^depth per axis (at most "
                                            "64x96x96; larger volumes are tiled)"),
        "spacing_mm": _choice(fp.get("spacing_mm"), "the median voxel size of the training cases"),
        "depth": _choice(DEFAULTS_3D["depth"], "three poolings, as the measured hippocampus recipe"),
        "base_filters": _choice(DEFAULTS_3D["base_filters"], "16 filters (8 were worse in 15 minutes)"),
        "batch_size": _choice(DEFAULTS_3D["batch_size"], "2 patches per step"),
        "steps_per_epoch": _choice(DEFAULTS_3D["steps_per_epoch"], "100 steps between validations"),
        "augment_3d": _choice(DEFAULTS_3D["augment_3d"], "no augmentation: the mirror did not help in a 15-minute "
                                                         "budget (benchmarks/README.md)"),
        "loss": _choice("dice_ce", "Dice + cross-entropy"),
        "learning_rate": _choice(DEFAULTS_3D["learning_rate"], "Adam 1e-3 with polynomial decay over the run"),
        "epochs": _choice(15 if time_budget_min is None else None,
                          "15 without a time budget" if time_budget_min is None else
                          "as many as the time budget allows (3D runs repeat only without a budget: the learning "
                          "rate decays with the budget's clock)"),
    }
    return {"dims": 3, "choices": choices, "fingerprint": fp, "time_budget_min": time_budget_min}


def check_plan_fits(plan, fp, where):
    """Refuse (``DataSetError``, one line) a saved plan made for other data: another channel
    count, kind of picture or label set than the fingerprint ``fp`` of these data."""
    from medseg_course.datasets import DataSetError  # noqa: PLC0415

    saved = plan.get("fingerprint") or {}
    for key, what in (("channels", "channel count"), ("modality", "kind of picture"), ("labels", "labels")):
        if key in saved and saved[key] != fp[key]:
            raise DataSetError(f"{where}: the plan was made for data with another {what} ({saved[key]} there, "
                               f"{fp[key]} here); plan these data afresh (leave --plan out).")
    plan.setdefault("fingerprint", fp)


def apply_overrides(plan, settings):
    """Mark the choices the user set on the command line (``settings[name]`` not None) as theirs."""
    for name, choice in plan["choices"].items():
        given = settings.get(name)
        if name == "augment":
            given = False if settings.get("no_augment") else None
        if name == "normalisation":
            given = {"scheme": "percentiles"} if settings.get("normalisation") == "percentiles" else None
        if name == "mode" and given == "auto":
            given = None
        if given is not None:
            plan["choices"][name] = {"value": given, "reason": f"set by you ({OPTIONS.get(name, name)})", "by": "you"}
    return plan


def settings_from_plan(plan):
    """``{name: value}`` of every choice (what ``train`` runs with)."""
    return {name: choice["value"] for name, choice in plan["choices"].items()}


def epochs_for_budget(budget_s, step_s, steps_per_epoch, first_step_s, validation_s=0.0, share=0.9):
    """How many whole epochs fit ``share`` of ``budget_s``: the first step (tracing) once,
    then ``steps_per_epoch`` steps of ``step_s`` and a validation of ``validation_s`` per
    epoch. At least 1."""
    epoch_s = steps_per_epoch * step_s + validation_s
    return max(1, int((share * budget_s - first_step_s) // max(epoch_s, 1e-6)))


def epoch_overhead_s(model):
    """Seconds each epoch spends outside the training steps, besides validation: the log
    and callbacks (0.15 s measured on 2 cores) and the resume checkpoint, seven copies of
    the weights' bytes (``runs._checkpoint_bytes``) written at about 0.3 GB/s."""
    weights = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    return 0.15 + 7 * weights / 0.3e9


def estimate_memory_gb(model, batch_size, data_bytes):
    """Estimated peak memory of training ``model``: 0.6 GB of TensorFlow and libraries, the
    data in memory, the weights with Adam's two moments, and every layer's output kept for
    the backward pass with its gradient and a working copy (3x), per image of the batch."""
    activations = 0
    for layer in model.layers:
        shapes = layer.output.shape if hasattr(layer, "output") else None
        if shapes is not None:
            activations += int(np.prod([d for d in shapes[1:] if d is not None]))
    weights = sum(int(np.prod(v.shape)) for v in model.weights)
    total = 0.6e9 + data_bytes + 4 * 4 * weights + 3 * 4 * activations * batch_size
    return round(total / 1e9, 2)


def format_plan(plan):
    """The plan as lines of text: the fingerprint's essentials, then each choice and its reason."""
    fp = plan["fingerprint"]
    median = "x".join(f"{v:g}" for v in fp["shape_px"]["median"])
    lines = [f"data: {fp['cases']} cases ({fp['slices']} slices), median {median} px (slices x height x width), "
             f"{fp['channels']} channel(s), {fp['modality']} ({fp['modality_evidence']})",
             f"labels {fp['labels']}, foreground {100 * fp['foreground_fraction']['mean']:.1f} % of the pixels "
             f"(min {100 * fp['foreground_fraction']['min']:.1f} %, max {100 * fp['foreground_fraction']['max']:.1f} %); "
             f"structures: thickness {fp['structures']['thickness_px']['p50']} px (median), local width "
             f"{fp['structures']['width_px']['p10']}-{fp['structures']['width_px']['p90']} px (10th-90th percentile)",
             f"recipe ({plan['dims']:g}D" + (f", time budget {plan['time_budget_min']:g} min)" if plan.get("time_budget_min")
                                            else ")")]
    for name, choice in plan["choices"].items():
        value = choice["value"]
        shown = "x".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        if value is None and name == "epochs":
            shown = "(set when training starts)"
        lines.append(f"  {name} = {shown}: {choice['reason']}")
    for name, value in plan.get("estimate", {}).items():
        lines.append(f"  (estimate) {name} = {value}")
    return "\n".join(lines)
