"""Defect realism: whether synthetic defects are as large as real ones, whether a classifier trained on synthetic
slices finds real defects of every pattern and severity, and, for a model with defect axes (``spectgan.lesions``),
whether the severity and territory a request names show in its slices.

The size of a defect is the hemispheric asymmetry it leaves: |AI| = |100 (L - R) / ((L + R) / 2)| in % and
LR = L / R (``spectgan.geometry.roi`` through ``statistics.measure``). A slice's severity is the fractional CBF
reduction of its defect's territory, a bilateral defect's that of the more severe side (``SliceSet.severities``).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy import stats

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.evaluation.data import SliceSet, class_indices
from spectgan.evaluation.features import SliceClassifier, classify, train_classifier
from spectgan.evaluation.statistics import MeasuredSlices, kolmogorov_smirnov_p
from spectgan.lesions import SEVERITY_DECIMALS, DefectAxes

PERCENTILES = (10, 50, 90)  # of |AI| and LR
MILD_AI = 5.0  # %: a slice with |AI| below this shows a mild defect (or none)
MODERATE_AI = 8.0  # %: below this, a unilateral defect is mild or moderate (the diagnostics' mild-defect probe)
SEVERITY_EDGES = (0.25, 0.35)  # inner edges of the severity bins; the outer bins are open
SEVERITY_BINS = ("< 0.25", "0.25-0.35", ">= 0.35")
ALL = "all"  # the group of every slice of a pattern, whatever its severity
TERRITORY_HEAD = "territory"


def severity_bins(severities: np.ndarray) -> np.ndarray:
    """The index into SEVERITY_BINS of each severity [N] (fractional CBF reduction); -1 where it is NaN."""
    severities = np.asarray(severities, dtype=np.float64)
    return np.where(np.isnan(severities), -1, np.digitize(severities, SEVERITY_EDGES))


def percentiles(values: np.ndarray) -> dict[str, float]:
    """The PERCENTILES of the finite values as ``{"q10": .., "q50": .., "q90": ..}`` (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    return {f"q{q}": float(np.percentile(finite, q)) if len(finite) else math.nan for q in PERCENTILES}


def asymmetry_by_pattern(real: MeasuredSlices, synthetic: MeasuredSlices) -> dict[str, dict]:
    """Per pattern with measured slices on both sides: their numbers, the percentiles of |AI| (%) and of LR, the
    share of slices with |AI| < MILD_AI (the mild defects), real and synthetic, and the two-sided two-sample
    Kolmogorov-Smirnov P and distance D of |AI| (``ks_p_abs_ai``, ``ks_d_abs_ai``)."""
    result = {}
    for pattern in Pattern:
        groups = {kind: measured.take(measured.slices.patterns == pattern.value)
                  for kind, measured in (("real", real), ("synthetic", synthetic))}
        abs_ai = {kind: np.abs(group.values["AI"][np.isfinite(group.values["AI"])]) for kind, group in groups.items()}
        if not all(len(values) for values in abs_ai.values()):
            continue
        result[pattern.value] = {
            "n": {kind: len(values) for kind, values in abs_ai.items()},
            "abs_ai": {kind: percentiles(values) for kind, values in abs_ai.items()},
            "lr": {kind: percentiles(group.values["LR"]) for kind, group in groups.items()},
            "mild_share": {kind: float(np.mean(values < MILD_AI)) for kind, values in abs_ai.items()},
            "ks_p_abs_ai": kolmogorov_smirnov_p(abs_ai["synthetic"], abs_ai["real"]),
            "ks_d_abs_ai": float(stats.ks_2samp(abs_ai["synthetic"], abs_ai["real"]).statistic)}
    return result


def pattern_groups(slices: SliceSet) -> dict[str, dict[str, np.ndarray]]:
    """Boolean masks [N] of the slices of each pattern present: ``ALL`` and, for a defect pattern, each severity
    bin that has slices (a slice of unknown severity counts under ``ALL`` only)."""
    bins = severity_bins(slices.severities())
    groups: dict[str, dict[str, np.ndarray]] = {}
    for pattern in Pattern:
        in_pattern = slices.patterns == pattern.value
        if not in_pattern.any():
            continue
        groups[pattern.value] = {ALL: in_pattern}
        if pattern is not Pattern.NORMAL:
            groups[pattern.value].update({label: in_pattern & (bins == index)
                                          for index, label in enumerate(SEVERITY_BINS)
                                          if (in_pattern & (bins == index)).any()})
    return groups


def accuracy_breakdown(predicted: Mapping[str, np.ndarray], slices: SliceSet) -> dict[str, dict[str, dict]]:
    """Pattern accuracy of each named prediction (pattern class indices [N], in the order of ``Pattern``) on
    ``slices``, per group of ``pattern_groups``: ``{pattern: {group: {"n": slices, name: accuracy, ...}}}``."""
    truth = class_indices(slices.conditions)["pattern"]
    return {pattern: {group: {"n": int(mask.sum()),
                              **{name: float(np.mean(values[mask] == truth[mask]))
                                 for name, values in predicted.items()}}
                      for group, mask in groups.items()}
            for pattern, groups in pattern_groups(slices).items()}


def control_grid(axes: DefectAxes, levels: Sequence[Level], severities: int, repeats: int) -> list[Condition]:
    """Unilateral requests with complete lesions: at each level, every territory the model knows there x side x
    ``severities`` severities evenly across its trained range, each ``repeats`` times (each a draw of its own)."""
    low, high = axes.severity_range
    grid = np.round(np.linspace(low, high, severities), SEVERITY_DECIMALS)
    return [Condition(level, Pattern.UNILATERAL, side, (Lesion(side, territory, float(severity)),))
            for level in levels for territory in axes.territories.get(level.value, ()) for side in Side
            for severity in grid for _ in range(repeats)]


def _finite_pairs(severities: np.ndarray, abs_ai: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(severities) & np.isfinite(abs_ai)
    return severities[keep], abs_ai[keep]


def linear_fit(severities: np.ndarray, abs_ai: np.ndarray) -> dict[str, float]:
    """The least-squares line |AI| = slope x severity + offset (``scipy.stats.linregress``) over the finite pairs of
    severities [N] (fractions) and |AI| [N] (%): ``slope`` in % per unit of severity, ``offset`` in %, ``n`` pairs;
    NaN slope and offset with fewer than two distinct severities."""
    x, y = _finite_pairs(severities, abs_ai)
    if len(np.unique(x)) < 2:
        return {"slope": math.nan, "offset": math.nan, "n": len(x)}
    fit = stats.linregress(x, y)
    return {"slope": float(fit.slope), "offset": float(fit.intercept), "n": len(x)}


def spearman(severities: np.ndarray, abs_ai: np.ndarray) -> dict[str, float]:
    """Spearman's rank correlation of severities [N] and |AI| [N] over the finite pairs (``scipy.stats.spearmanr``):
    ``rho``, its two-sided ``p`` and ``n``; NaN with fewer than three pairs or a constant side."""
    x, y = _finite_pairs(severities, abs_ai)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": math.nan, "p": math.nan, "n": len(x)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        result = stats.spearmanr(x, y)
    return {"rho": float(result.statistic), "p": float(result.pvalue), "n": len(x)}


@dataclass(frozen=True)
class SeverityControl:
    """Severity (fraction) and |AI| (%) of the real unilateral test slices ``[N]`` and of the synthetic slices made
    for requested severities ``[M]``."""

    real_severity: np.ndarray
    real_abs_ai: np.ndarray
    synthetic_severity: np.ndarray
    synthetic_abs_ai: np.ndarray

    def summary(self) -> dict:
        """Spearman's rho of requested severity and measured |AI| (and the real slices' own), the linear fits of |AI|
        on severity of both, and per severity bin of the requests their number, mean severity and mean |AI| against
        the real fit's prediction at that severity (``gap`` = synthetic - real fit, in points of |AI|)."""
        real_fit = linear_fit(self.real_severity, self.real_abs_ai)
        bins = severity_bins(self.synthetic_severity)
        per_bin = {}
        for index, label in enumerate(SEVERITY_BINS):
            mask = (bins == index) & np.isfinite(self.synthetic_abs_ai)
            if mask.any():
                severity = float(self.synthetic_severity[mask].mean())
                abs_ai = float(self.synthetic_abs_ai[mask].mean())
                predicted = real_fit["slope"] * severity + real_fit["offset"]
                per_bin[label] = {"n": int(mask.sum()), "mean_severity": severity, "mean_abs_ai": abs_ai,
                                  "real_fit": predicted, "gap": abs_ai - predicted}
        return {"spearman": spearman(self.synthetic_severity, self.synthetic_abs_ai),
                "real_spearman": spearman(self.real_severity, self.real_abs_ai),
                "synthetic_fit": linear_fit(self.synthetic_severity, self.synthetic_abs_ai), "real_fit": real_fit,
                "bins": per_bin}


@dataclass(frozen=True)
class TerritoryClassifier:
    """A classifier of the territory of unilateral defects, trained on real slices; at a slice's level it chooses
    among the territories its training slices have there."""

    model: SliceClassifier
    names: tuple[str, ...]  # class index -> territory
    at_level: Mapping[str, tuple[str, ...]]  # level -> the territories its training slices have there

    def accuracy(self, inputs: torch.Tensor, slices: SliceSet) -> dict:
        """``accuracy`` over the ``n`` unilateral slices of ``slices`` (inputs [N, 1, H, W]) whose territory it knows
        at their level (NaN with none)."""
        territories, levels = slices.territories(), slices.levels
        scored = np.array([territory in self.at_level.get(level, ())
                           for territory, level in zip(territories, levels)], dtype=bool)
        if not scored.any():
            return {"accuracy": math.nan, "n": 0}
        logits = classify(self.model, inputs[torch.from_numpy(scored)])[1][TERRITORY_HEAD]
        allowed = torch.tensor([[name in self.at_level[level] for name in self.names] for level in levels[scored]])
        predicted = logits.masked_fill(~allowed, -math.inf).argmax(dim=1).numpy()
        truth = np.array([self.names.index(territory) for territory, kept in zip(territories, scored) if kept])
        return {"accuracy": float(np.mean(predicted == truth)), "n": int(scored.sum())}


def train_territory_classifier(inputs: torch.Tensor, slices: SliceSet, steps: int, seed: int
                               ) -> TerritoryClassifier | None:
    """A territory classifier trained (``features.train_classifier``) on the unilateral slices of ``slices`` whose
    territory is known (inputs [N, 1, H, W]); None when there are none."""
    territories = slices.territories()
    known = np.array([territory is not None for territory in territories], dtype=bool)
    if not known.any():
        return None
    names = tuple(sorted({territory for territory in territories if territory is not None}))
    at_level: dict[str, set[str]] = {}
    for territory, level in zip(territories, slices.levels):
        if territory is not None:
            at_level.setdefault(level, set()).add(territory)
    labels = np.array([names.index(territory) for territory in territories if territory is not None])
    model = train_classifier(inputs[torch.from_numpy(known)], {TERRITORY_HEAD: labels}, {TERRITORY_HEAD: len(names)},
                             steps, seed)
    return TerritoryClassifier(model, names, {level: tuple(sorted(found)) for level, found in at_level.items()})
