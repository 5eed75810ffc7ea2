"""The plan of a ``medseg-course plan`` or ``train`` command, from its settings.

The cases are loaded and split exactly as ``train`` would (``samples.training_cases`` in
2D, ``volume_runs.prepared_split`` in 3D), the training and validation cases are
fingerprinted (``fingerprint``; test cases choose nothing) and the rules of ``planning``
turn the fingerprint into the recipe; options given on the command line override it.
"""

from __future__ import annotations

from medseg_course import planning, samples, volume_runs
from medseg_course.slice_runs import DEFAULTS_2D

__all__ = ["plan_for"]


def plan_for(settings, dims):
    """The plan of ``medseg-course plan``/``train`` for ``settings`` (the command line's
    options by name: ``data``, split fractions, ``seed``, ``time_budget_min``, and any
    recipe choice given, which overrides the plan's): the cases are loaded and split as
    ``train`` splits them, and only the training and validation cases are fingerprinted."""
    if dims == 3:
        train, val, _, _, _ = volume_runs.prepared_split(settings)
        return planning.apply_overrides(volume_runs.plan_volumes(train, val, settings), settings)
    s = {**settings, **{k: v for k, v in DEFAULTS_2D.items() if settings.get(k) is None}}
    train, val, _, _ = samples.training_cases(
        s["data"], s.get("target") or "organ", s.get("num_images") or 160, s.get("image_size") or 128,
        s["val_fraction"], s.get("layout") or "auto", s.get("invert_masks"), s.get("allow_unmatched"),
        s.get("seed") or 0, s["test_fraction"])
    return planning.plan_2d_for(train + val, s, dims)
