"""``medseg-course train`` for 2D models: a data set in, a run folder out.

Cases become normalised slices (``samples.training_cases``); whole slices are fitted into
the model's input or native-resolution patches are sampled (``samples.choose_mode``); a
U-Net (or the article's encoder-decoder) trains with ``training.fit`` (checkpoints, exact
resume, time budget, Ctrl-C), and the validation cases are scored slice by slice as
``medseg-course predict`` would (``evaluation.validate``). ``volume_runs.train_run`` is the
3D counterpart.
"""

from __future__ import annotations

#: The 2D recipe ``medseg-course train`` uses unless told otherwise: depth 3, 8 filters,
#: batch 8 were the fastest to a given Dice in 15-60 s runs on 2 cores
#: (benchmarks/recipes.py, benchmarks/time_to_dice.py; figures in benchmarks/README.md).
DEFAULTS_2D = {"depth": 3, "base_filters": 8, "batch_size": 8, "epochs": 15, "val_fraction": 0.2, "test_fraction": 0.0}

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
        environment, evaluation, losses, models, run_folder, samples, training)
    from medseg_course.volumes import neighbour_slices  # noqa: PLC0415

    s = {**settings, **{k: v for k, v in DEFAULTS_2D.items() if settings.get(k) is None}}
    info_env = environment.setup(seed=s["seed"], threads=s["threads"])
    start = time.perf_counter()
    train_cases, val_cases, test_cases, source_info = samples.training_cases(
        s["data"], s["target"], s["num_images"], s["image_size"], s["val_fraction"], s["layout"], s["invert_masks"],
        s["allow_unmatched"], s["seed"], s["test_fraction"])
    all_cases = train_cases + val_cases + test_cases
    context = int(s.get("context") or 0)
    if context:  # 2.5D: each slice with its neighbours as channels
        flat = [c.name for c in all_cases if len(c.slices) == 1]
        if flat:
            raise ValueError(f"{flat[0]}: a 2D image; --dims 2.5 stacks neighbouring slices of volumes. Use --dims 2.")
        for case in all_cases:
            case.slices = neighbour_slices(case.slices, context)
    num_labels = int(max(int(c.masks.max()) for c in all_cases)) + 1
    num_classes = 1 if num_labels <= 2 else num_labels
    channels = max(c.slices.shape[-1] for c in all_cases)
    mode = s["mode"] if s["mode"] != "auto" else samples.choose_mode([c.slices for c in all_cases], s["image_size"])
    size = s["image_size"] if mode == "resize" else s["patch_size"]

    def arrays(cases, seed):
        return samples.training_arrays([c.slices for c in cases], [c.masks for c in cases], mode, size, num_classes,
                                       channels, s["patches_per_image"], seed)

    x_train, y_train = arrays(train_cases, s["seed"])
    x_val, y_val = arrays(val_cases, s["seed"] + 1)
    if s["precision"] == "bfloat16" and not environment.bf16_hardware():
        report("warning: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); bfloat16 is emulated "
               "and trains slower than float32 here. Use --precision float32.")
    model = models.build_model(s["model"], (size, size, channels), num_classes, s["depth"], s["base_filters"],
                               s["width"], s["precision"], s.get("bn_momentum") or 0.5)
    if s["loss"] not in losses.LOSS_NAMES:
        raise ValueError(f"unknown --loss {s['loss']!r}; choose one of {', '.join(losses.LOSS_NAMES)}.")
    if num_classes > 1 and s["loss"] in ("bce", "weighted_bce"):
        raise ValueError(f"--loss {s['loss']} is for binary masks; these masks have {num_classes} labels. Use dice_ce.")
    training.compile_model(model, loss=s["loss"], learning_rate=s["learning_rate"])
    augment = training.Augmentation() if s["augment"] else None
    train_ds = training.make_dataset(x_train, y_train, batch_size=s["batch_size"], augment=augment, seed=s["seed"])
    val_ds = training.make_dataset(x_val, y_val, batch_size=s["batch_size"], shuffle=False)
    config = {
        "command": "train", "data": source_info, "mode": mode, "input_size": size, "channels": int(channels),
        "num_classes": num_classes, "labels": list(range(num_labels)),
        **({"dims": 2.5, "context": context} if context else {}),
        **{k: s[k] for k in ("model", "depth", "base_filters", "width", "loss", "epochs", "batch_size",
                             "learning_rate", "augment", "precision", "seed", "threads")},
        "bn_momentum": s.get("bn_momentum") or 0.5,
        "time_budget_min": s["time_budget_min"],
        "normalisation": "per image/volume: clip to 0.5-99.5 percentiles, rescale to [0, 1]",
        "split": {"train": [c.name for c in train_cases], "val": [c.name for c in val_cases],
                  **({"test": [c.name for c in test_cases]} if test_cases else {})},
        "training_samples": int(len(x_train)), "validation_samples": int(len(x_val)),
        "device": info_env.device, "versions": info_env.versions,
    }
    run_folder.start_run(out, config, resume, overwrite)
    report(f"training {model.name} ({model.count_params():,} parameters) on {len(x_train)} {mode} samples "
           f"of {size}x{size}x{channels}, validating on {len(x_val)}"
           f"{f', testing on {len(test_cases)} cases' if test_cases else ''}; run folder {out}")
    budget = None if s["time_budget_min"] is None else s["time_budget_min"] * 60
    try:
        training.fit(model, train_ds, val_ds, epochs=s["epochs"], patience=s["patience"], out_dir=out,
                     overwrite=overwrite, verbose=s.get("verbose", 2), time_budget_s=budget, resume=resume)
    except KeyboardInterrupt:
        training.save_model(model, out / run_folder.MODEL_NAME)  # fit restored the best weights so far
        raise
    training.save_model(model, out / run_folder.MODEL_NAME)
    train_seconds = time.perf_counter() - start
    metrics = evaluation.validate(model, config, val_cases, out / "overlays", progress)
    if test_cases:  # scored once, after the validation cases chose the checkpoint
        test = evaluation.validate(model, config, test_cases, progress=progress)
        metrics["test"] = {**test, "per_label": evaluation.per_label(test["per_case"])}
    metrics["train_seconds"] = round(train_seconds, 1)
    metrics["epochs_run"] = run_folder.epochs_logged(out)
    run_folder.write_json(out / "metrics.json", metrics)
    return metrics
