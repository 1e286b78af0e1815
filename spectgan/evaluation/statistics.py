"""The paper's comparison of real and synthetic slices (Werner et al. 2022).

Mean counts (MC), the left/right hemisphere ratio (LR) and the asymmetry index (AI %) of every slice come from
``spectgan.geometry.roi`` (the template midline of canonical slices). Real and synthetic MC and LR are compared by the
two-sided Mann-Whitney U test (Welch's t and Kolmogorov-Smirnov as secondary tests) with effect sizes, per level x
pattern cell, pooled per pattern (as in the paper) and per level.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from spectgan.conditions import Level, Pattern
from spectgan.errors import InvalidImageError
from spectgan.evaluation.data import SliceSet
from spectgan.geometry.roi import TEMPLATE_MIDLINE, hemisphere_stats
from spectgan.geometry.template import canonical_image

MEASURES = ("MC", "LR")  # the paper's measures
MEASURED = MEASURES + ("AI",)  # what ``measure`` gives of every slice (AI: ``spectgan.evaluation.defects``)
POOLED = "all"  # the level or pattern of a pooled row
SCOPES = ("pattern", "level", "cell")  # pooled per pattern (the paper's table), per level, per level x pattern cell


@dataclass(frozen=True)
class MeasuredSlices:
    """A slice set and the MC (counts), LR and AI (%) of each slice (NaN where a slice has no measurable brain)."""

    slices: SliceSet
    values: dict[str, np.ndarray]

    def group(self, level: str, pattern: str) -> np.ndarray:
        """Boolean mask of the slices of a level and a pattern; ``POOLED`` matches every level or pattern."""
        mask = np.ones(len(self.slices), dtype=bool)
        if level != POOLED:
            mask &= self.slices.levels == level
        if pattern != POOLED:
            mask &= self.slices.patterns == pattern
        return mask

    def take(self, mask: np.ndarray) -> "MeasuredSlices":
        return MeasuredSlices(self.slices.take(mask), {name: values[mask] for name, values in self.values.items()})


def measure(slices: SliceSet) -> MeasuredSlices:
    """MC, LR and AI of every slice of a set."""
    values = {name: np.full(len(slices), np.nan) for name in MEASURED}
    for index, (counts, condition) in enumerate(zip(slices.counts, slices.conditions)):
        try:
            result = hemisphere_stats(canonical_image(counts, condition.level), TEMPLATE_MIDLINE)
        except InvalidImageError:
            continue  # no brain to measure: left out, and the row's n says so
        values["MC"][index], values["LR"][index], values["AI"][index] = result.mc, result.lr, result.ai
    return MeasuredSlices(slices, values)


@dataclass(frozen=True)
class SampleComparison:
    """Real versus synthetic values of one measure. Effect sizes are positive when synthetic values are larger."""

    n_real: int
    n_synth: int
    mean_real: float
    sd_real: float
    mean_synth: float
    sd_synth: float
    p_mannwhitney: float
    effect_r: float  # rank-biserial correlation 2 U / (n_synth n_real) - 1
    p_welch: float
    cohens_d: float
    p_ks: float

    def to_dict(self) -> dict:
        return asdict(self)


def compare_samples(real: np.ndarray, synthetic: np.ndarray) -> SampleComparison:
    """Two-sided Mann-Whitney U, Welch's t and Kolmogorov-Smirnov tests and effect sizes; NaN values are left out.

    With no value on a side (no slice had a measurable brain) everything but the counts is NaN.
    """
    real = np.asarray(real, dtype=np.float64)
    synthetic = np.asarray(synthetic, dtype=np.float64)
    real, synthetic = real[np.isfinite(real)], synthetic[np.isfinite(synthetic)]
    n_real, n_synth = len(real), len(synthetic)
    if not (n_real and n_synth):
        return SampleComparison(n_real, n_synth, *[math.nan] * 9)
    mann_whitney = stats.mannwhitneyu(synthetic, real, alternative="two-sided")
    sd_real, sd_synth = (float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for v in (real, synthetic))
    pooled_sd = math.sqrt(((n_real - 1) * sd_real ** 2 + (n_synth - 1) * sd_synth ** 2) / (n_real + n_synth - 2)
                          ) if min(n_real, n_synth) > 1 else math.nan
    difference = float(synthetic.mean() - real.mean())
    return SampleComparison(
        n_real=n_real, n_synth=n_synth, mean_real=float(real.mean()), sd_real=sd_real,
        mean_synth=float(synthetic.mean()), sd_synth=sd_synth, p_mannwhitney=float(mann_whitney.pvalue),
        effect_r=float(2.0 * mann_whitney.statistic / (n_synth * n_real) - 1.0),
        p_welch=float(stats.ttest_ind(synthetic, real, equal_var=False).pvalue) if pooled_sd > 0 else math.nan,
        cohens_d=difference / pooled_sd if pooled_sd > 0 else math.nan,
        p_ks=kolmogorov_smirnov_p(synthetic, real))


def kolmogorov_smirnov_p(first: np.ndarray, second: np.ndarray) -> float:
    """Two-sided KS P value: exact where scipy can, else asymptotic (scipy's note about switching is silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful")
        return float(stats.ks_2samp(first, second).pvalue)


def comparison_groups(levels: tuple[Level, ...]) -> list[tuple[str, str, str]]:
    """(scope, level, pattern) of every row of the paper table, pooled rows first."""
    return ([("pattern", POOLED, pattern.value) for pattern in Pattern]
            + [("level", level.value, POOLED) for level in levels]
            + [("cell", level.value, pattern.value) for level in levels for pattern in Pattern])


def paper_table(bundle: str, real: MeasuredSlices, synthetic: MeasuredSlices) -> list[dict]:
    """Rows with bundle, scope, level, pattern, metric and the comparison, for every group with slices on both sides."""
    rows = []
    for scope, level, pattern in comparison_groups(real.slices.present_levels()):
        real_mask, synthetic_mask = real.group(level, pattern), synthetic.group(level, pattern)
        if not (real_mask.any() and synthetic_mask.any()):
            continue
        for metric in MEASURES:
            comparison = compare_samples(real.values[metric][real_mask], synthetic.values[metric][synthetic_mask])
            rows.append({"bundle": bundle, "scope": scope, "level": level, "pattern": pattern, "metric": metric,
                         **comparison.to_dict()})
    return rows


def accuracy_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval of an accuracy."""
    interval = stats.binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="exact")
    return float(interval.low), float(interval.high)


def rank_biserial_null_sd(n_real: int, n_synth: int) -> float:
    """Standard deviation of the rank-biserial r between two samples of one distribution: sqrt((n1+n2+1)/(3 n1 n2))."""
    return math.sqrt((n_real + n_synth + 1) / (3.0 * n_real * n_synth))
