"""Slice sets for the evaluation and the sources of synthetic slices (model bundles, or given arrays).

Every array here is canonical slices in counts ``[N, H, W]`` (see ``spectgan.geometry.template``); conditions travel with
them. The real side is always a cohort split read with ``spectgan.cohorts.format.load_split``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from spectgan.cohorts.format import load_split
from spectgan.conditions import ALL_LEVELS, Condition, Level, Pattern, Side, valid_conditions


@dataclass(frozen=True)
class SliceSet:
    """Slices in counts ``[N, H, W]`` and the condition of each."""

    counts: np.ndarray
    conditions: tuple[Condition, ...]

    def __post_init__(self):
        if self.counts.ndim != 3 or len(self.counts) != len(self.conditions):
            raise ValueError(f"a slice set needs counts [N, H, W] and N conditions, got counts of shape "
                             f"{self.counts.shape} and {len(self.conditions)} conditions")

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
        return SliceSet(self.counts[positions], tuple(self.conditions[i] for i in positions))

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


def read_split(cohort_dir: Path, split: str, levels: Sequence[Level] = ALL_LEVELS,
               image_size: int | None = None) -> SliceSet:
    """One split of a cohort as a slice set, area-averaged to ``image_size`` when given."""
    counts, records = load_split(Path(cohort_dir), split, levels, image_size)
    return SliceSet(counts, tuple(record.condition for record in records))


class SyntheticSource(Protocol):
    """Something that makes slices of a condition: a model bundle, or arrays standing in for one."""

    name: str
    levels: tuple[Level, ...]
    image_size: int  # slices are image_size x image_size

    def generate(self, condition: Condition, n: int, seed: int) -> np.ndarray:
        """``n`` slices of ``condition`` in counts [n, H, W], reproducible from ``seed``."""


class BundleSource:
    """A trained model bundle of any family, sampled through the model contract (``spectgan.models.synthesizer``)
    with its default options."""

    def __init__(self, bundle_dir: str | Path):
        from spectgan.models.synthesizer import load_synthesizer

        self.model = load_synthesizer(bundle_dir)
        described = self.model.describe()
        self.name = described.get("name") or Path(bundle_dir).name
        self.levels = self.model.levels
        self.image_size = int(described["image_size"])
        self.count_scale = float(described["count_scale"])

    def generate(self, condition: Condition, n: int, seed: int) -> np.ndarray:
        return self.model.sample([condition] * n, seed, {})


class ArraySource:
    """Given slices standing in for a generator: known-answer tests and benchmarks need no trained model.

    A request for ``n`` slices of a condition draws them from the given slices of that condition, without
    replacement while there are enough, seeded; ``gain`` multiplies the counts (a known shift).
    """

    def __init__(self, name: str, slices: SliceSet, gain: float = 1.0):
        self.name = name
        self.slices = slices
        self.gain = gain
        self.levels = slices.present_levels()
        self.image_size = slices.counts.shape[-1]

    def generate(self, condition: Condition, n: int, seed: int) -> np.ndarray:
        candidates = [i for i, c in enumerate(self.slices.conditions) if c == condition]
        if not candidates:
            raise ValueError(f"{self.name} has no slices of {condition.label}")
        rng = np.random.default_rng(seed)
        picks = rng.choice(candidates, size=n, replace=n > len(candidates))
        return self.slices.counts[picks] * np.float32(self.gain)


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
