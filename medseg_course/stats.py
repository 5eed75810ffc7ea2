"""Comparisons that hold on another machine: paired differences over seeds, with intervals.

One training run is one draw: another seed, another data draw, or another CPU's rounding
trains a different model, and a difference of a few hundredths between two recipes can flip
sign between draws. A comparison is therefore made *paired*: each seed trains both recipes
(same initial weights, same data order, same test set), and the per-seed differences are
summarised by their mean and a confidence interval. A ranking is stated only when the
interval excludes zero; otherwise the honest result is "no detectable difference" at this
number of seeds, which is not "no effect".

Examples
--------
>>> import medseg_course as mc
>>> gains = [0.12, 0.09, 0.16, 0.11, 0.13, 0.10, 0.14, 0.12]
>>> iv = mc.stats.paired_interval(gains)
>>> iv.verdict, iv.n
('higher', 8)
>>> str(iv)
'+0.121 [+0.103, +0.140] (n = 8)'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from medseg_course.utils import check_array, check_probability

__all__ = ["Interval", "agreement", "paired_interval", "bootstrap_interval", "compare"]


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` paired differences and its confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    n: int
    sd: float
    confidence: float = 0.95
    method: str = "t"

    @property
    def verdict(self):
        """``"higher"`` if the interval lies above zero, ``"lower"`` below, else
        ``"no detectable difference"``."""
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        return "no detectable difference"

    def to_dict(self):
        return {**asdict(self), "verdict": self.verdict}

    def __str__(self):
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] (n = {self.n})"


def _differences(diffs):
    d = check_array(diffs, "diffs", ndim=1, allow_nan=True).astype("float64")
    d = d[~np.isnan(d)]
    if d.size < 2:
        raise ValueError(f"an interval needs at least 2 paired differences, got {d.size}: "
                         "run more seeds")
    return d


def paired_interval(diffs, confidence=0.95):
    """Student-t confidence interval of the mean of paired differences (NaNs dropped).

    Parameters
    ----------
    diffs : 1D array-like
        One difference per seed (recipe minus baseline, trained under the same seed).
    confidence : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    Interval
    """
    from scipy import stats  # noqa: PLC0415

    check_probability(confidence, "confidence", inclusive=False)
    d = _differences(diffs)
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, d.size - 1)) * sd / np.sqrt(d.size)
    mean = float(d.mean())
    return Interval(mean, float(mean - half), float(mean + half), int(d.size), sd, confidence, "t")


def bootstrap_interval(diffs, confidence=0.95, resamples=10_000, seed=0):
    """Percentile-bootstrap interval of the mean of paired differences (NaNs dropped).

    Makes no normality assumption, but at 8-10 seeds it is slightly too narrow; the
    t interval is the default for that reason.
    """
    check_probability(confidence, "confidence", inclusive=False)
    d = _differences(diffs)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Interval(float(d.mean()), float(low), float(high), int(d.size), float(d.std(ddof=1)),
                    confidence, "bootstrap")


def compare(runs, value, baseline, by="recipe", pair="seed", confidence=0.95):
    """Paired comparison of every group in ``runs`` against ``baseline``.

    Parameters
    ----------
    runs : pandas.DataFrame
        One row per run, with columns ``by`` (the recipe), ``pair`` (the seed shared by
        the runs that are compared) and ``value`` (the score).
    value, baseline, by, pair : str
        Column names, and the ``by`` value the others are compared with.

    Returns
    -------
    pandas.DataFrame
        One row per other group: mean difference, interval, its sd, ``n`` and the verdict.
    """
    import pandas as pd  # noqa: PLC0415

    for column in (value, by, pair):
        if column not in runs.columns:
            raise ValueError(f"runs has no column {column!r}; its columns are {list(runs.columns)}")
    wide = runs.pivot(index=pair, columns=by, values=value)
    if baseline not in wide.columns:
        raise ValueError(f"{baseline!r} is not among the {by!r} values {list(wide.columns)}")
    rows = {}
    for group in wide.columns.drop(baseline):
        iv = paired_interval((wide[group] - wide[baseline]).to_numpy(), confidence)
        rows[group] = {"difference": iv.mean, "low": iv.low, "high": iv.high, "sd": iv.sd,
                       "n": iv.n, "verdict": iv.verdict}
    return pd.DataFrame(rows).T.astype({"difference": float, "low": float, "high": float,
                                         "sd": float, "n": int})


def agreement(value, reference, n_live=1, alpha=0.001, bounds=(0.0, 1.0)):
    """Whether a live result is another draw of a committed experiment.

    ``value`` is the mean of ``n_live`` fresh runs (the reader's machine); ``reference`` the
    committed runs' per-seed values, from seeds other than the live ones. The live mean should
    fall in the t prediction interval ``mean +- t(1 - alpha/2, n - 1) * sd * sqrt(1/n_live +
    1/n)``, which a run of the same experiment leaves with probability ``alpha`` (for roughly
    normal per-seed values; bimodal ones make the interval wide, not wrong).

    Returns
    -------
    str
        ``"agrees"`` or ``"disagrees"``; ``"uninformative"`` when the interval covers every
        value between ``bounds`` (a Dice lies in [0, 1]), so that no result could disagree:
        seeds that vary this much cannot be checked one run at a time.
    """
    from scipy import stats  # noqa: PLC0415

    check_probability(alpha, "alpha", inclusive=False)
    ref = _differences(reference)
    half = float(stats.t.ppf(1 - alpha / 2, ref.size - 1)) * float(ref.std(ddof=1)) * np.sqrt(1 / n_live + 1 / ref.size)
    low, high = float(ref.mean()) - half, float(ref.mean()) + half
    if bounds is not None and low <= bounds[0] and high >= bounds[1]:
        return "uninformative"
    return "agrees" if low <= float(value) <= high else "disagrees"
