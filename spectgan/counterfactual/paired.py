"""The paired evaluation set: simulated subjects acquired with and without their defect, and the measures of a
counterfactual method against that truth.

Each pair is one simulated subject (``spectgan.simulation.phantom.random_subject``: anatomy, pose, perfusion, count
level) with one unilateral defect of a chosen territory and severity, and the same subject without it (no defect,
no diaschisis). Both are acquired twice (``spectgan.simulation.acquisition.acquire``, independent Poisson noise):
the second acquisitions give the noise floor of every measure (what two scans of the same subject differ by).

A counterfactual is measured in both directions: ADD (the defect added to the slice without it, against the slice
with it) and REMOVE (the defect removed from the slice with it, against the slice without it):

- ``inside_mae_pct``: mean absolute error inside the defect's territory (territory weight > 0.5 on the slab, in the
  brain) as % of the truth's mean counts in the brain;
- ``inside_bias_pct``: the mean signed error there, same unit (> 0: the defect is too shallow, < 0: too deep);
- ``outside_corr_patient``: correlation with the slice it was made from, in the brain outside the defect (no
  reduction on the slab, diaschisis included); ``outside_corr_truth``: the same with the truth;
- ``ai`` / ``ai_truth``: the asymmetry index (%) of the counterfactual and of the truth, split at the template
  midline (``spectgan.geometry.roi``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.geometry.roi import TEMPLATE_MIDLINE, hemisphere_masks, hemisphere_stats
from spectgan.geometry.template import SLAB_THICKNESS_MM, canonical_array, canonical_grid, canonical_image, \
    pixel_spacing
from spectgan.simulation.phantom import (DIASCHISIS_FRACTION, SEVERITY_RANGE, TERRITORIES_AT_LEVEL, Defect, Subject,
                                         defect_reduction, perfusion_phantom, physical_points, random_subject,
                                         subject_transform, transform_points)
from spectgan.simulation.protocol import PLANE_HALF_DEPTH_MM, PLANE_STEP_MM, axial_profile, protocol_for

ADD, REMOVE = "add", "remove"
SEVERITY_BINS = ((0.15, 0.25), (0.25, 0.35), (0.35, 0.50))
TERRITORY_INSIDE = 0.5  # territory weight (0..1) on the slab above which a pixel is inside the defect
OUTSIDE_REDUCTION = 0.005  # fractional reduction on the slab below which a pixel is outside the defect

Change = Callable[[np.ndarray, Sequence[Lesion], Level], np.ndarray]  # (counts [H, W], lesions, level) -> counts


@dataclass(frozen=True)
class Method:
    """A counterfactual method: how it adds lesions to a canonical slice and how it removes them."""

    name: str
    add: Change
    remove: Change


@dataclass(frozen=True)
class PairedSlice:
    """One subject's slices (counts [H, W] on the canonical grid): without / with its defect, each acquired twice,
    and the masks [H, W] (bool) inside and outside the defect."""

    level: Level
    lesion: Lesion
    without: np.ndarray
    without_repeat: np.ndarray
    with_defect: np.ndarray
    with_repeat: np.ndarray
    inside: np.ndarray
    outside: np.ndarray

    @property
    def territory(self) -> str:
        """``BG-MCA``: the level and the defect's territory."""
        return f"{self.level.value}-{self.lesion.territory}"


@dataclass(frozen=True)
class PairMeasures:
    """The measures of one counterfactual against its truth (see the module's docstring); ``noise_*``: the same
    measures of the truth's second acquisition, the floor two scans of one subject give."""

    method: str
    direction: str
    territory: str
    severity: float
    inside_mae_pct: float
    inside_bias_pct: float
    outside_corr_patient: float
    outside_corr_truth: float
    ai: float
    ai_truth: float
    noise_inside_mae_pct: float
    noise_outside_corr_truth: float
    noise_ai: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_design(per_cell: int, seed: int) -> list[tuple[Level, str, Side, float, int]]:
    """(level, territory, side, severity, subject seed) for ``per_cell`` subjects per level x territory: severities
    spread evenly over the simulation's range, sides alternating."""
    rng = np.random.default_rng(seed)
    design = []
    for level, territories in TERRITORIES_AT_LEVEL.items():
        for territory in territories:
            severities = np.linspace(*SEVERITY_RANGE, per_cell)
            for index, severity in enumerate(severities):
                side = (Side.LEFT, Side.RIGHT)[index % 2]
                design.append((level, territory, side, round(float(severity), 4), int(rng.integers(2**31))))
    return design


def _subject(level: Level, territory: str, side: Side, severity: float, rng: np.random.Generator) -> Subject:
    """A random subject with exactly this one defect (and the simulation's diaschisis for an MCA defect)."""
    subject = random_subject(Condition(level, Pattern.UNILATERAL, side), rng)
    diaschisis = float(rng.uniform(*DIASCHISIS_FRACTION) * severity) if territory == "MCA" else 0.0
    return replace(subject, defects=(Defect(territory, side, severity),), diaschisis=diaschisis)


