"""Defect realism of the evaluation on inputs with known answers (no cohort, no model): |AI| per pattern, TSTR per
pattern and severity, the controllability grid and fit, the territory classifier, and slices that stand in for a
model with defect axes."""
import math

import numpy as np
import pytest
import torch

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.evaluation.data import ArraySource, SliceSet
from spectgan.evaluation.defects import (ALL, SeverityControl, accuracy_breakdown, asymmetry_by_pattern,
                                         control_grid, severity_bins, train_territory_classifier)
from spectgan.evaluation.features import to_inputs
from spectgan.evaluation.statistics import MeasuredSlices
from spectgan.lesions import DefectAxes

NORMAL = Condition(Level.BG, Pattern.NORMAL)
LEFT = Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT)
BILATERAL = Condition(Level.BG, Pattern.BILATERAL)


def unilateral(severity: float, territory: str = "MCA", level: Level = Level.BG) -> tuple[Condition, tuple]:
    return Condition(level, Pattern.UNILATERAL, Side.LEFT), (Lesion(Side.LEFT, territory, severity),)


def slice_set(labelled: list[tuple[Condition, tuple]], size: int = 4) -> SliceSet:
    """Blank slices [N, size, size] with the given conditions and lesions."""
    return SliceSet(np.zeros((len(labelled), size, size), dtype=np.float32), tuple(c for c, _ in labelled),
                    tuple(lesions for _, lesions in labelled))


def measured(slices: SliceSet, ai: np.ndarray) -> MeasuredSlices:
    ai = np.asarray(ai, dtype=float)
    return MeasuredSlices(slices, {"MC": np.ones(len(ai)), "LR": (200 + ai) / (200 - ai), "AI": ai})


def test_severity_bins_are_open_at_both_ends_and_skip_unknown_severities():
    assert severity_bins(np.array([0.1, 0.2499, 0.25, 0.3499, 0.35, 0.6, np.nan])).tolist() == [0, 0, 1, 1, 2, 2, -1]


def test_slice_sets_carry_severity_territory_and_defect_axes():
    bilateral = (BILATERAL, (Lesion(Side.LEFT, "ACA", 0.2), Lesion(Side.RIGHT, "MCA", 0.4)))
    slices = slice_set([(NORMAL, ()), unilateral(0.3, "PCA"), bilateral, unilateral(0.2, "ACA", Level.COR)])
    assert np.isnan(slices.severities()[0]) and slices.severities()[1:].tolist() == [0.3, 0.4, 0.2]
    assert slices.territories() == (None, "PCA", None, "ACA")
    assert slices.take([2, 1]).severities().tolist() == [0.4, 0.3]
    axes = slices.defect_axes()
    assert axes.territories == {"BG": ("ACA", "MCA", "PCA"), "COR": ("ACA",)} and axes.severity_range == (0.2, 0.4)
    assert SliceSet(slices.counts, slices.conditions).defect_axes() is None  # no lesions recorded: no axes
    with pytest.raises(ValueError, match="one tuple per slice"):
        SliceSet(slices.counts, slices.conditions, slices.lesions[:2])


def test_asymmetry_per_pattern_of_the_same_and_of_larger_defects():
    rng = np.random.default_rng(0)
    labelled = [(NORMAL, ())] * 40 + [unilateral(0.3)] * 60
    ai = np.r_[rng.uniform(-4, 4, 40), rng.uniform(2, 22, 60)]
    real = measured(slice_set(labelled), ai)
    same = asymmetry_by_pattern(real, measured(slice_set(labelled), ai))
    assert set(same) == {"normal", "unilateral"}  # no bilateral slice on either side
    row = same["unilateral"]
    assert row["ks_p_abs_ai"] == pytest.approx(1.0) and row["n"] == {"real": 60, "synthetic": 60}
    assert row["abs_ai"]["real"] == row["abs_ai"]["synthetic"]
    assert row["abs_ai"]["real"]["q50"] == pytest.approx(np.median(np.abs(ai[40:])))
    assert row["mild_share"]["real"] == pytest.approx(np.mean(np.abs(ai[40:]) < 5))
    assert same["normal"]["mild_share"] == {"real": 1.0, "synthetic": 1.0}
    # a caricature: every synthetic defect 10 points larger, none of them mild
    larger = asymmetry_by_pattern(real, measured(slice_set(labelled), np.r_[ai[:40], ai[40:] + 10]))["unilateral"]
    assert larger["ks_p_abs_ai"] < 1e-6 and larger["mild_share"]["synthetic"] == 0.0
    assert larger["lr"]["synthetic"]["q10"] > larger["lr"]["real"]["q10"]


def test_pattern_accuracy_per_pattern_and_severity_bin():
    slices = slice_set([(NORMAL, ()), (NORMAL, ()), unilateral(0.2), unilateral(0.3), unilateral(0.45),
                        (BILATERAL, (Lesion(Side.LEFT, "ACA", 0.2), Lesion(Side.RIGHT, "ACA", 0.4))),
                        unilateral(None)])
    truth = np.array([0, 0, 1, 1, 1, 2, 1])
    missed = truth.copy()
    missed[[1, 2]] = [1, 0]  # a normal called unilateral, the mildest unilateral called normal
    result = accuracy_breakdown({"tstr": missed, "trtr": truth}, slices)
    assert result["normal"] == {ALL: {"n": 2, "tstr": 0.5, "trtr": 1.0}}
    assert result["unilateral"][ALL] == {"n": 4, "tstr": 0.75, "trtr": 1.0}  # the unknown severity under "all" only
    assert result["unilateral"]["< 0.25"] == {"n": 1, "tstr": 0.0, "trtr": 1.0}
    assert set(result["unilateral"]) == {ALL, "< 0.25", "0.25-0.35", ">= 0.35"}
    assert set(result["bilateral"]) == {ALL, ">= 0.35"}  # the more severe side's bin


