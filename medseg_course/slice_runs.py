"""``medseg-course train`` for 2D models: a data set in, a run folder out.

Cases become normalised slices (``samples.training_cases``); whole slices are fitted into
the model's input or native-resolution patches are sampled, as the plan says (``planning``); a
U-Net (or the article's encoder-decoder) trains with ``training.fit`` (checkpoints, exact
resume, time budget, Ctrl-C), and the validation cases are scored slice by slice as
``medseg-course predict`` would (``evaluation.validate``). ``volume_runs.train_run`` is the
3D counterpart.
"""

from __future__ import annotations

#: What a 2D run holds out unless told otherwise; the recipe itself comes from the plan
#: (``planning.plan_2d``: input size or patches, depth, width, batch, augmentation, epochs).
DEFAULTS_2D = {"val_fraction": 0.2, "test_fraction": 0.0}

__all__ = ["DEFAULTS_2D", "train_run"]


def train_run(settings, out, resume=False, overwrite=False, report=print, progress=None):
    """Train a 2D model as ``medseg-course train`` does and fill the run folder ``out``.

    Parameters
    ----------
    settings : dict
        The command line's options by name (``data``, ``target``, ``num_images``,
        ``image_size``, ``mode``, ``patch_size``, ``model``, ``loss``, ``precision``, ...);
        missing or None entries of ``DEFAULTS_2D`` take their defaults. ``context`` > 0
        trains 2.5D: each slice with that many neighbours on either side as channels
        (``volumes.neighbour_slices``). ``test_fraction`` > 0 holds out test cases (by
        subject where the data name one), scored once after training as ``test``.
    out : Path
        The run folder (checked by ``run_folder.check_run_folder`` beforehand).
    report : callable
        Receives one-line messages (what is trained; warnings).
    progress : callable, optional
        Wraps the validation cases (a progress bar).

    Returns
    -------
    dict
        ``metrics.json``'s content: the validation cases' rows and summary
        (``evaluation.validate``), with ``test`` (rows, summary, mean Dice per label) where
        test cases were held out, ``train_seconds`` and ``epochs_run``.

    Raises
    ------
    KeyboardInterrupt
        After Ctrl-C, with the best model so far saved as ``out/model.keras``.
    """
    import time  # noqa: PLC0415

    from medseg_course import (  # noqa: PLC0415
        environment, evaluation, fingerprint, losses, models, planning, run_folder, samples, training)
    from medseg_course.preprocessing import normalise_for  # noqa: PLC0415
    from medseg_course.volumes import neighbour_slices  # noqa: PLC0415

    s = {**settings, **{k: v for k, v in DEFAULTS_2D.items() if settings.get(k) is None}}
    saved = s.get("plan")
    if saved and not s.get("image_size") and "image_size" in saved["choices"]:  # built-in data: drawn at that size
        s["image_size"] = saved["choices"]["image_size"]["value"]
    info_env = environment.setup(seed=s["seed"], threads=s["threads"])
    start = time.perf_counter()
    train_cases, val_cases, test_cases, source_info = samples.training_cases(
        s["data"], s["target"], s["num_images"], s.get("image_size") or 128, s["val_fraction"], s["layout"],
        s["invert_masks"], s["allow_unmatched"], s["seed"], s["test_fraction"])
    all_cases = train_cases + val_cases + test_cases
    context = int(s.get("context") or 0)
    seen = train_cases + val_cases  # the test cases choose nothing
    if saved:  # a saved plan: it must describe data like these; options given with it still win
        plan = saved
        planning.check_plan_fits(plan, fingerprint.fingerprint(seen, s["data"]), s["data"])
        planning.apply_overrides(plan, s)
    else:
        plan = planning.plan_2d_for(seen, s, 2.5 if context else 2)
    p = planning.settings_from_plan(plan)
    scheme = p.get("normalisation") or {"scheme": "percentiles"}
    if scheme.get("scheme") != "percentiles":  # the cases came percentile-normalised: redo from the files
        for case in all_cases:
            case.slices = normalise_for(case.image.to_slices(), scheme)
    if context:  # 2.5D: each slice with its neighbours as channels
        flat = [c.name for c in all_cases if len(c.slices) == 1]
        if flat:
            raise ValueError(f"{flat[0]}: a 2D image; --dims 2.5 stacks neighbouring slices of volumes. Use --dims 2.")
        for case in all_cases:
            case.slices = neighbour_slices(case.slices, context)
    num_labels = int(max(int(c.masks.max()) for c in seen)) + 1
    num_classes = 1 if num_labels <= 2 else num_labels
    channels = max(c.slices.shape[-1] for c in seen)
    mode = p["mode"]
    key, other = ("image_size", "patch_size") if mode == "resize" else ("patch_size", "image_size")
    if p.get(key) is None:  # --mode forced against the plan: the side given, else 128
        given = s.get(key)
        plan["choices"][key] = {"value": given or 128, "by": "you" if given else "plan",
                                "reason": f"--mode {mode} given; side {'given' if given else '128 by default'}"}
        plan["choices"].pop(other, None)
        p[key] = given or 128
    size = p[key]
    if mode == "patch" and p.get("patches_per_image") is None:
        p["patches_per_image"] = s.get("patches_per_image") or 16
        plan["choices"]["patches_per_image"] = {"value": p["patches_per_image"], "by": "plan", "reason": "16 per image"}

    def arrays(cases, seed):
        return samples.training_arrays([c.slices for c in cases], [c.masks for c in cases], mode, size, num_classes,
                                       channels, p.get("patches_per_image"), seed)

    x_train, y_train = arrays(train_cases, s["seed"])
    x_val, y_val = arrays(val_cases, s["seed"] + 1)
    if s["precision"] == "bfloat16" and not environment.bf16_hardware():
        report("warning: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); bfloat16 is emulated "
               "and trains slower than float32 here. Use --precision float32.")
    if p["loss"] not in losses.LOSS_NAMES:
        raise ValueError(f"unknown --loss {p['loss']!r}; choose one of {', '.join(losses.LOSS_NAMES)}.")
    if num_classes > 1 and p["loss"] in ("bce", "weighted_bce"):
        raise ValueError(f"--loss {p['loss']} is for binary masks; these masks have {num_classes} labels. Use dice_ce.")

    model = models.build_model(s["model"], (size, size, channels), num_classes, p["depth"], p["base_filters"],
                               s["width"], s["precision"], s.get("bn_momentum") or 0.5)
    training.compile_model(model, loss=p["loss"], learning_rate=p["learning_rate"])
    arrays_bytes = x_train.nbytes + x_val.nbytes + y_train.nbytes + y_val.nbytes
    cases_bytes = sum(c.slices.nbytes + c.masks.nbytes for c in all_cases)  # loaded already
    limit = s.get("memory_limit_gb") or planning.MEMORY_LIMIT_GB
    memory = planning.estimate_memory_gb(model, p["batch_size"], arrays_bytes)
    while memory > limit and plan["choices"]["batch_size"]["by"] == "plan" and p["batch_size"] > 1:
        p["batch_size"] //= 2
        memory = planning.estimate_memory_gb(model, p["batch_size"], arrays_bytes)
        plan["choices"]["batch_size"] = {"value": p["batch_size"], "by": "plan", "reason":
                                         f"halved until the memory estimate fits {limit:g} GB"}
    if memory > limit:
        raise ValueError(f"this recipe needs about {memory:g} GB besides the loaded images (estimate), over the "
                         f"{limit:g} GB limit (--memory-limit); use a smaller --batch-size, --image-size or "
                         "--patch-size, or --patches-per-image.")
    plan["estimate"] = {"peak_memory_gb": round(memory + cases_bytes / 1e9, 2), "recipe_memory_gb": memory}
    if p["epochs"] is None and not s["time_budget_min"]:  # a plan made for a budget, trained without one
        p["epochs"] = 15
        plan["choices"]["epochs"] = {"value": 15, "by": "plan", "reason": "15: no time budget to fit"}
    if p["epochs"] is None:  # a time budget: measure a few steps, then plan whole epochs
        step_s, first_s = training.time_steps(model, x_train, y_train, p["batch_size"])
        steps = -(-len(x_train) // p["batch_size"])
        validation_s = 0.35 * step_s * -(-len(x_val) // p["batch_size"]) + planning.epoch_overhead_s(model)
        p["epochs"] = planning.epochs_for_budget(s["time_budget_min"] * 60, step_s, steps, first_s, validation_s)
        plan["choices"]["epochs"]["value"] = p["epochs"]
        plan["estimate"].update(seconds_per_step=round(step_s, 3), seconds_per_epoch=round(steps * step_s +
                                                                                          validation_s, 1))
        training.reinitialize(model, s["seed"])  # the seed's initial weights, as without the probe
    augment = training.Augmentation() if p["augment"] else None
    train_ds = training.make_dataset(x_train, y_train, batch_size=p["batch_size"], augment=augment, seed=s["seed"])
    val_ds = training.make_dataset(x_val, y_val, batch_size=p["batch_size"], shuffle=False)
    config = {
        "command": "train", "data": source_info, "mode": mode, "input_size": int(size), "channels": int(channels),
        "num_classes": num_classes, "labels": list(range(num_labels)),
        **({"dims": 2.5, "context": context} if context else {}),
        **{k: s[k] for k in ("model", "width", "precision", "seed", "threads")},
        **{k: p[k] for k in ("depth", "base_filters", "loss", "epochs", "batch_size", "learning_rate", "augment")},
        **({"patches_per_image": p["patches_per_image"]} if mode == "patch" else {}),
        "bn_momentum": s.get("bn_momentum") or 0.5,
        "time_budget_min": s["time_budget_min"],
        "normalisation": ("per image/volume: clip to 0.5-99.5 percentiles, rescale to [0, 1]"
                          if scheme.get("scheme") == "percentiles" else
                          f"one window for all: clip to {scheme['low']:g}..{scheme['high']:g}, subtract "
                          f"{scheme['mean']:g}, divide by {scheme['std']:g}"),
        "normalisation_scheme": scheme,
        "split": {"train": [c.name for c in train_cases], "val": [c.name for c in val_cases],
                  **({"test": [c.name for c in test_cases]} if test_cases else {})},
        "training_samples": int(len(x_train)), "validation_samples": int(len(x_val)),
        "device": info_env.device, "versions": info_env.versions,
    }
    run_folder.start_run(out, config, resume, overwrite)
    run_folder.write_json(out / planning.PLAN_NAME, plan)
    report(f"training {model.name} ({model.count_params():,} parameters) on {len(x_train)} {mode} samples "
           f"of {size}x{size}x{channels} for {p['epochs']} epoch(s), validating on {len(x_val)}"
           f"{f', testing on {len(test_cases)} cases' if test_cases else ''}; run folder {out}")
    budget = None if s["time_budget_min"] is None else s["time_budget_min"] * 60
    try:
        training.fit(model, train_ds, val_ds, epochs=p["epochs"], patience=s["patience"], out_dir=out,
                     overwrite=overwrite, verbose=s.get("verbose", 2), time_budget_s=budget, resume=resume)
    except KeyboardInterrupt:
        training.save_model(model, out / run_folder.MODEL_NAME)  # fit restored the best weights so far
        raise
    training.save_model(model, out / run_folder.MODEL_NAME)
    train_seconds = time.perf_counter() - start
    epochs_run = run_folder.epochs_logged(out)
    if epochs_run < p["epochs"]:  # the time budget (or early stopping) ended training first
        why = "early stopping" if s["patience"] and (not budget or train_seconds < budget) else "the time budget"
        plan["choices"]["epochs"] = {"value": epochs_run, "by": "plan", "reason": f"{p['epochs']} planned or given; "
                                     f"{why} ended training after {epochs_run}, so a rerun of this plan trains "
                                     f"{epochs_run}"}
    smallest = plan.get("fingerprint", {}).get("structures", {}).get("area_px", {}).get("p5")
    chosen, candidates = evaluation.choose_postprocessing(model, config, val_cases,
                                                          min_size=max(2, round(smallest / 2)) if smallest else None)
    config["postprocess"] = chosen
    plan["postprocess"] = {"value": chosen, "validation_dice": candidates, "reason": (
        f"the clean-up with the best validation Dice if it adds {evaluation.MIN_POSTPROCESS_GAIN}, else none "
        "(chosen on validation cases only)" if num_classes == 1 else "multi-class labels (arg-max): no clean-up")}
    run_folder.write_json(out / run_folder.CONFIG_NAME, config)
    run_folder.write_json(out / planning.PLAN_NAME, plan)
    metrics = evaluation.validate(model, config, val_cases, out / "overlays", progress)
    if test_cases:  # scored once, after the validation cases chose the checkpoint and the clean-up
        test = evaluation.validate(model, config, test_cases, progress=progress)
        metrics["test"] = {**test, "per_label": evaluation.per_label(test["per_case"])}
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["epochs_run"] = epochs_run
    run_folder.write_json(out / "metrics.json", metrics)
    return metrics