def simulate_pairs(design: Sequence[tuple[Level, str, Side, float, int]], matrix: int = 64) -> list[PairedSlice]:
    """Phantoms of each subject with and without its defect, each acquired and reconstructed twice (one stack)."""
    from spectgan.simulation.acquisition import acquire  # pytomography loads with the simulation only

    weights = axial_profile(PLANE_STEP_MM, SLAB_THICKNESS_MM, PLANE_HALF_DEPTH_MM)
    activities, mus, levels, masks = [], [], [], []
    for level, territory, side, severity, seed in design:
        grid = canonical_grid(level, matrix, PLANE_HALF_DEPTH_MM, PLANE_STEP_MM)
        subject = _subject(level, territory, side, severity, np.random.default_rng(seed))
        template_points = transform_points(subject_transform(subject), physical_points(grid))
        weight = np.tensordot(weights, defect_reduction([Defect(territory, side, 1.0)], 0.0, template_points), 1)
        total = np.tensordot(weights, defect_reduction(subject.defects, subject.diaschisis, template_points), 1)
        masks.append((weight > TERRITORY_INSIDE, total < OUTSIDE_REDUCTION))
        for variant in (replace(subject, defects=(), diaschisis=0.0), subject):
            activity, mu = perfusion_phantom(variant, grid)
            activities.append(np.tensordot(weights, activity, axes=1))
            mus.append(mu[len(weights) // 2])
            levels.append(variant.count_level)
    stack = (np.stack(activities), np.stack(mus), pixel_spacing(matrix), SLAB_THICKNESS_MM, protocol_for(matrix),
             np.array(levels))
    first = acquire(*stack, list(range(1, len(levels) + 1)))
    second = acquire(*stack, list(range(100_001, 100_001 + len(levels))))
    pairs = []
    for number, (level, territory, side, severity, _) in enumerate(design):
        brain = _brain(first[2 * number], level)
        inside, outside = masks[number]
        pairs.append(PairedSlice(level, Lesion(side, territory, severity), first[2 * number], second[2 * number],
                                 first[2 * number + 1], second[2 * number + 1], inside & brain, outside & brain))
    return pairs


def _brain(counts: np.ndarray, level: Level) -> np.ndarray:
    """The brain [H, W] (bool) of a slice as the hemisphere statistics find it."""
    return canonical_array(hemisphere_masks(canonical_image(counts, level), TEMPLATE_MIDLINE).brain) > 0


def _ai(counts: np.ndarray, level: Level) -> float:
    return float(hemisphere_stats(canonical_image(counts, level), TEMPLATE_MIDLINE).ai)


def _mae_pct(counts: np.ndarray, truth: np.ndarray, inside: np.ndarray, brain: np.ndarray) -> float:
    return float(100.0 * np.abs(counts - truth)[inside].mean() / truth[brain].mean())


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def measure_pair(pair: PairedSlice, method: Method, direction: str) -> PairMeasures:
    """A method's counterfactual of one pair in one direction (``ADD`` or ``REMOVE``), measured against the
    truth."""
    if direction == ADD:
        source, truth, repeat = pair.without, pair.with_defect, pair.with_repeat
    elif direction == REMOVE:
        source, truth, repeat = pair.with_defect, pair.without, pair.without_repeat
    else:
        raise ValueError(f"direction must be {ADD} or {REMOVE}, got {direction!r}")
    made = (method.add if direction == ADD else method.remove)(source, [pair.lesion], pair.level)
    brain = _brain(truth, pair.level)
    return PairMeasures(
        method.name, direction, pair.territory, float(pair.lesion.severity),
        inside_mae_pct=_mae_pct(made, truth, pair.inside, brain),
        inside_bias_pct=float(100.0 * (made - truth)[pair.inside].mean() / truth[brain].mean()),
        outside_corr_patient=_corr(made, source, pair.outside),
        outside_corr_truth=_corr(made, truth, pair.outside),
        ai=_ai(made, pair.level), ai_truth=_ai(truth, pair.level),
        noise_inside_mae_pct=_mae_pct(repeat, truth, pair.inside, brain),
        noise_outside_corr_truth=_corr(repeat, truth, pair.outside), noise_ai=_ai(repeat, pair.level))


def severity_bin(severity: float) -> str:
    """``0.15-0.25``: the bin of ``SEVERITY_BINS`` a severity falls in (the last bin includes its upper end)."""
    for low, high in SEVERITY_BINS:
        if low <= severity < high or (high == SEVERITY_BINS[-1][1] and severity == high):
            return f"{low:.2f}-{high:.2f}"
    raise ValueError(f"severity {severity} is outside {SEVERITY_BINS[0][0]}-{SEVERITY_BINS[-1][1]}")


SUMMARY_COLUMNS = ("method", "direction", "group", "n", "inside_mae_pct", "noise_inside_mae_pct", "inside_bias_pct",
                   "outside_corr_patient", "outside_corr_truth", "noise_outside_corr_truth", "abs_ai", "abs_ai_truth",
                   "abs_ai_error", "noise_abs_ai_error")


def summarize(measures: Sequence[PairMeasures], key: Callable[[PairMeasures], str]) -> list[dict]:
    """Means per (method, direction, ``key`` group) of the measures, with |AI| of the counterfactual and the truth and
    the mean |difference| of |AI| (its noise floor: the truth's second acquisition), rows in ``SUMMARY_COLUMNS``."""
    groups: dict[tuple[str, str, str], list[PairMeasures]] = {}
    for item in measures:
        groups.setdefault((item.method, item.direction, key(item)), []).append(item)
    rows = []
    for (method, direction, group), items in sorted(groups.items()):
        mean = lambda values: round(float(np.mean(list(values))), 3)  # noqa: E731
        rows.append({"method": method, "direction": direction, "group": group, "n": len(items),
                     **{name: mean(getattr(item, name) for item in items) for name in (
                         "inside_mae_pct", "noise_inside_mae_pct", "inside_bias_pct", "outside_corr_patient",
                         "outside_corr_truth", "noise_outside_corr_truth")},
                     "abs_ai": mean(abs(item.ai) for item in items),
                     "abs_ai_truth": mean(abs(item.ai_truth) for item in items),
                     "abs_ai_error": mean(abs(abs(item.ai) - abs(item.ai_truth)) for item in items),
                     "noise_abs_ai_error": mean(abs(abs(item.noise_ai) - abs(item.ai_truth)) for item in items)})
    return rows