def test_control_grid_spans_levels_territories_sides_and_the_severity_range():
    axes = DefectAxes({"CER": ("MCA", "PICA"), "BG": ("ACA", "MCA", "PCA")}, (0.15, 0.5))
    grid = control_grid(axes, [Level.BG, Level.COR], severities=8, repeats=2)
    assert len(grid) == 3 * 2 * 8 * 2  # COR: no territory known there
    severities = sorted({condition.lesions[0].severity for condition in grid})
    assert len(severities) == 8 and (severities[0], severities[-1]) == (0.15, 0.5)
    for condition in grid:
        axes.check(condition)
        assert condition.pattern is Pattern.UNILATERAL and condition.lesions[0].side is condition.side


def test_severity_control_of_a_faithful_and_of_a_deaf_model():
    rng = np.random.default_rng(1)
    real_severity = rng.uniform(0.15, 0.5, 200)
    real_ai = 40 * real_severity + 1 + rng.normal(0, 0.5, 200)
    requested = np.repeat(np.round(np.linspace(0.15, 0.5, 8), 4), 6)  # 0.15, 0.2, ..., 0.5, six of each
    faithful = SeverityControl(real_severity, real_ai, requested, 40 * requested + 1).summary()
    assert faithful["spearman"]["rho"] == pytest.approx(1.0) and faithful["real_spearman"]["rho"] > 0.9
    assert faithful["synthetic_fit"]["slope"] == pytest.approx(40) and faithful["real_fit"]["n"] == 200
    assert faithful["real_fit"]["slope"] == pytest.approx(40, abs=1.0)
    assert set(faithful["bins"]) == {"< 0.25", "0.25-0.35", ">= 0.35"}
    assert all(abs(row["gap"]) < 0.5 for row in faithful["bins"].values())
    assert [row["n"] for row in faithful["bins"].values()] == [12, 12, 24]
    deaf = SeverityControl(real_severity, real_ai, requested, np.full(len(requested), 12.0)).summary()
    assert math.isnan(deaf["spearman"]["rho"]) and deaf["synthetic_fit"]["slope"] == pytest.approx(0.0)
    assert deaf["bins"]["< 0.25"]["gap"] > 2 and deaf["bins"][">= 0.35"]["gap"] < -2


def territory_image(row: int, rng: np.random.Generator) -> np.ndarray:
    """A 16 x 16 slice with a bright blob at ``row``."""
    image = rng.normal(10, 1, (16, 16))
    image[row:row + 3, 6:10] += 60
    return image.astype(np.float32)


def test_the_territory_classifier_chooses_among_the_territories_of_the_slice_level():
    """At CER, PICA looks like ACA at BG (a blob at the top) and MCA is in the middle everywhere: the level tells
    them apart, so both levels are recognised without error."""
    rng = np.random.default_rng(2)
    rows = {("BG", "ACA"): 1, ("BG", "MCA"): 7, ("BG", "PCA"): 12, ("CER", "PICA"): 1, ("CER", "MCA"): 7}
    labelled = [unilateral(0.3, territory, Level(level)) for (level, territory) in rows for _ in range(12)]
    counts = np.stack([territory_image(rows[c.level.value, lesions[0].territory], rng) for c, lesions in labelled])
    train = SliceSet(counts, tuple(c for c, _ in labelled), tuple(lesions for _, lesions in labelled))
    classifier = train_territory_classifier(to_inputs(train.counts, 100.0), train, steps=60, seed=0)
    assert classifier.names == ("ACA", "MCA", "PCA", "PICA")
    assert dict(classifier.at_level) == {"BG": ("ACA", "MCA", "PCA"), "CER": ("MCA", "PICA")}
    test_counts = np.stack([territory_image(rows[c.level.value, lesions[0].territory], rng) for c, lesions in labelled])
    test = SliceSet(test_counts, train.conditions, train.lesions)
    assert classifier.accuracy(to_inputs(test.counts, 100.0), test) == {"accuracy": 1.0, "n": len(test)}
    # slices of an unknown territory, or none, are not scored
    other = slice_set([unilateral(0.3, "ACA", Level.CER), (NORMAL, ())], size=16)
    assert classifier.accuracy(to_inputs(other.counts, 100.0), other)["n"] == 0
    assert train_territory_classifier(to_inputs(other.counts[1:], 1.0), other.take([1]), 2, 0) is None


def test_array_source_with_lesions_returns_the_nearest_slice_of_the_requested_territory():
    labelled = [unilateral(0.2, "MCA"), unilateral(0.45, "MCA"), unilateral(0.44, "ACA"), (NORMAL, ())]
    slices = slice_set(labelled)
    slices = SliceSet(np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32),
                      slices.conditions, slices.lesions)
    source = ArraySource("stand-in", slices)
    assert source.defect_axes.territories == {"BG": ("ACA", "MCA")}
    requests = [unilateral(0.4, "MCA"), unilateral(0.25, "MCA"), unilateral(0.2, "ACA")]
    made = source.generate_lesioned([Condition(c.level, c.pattern, c.side, lesions) for c, lesions in requests], 0)
    assert made[:, 0, 0].tolist() == [1.0, 0.0, 2.0]
    assert ArraySource("no lesions", SliceSet(slices.counts, slices.conditions)).defect_axes is None
