"""Slice sets for the evaluation and the sources of synthetic slices (model bundles, or given arrays).

Every array here is canonical slices in counts ``[N, H, W]`` (see ``spectgan.geometry.template``); conditions (and,
where the cohort records them, the lesions) travel with them. The real side is always a cohort split read with
``spectgan.cohorts.format.load_split``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from spectgan.cohorts.format import load_split
from spectgan.conditions import ALL_LEVELS, Condition, Lesion, Level, Pattern, Side, takes_side, valid_conditions
from spectgan.lesions import DefectAxes, LesionDistribution


@dataclass(frozen=True)
class SliceSet:
    """Slices in counts ``[N, H, W]``, the condition (level, pattern, side) of each and, where known, the lesions of
    each (``lesions`` empty: not known for any slice)."""

    counts: np.ndarray
    conditions: tuple[Condition, ...]
    lesions: tuple[tuple[Lesion, ...], ...] = ()

    def __post_init__(self):
        if self.counts.ndim != 3 or len(self.counts) != len(self.conditions):
            raise ValueError(f"a slice set needs counts [N, H, W] and N conditions, got counts of shape "
                             f"{self.counts.shape} and {len(self.conditions)} conditions")
        if self.lesions and len(self.lesions) != len(self.conditions):
            raise ValueError(f"a slice set's lesions are one tuple per slice or none, got {len(self.lesions)} for "
                             f"{len(self.conditions)} slices")

    def __len__(self) -> int:
        return len(self.conditions)

    @property
    def levels(self) -> np.ndarray:
        return np.array([condition.level.value for condition in self.conditions])

    @property
    def patterns(self) -> np.ndarray:
        return np.array([condition.pattern.value for condition in self.conditions])

    def take(self, indices: Sequence[int] | np.ndarray) -> "SliceSet":
        """The slices at ``indices`` (integer positions or a boolean mask), in that order."""
        positions = np.flatnonzero(indices) if np.asarray(indices).dtype == bool else np.asarray(indices, dtype=int)
        return SliceSet(self.counts[positions], tuple(self.conditions[i] for i in positions),
                        tuple(self.lesions[i] for i in positions) if self.lesions else ())

    def at_levels(self, levels: Sequence[Level]) -> "SliceSet":
        return self.take(np.isin(self.levels, [level.value for level in levels]))

    def capped(self, per_condition: int | None) -> "SliceSet":
        """At most ``per_condition`` slices of each condition (the first ones); None keeps everything."""
        if per_condition is None:
            return self
        seen: dict[Condition, int] = {}
        keep = []
        for index, condition in enumerate(self.conditions):
            seen[condition] = seen.get(condition, 0) + 1
            if seen[condition] <= per_condition:
                keep.append(index)
        return self.take(keep)

    def condition_counts(self) -> dict[Condition, int]:
        """Slices per condition, in the order of ``spectgan.conditions.valid_conditions``."""
        return {condition: count for condition in valid_conditions()
                if (count := self.conditions.count(condition))}

    def present_levels(self) -> tuple[Level, ...]:
        return tuple(level for level in ALL_LEVELS if level.value in self.levels)

    def labelled_conditions(self) -> tuple[Condition, ...]:
        """Every slice's condition with its lesions (without, where the set records none)."""
        if not self.lesions:
            return self.conditions
        return tuple(Condition(condition.level, condition.pattern, condition.side, lesions)
                     for condition, lesions in zip(self.conditions, self.lesions))

    def severities(self) -> np.ndarray:
        """Each slice's defect severity [N] (fractional CBF reduction): the largest of its lesions' (a bilateral
        defect: the more severe side), NaN for a normal slice or where not known."""
        severities = np.full(len(self), np.nan)
        for index, lesions in enumerate(self.lesions):
            known = [lesion.severity for lesion in lesions if lesion.severity is not None]
            if known:
                severities[index] = max(known)
        return severities

    def territories(self) -> tuple[str | None, ...]:
        """The territory of each unilateral slice's lesion; None for other slices or where not known."""
        if not self.lesions:
            return (None,) * len(self)
        return tuple(lesions[0].territory if takes_side(condition.pattern) and lesions else None
                     for condition, lesions in zip(self.conditions, self.lesions))

    def defect_axes(self) -> DefectAxes | None:
        """The territories per level and the severity range the set's lesions span; None when it records no
        severity."""
        if np.isnan(self.severities()).all():
            return None
        return LesionDistribution.from_conditions(self.labelled_conditions()).axes()


def read_split(cohort_dir: Path, split: str, levels: Sequence[Level] = ALL_LEVELS,
               image_size: int | None = None) -> SliceSet:
    """One split of a cohort as a slice set with the lesions its manifest records, area-averaged to ``image_size``
    when given."""
    counts, records = load_split(Path(cohort_dir), split, levels, image_size)
    return SliceSet(counts, tuple(record.condition for record in records), tuple(record.lesions for record in records))


