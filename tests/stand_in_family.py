"""A model family for tests (registered with $SPECTGAN_MODEL_FAMILIES): every slice it makes is the known left-low
slice, so that left and right can be checked through a real server and its generation workers.

``left_low_counts``: a canonical slice (column toward the patient's left) whose patient-LEFT half has 60 % of the
right half's counts: LR 0.60 and AI -50 wherever a server puts it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spectgan.conditions import ALL_LEVELS, Condition, ConditionAxes, ConditionAxis, Level, valid_conditions
from spectgan.errors import SpectganError
from spectgan.models.synthesizer import METADATA_FILE, TrainPlan, bundle_metadata

NAME = "left_low_stand_in"
MODULE = "stand_in_family"
IMAGE_SIZE = 64
LEFT_COUNTS, RIGHT_COUNTS = 60.0, 100.0
EXPECTED_LR = LEFT_COUNTS / RIGHT_COUNTS
EXPECTED_AI = 200.0 * (LEFT_COUNTS - RIGHT_COUNTS) / (LEFT_COUNTS + RIGHT_COUNTS)  # -50


def left_low_counts(size: int) -> np.ndarray:
    """Float32 counts [size, size]: an elliptic brain, its patient-LEFT half (higher column index) at 60, the right
    half at 100."""
    rows, cols = np.mgrid[0:size, 0:size] - (size - 1) / 2
    brain = (rows / (0.38 * size)) ** 2 + (cols / (0.32 * size)) ** 2 <= 1.0
    return np.where(brain, np.where(cols > 0, LEFT_COUNTS, RIGHT_COUNTS), 0.0).astype(np.float32)


@dataclass(frozen=True)
class StandInSynthesizer:
    metadata: dict

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def levels(self) -> tuple[Level, ...]:
        return ALL_LEVELS

    def conditions(self) -> list[Condition]:
        return valid_conditions(self.levels)

    def options(self) -> tuple:
        return ()

    def defect_axes(self) -> None:
        return None

    def condition_axes(self) -> ConditionAxes:
        """Level, pattern and side, then the axes its bundle declares (``write_bundle``'s ``axes``)."""
        return ConditionAxes.declare(self.conditions(), [ConditionAxis.from_dict(axis)
                                                         for axis in self.metadata.get("condition_axes", ())])

    def resolve(self, conditions: Sequence[Condition], seed: int) -> list[Condition]:
        return list(conditions)

    def describe(self) -> dict:
        return {"name": self.name, "family": NAME, "version": self.metadata["version"], "sha256": "0" * 64,
                "description": "left-low stand-in for tests", "image_size": IMAGE_SIZE, "levels": ["CER", "BG", "COR"]}

    def sample(self, conditions: Sequence[Condition], seed: int, options: Mapping[str, float]) -> np.ndarray:
        return np.stack([left_low_counts(IMAGE_SIZE)] * len(conditions))


class StandInFamily:
    name = NAME
    default_iterations = 1
    default_batch_size = 2

    def load(self, bundle_dir: Path) -> StandInSynthesizer:
        return StandInSynthesizer(bundle_metadata(bundle_dir))

    def retrain(self, plan: TrainPlan, progress: bool) -> None:
        raise SpectganError("the left-low stand-in is not trained")


FAMILY = StandInFamily()


def write_bundle(folder: Path, name: str, axes: Sequence[ConditionAxis] = ()) -> Path:
    """A stand-in bundle (metadata only) in ``folder / name``; ``axes``: condition axes it declares beyond level,
    pattern and side."""
    path = folder / name / METADATA_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"name": name, "family": NAME, "version": "1.0.0",
                                "condition_axes": [axis.to_dict() for axis in axes]}))
    return folder / name