class SyntheticSource(Protocol):
    """Something that makes slices of a condition: a model bundle, or arrays standing in for one."""

    name: str
    levels: tuple[Level, ...]
    image_size: int  # slices are image_size x image_size
    defect_axes: DefectAxes | None  # the territory and severity axes it takes (None: level, pattern and side only)

    def generate(self, condition: Condition, n: int, seed: int) -> np.ndarray:
        """``n`` slices of ``condition`` in counts [n, H, W], reproducible from ``seed`` (lesions as the source draws
        them)."""

    def generate_lesioned(self, conditions: Sequence[Condition], seed: int) -> np.ndarray:
        """One slice per condition with complete lesions (territory and severity of each affected side) in counts
        [n, H, W], reproducible from ``seed``; only for a source with defect axes."""


class BundleSource:
    """A trained model bundle of any family, sampled through the model contract (``spectgan.models.synthesizer``)
    with its default options; named by ``name``, else the bundle's name."""

    def __init__(self, bundle_dir: str | Path, name: str | None = None):
        from spectgan.models.synthesizer import load_synthesizer

        self.model = load_synthesizer(bundle_dir)
        described = self.model.describe()
        self.name = name or described.get("name") or Path(bundle_dir).name
        self.levels = self.model.levels
        self.image_size = int(described["image_size"])
        self.count_scale = float(described["count_scale"])
        self.defect_axes = self.model.defect_axes()

    def generate(self, condition: Condition, n: int, seed: int) -> np.ndarray:
        return self.model.sample([condition] * n, seed, {})

    def generate_lesioned(self, conditions: Sequence[Condition], seed: int) -> np.ndarray:
        return self.model.sample(list(conditions), seed, {})


class ArraySource:
    """Given slices standing in for a generator: known-answer tests and benchmarks need no trained model.

    A request for ``n`` slices of a condition draws them from the given slices of that condition, without
    replacement while there are enough, seeded; ``gain`` multiplies the counts (a known shift). Given slices that
    record severities make a source with defect axes (those the slices span): a request with lesions gets the given
    slice of its condition nearest to them (``lesion_distance``).
    """

    def __init__(self, name: str, slices: SliceSet, gain: float = 1.0):
        self.name = name
        self.slices = slices
        self.gain = gain
        self.levels = slices.present_levels()
        self.image_size = slices.counts.shape[-1]
        self.defect_axes = slices.defect_axes()

    def _candidates(self, condition: Condition) -> list[int]:
        """Positions of the given slices of the condition's level, pattern and side."""
        candidates = [i for i, c in enumerate(self.slices.conditions) if c == condition.base]
        if not candidates:
            raise ValueError(f"{self.name} has no slices of {condition.label}")
        return candidates

    def generate(self, condition: Condition, n: int, seed: int) -> np.ndarray:
        candidates = self._candidates(condition)
        rng = np.random.default_rng(seed)
        picks = rng.choice(candidates, size=n, replace=n > len(candidates))
        return self.slices.counts[picks] * np.float32(self.gain)

    def generate_lesioned(self, conditions: Sequence[Condition], seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        given = self.slices.labelled_conditions()
        picks = []
        for condition in conditions:
            candidates = self._candidates(condition)
            distances = [lesion_distance(condition.lesions, given[i].lesions) for i in candidates]
            nearest = [i for i, distance in zip(candidates, distances) if distance == min(distances)]
            picks.append(nearest[int(rng.integers(len(nearest)))])
        return self.slices.counts[picks] * np.float32(self.gain)


def lesion_distance(requested: Sequence[Lesion], given: Sequence[Lesion]) -> tuple[int, float]:
    """How far a slice's lesions are from requested ones: (sides whose territory differs, summed |severity
    difference|, infinite where a severity is not known), to be compared as a tuple."""
    by_side = {lesion.side: lesion for lesion in given}
    mismatches, gap = 0, 0.0
    for lesion in requested:
        other = by_side.get(lesion.side, Lesion(lesion.side))
        mismatches += lesion.territory != other.territory
        gap += (abs(lesion.severity - other.severity) if None not in (lesion.severity, other.severity)
                else math.inf)
    return mismatches, gap


def class_indices(conditions: Sequence[Condition]) -> dict[str, np.ndarray]:
    """Level, pattern and side class of each condition, in the order of the enums in ``spectgan.conditions``
    (side: 0 none, 1 left, 2 right)."""
    levels, patterns, sides = list(Level), list(Pattern), [None] + list(Side)
    return {"level": np.array([levels.index(c.level) for c in conditions], dtype=np.int64),
            "pattern": np.array([patterns.index(c.pattern) for c in conditions], dtype=np.int64),
            "side": np.array([sides.index(c.side) for c in conditions], dtype=np.int64)}


CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "level": tuple(level.value for level in Level),
    "pattern": tuple(pattern.value for pattern in Pattern),
    "side": ("none",) + tuple(side.value for side in Side),
}
