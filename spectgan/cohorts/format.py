"""The cohort format shared by simulated cohorts (``spectgan cohort``) and imported ones (``spectgan import``).

A cohort folder holds:

- ``cohort.json``: ``matrix``, ``pixel_spacing_mm``, ``slab_thickness_mm``, ``count_scale`` (the ONE cohort-wide
  constant the GAN divides counts by, computed on the train split), ``source`` (simulated | imported) and how the
  cohort was made;
- ``manifest.csv``: one row per slice with ``split,id,level,pattern,side,territory,severity,file`` (``side`` empty
  unless unilateral; ``territory`` and ``severity`` empty where unknown, one value for a unilateral defect and for a
  bilateral one whose sides agree, ``left=X;right=Y`` per side otherwise (``spectgan.lesions``); ``file`` relative
  to the folder), and a ``seed`` column in synthetic cohorts (``spectgan synthesize``: the seed that made the
  slice);
- ``train/<id>.nii.gz`` and ``test/<id>.nii.gz``: canonical one-slice float32 volumes in counts, in template
  geometry (see ``spectgan.geometry.template``).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from spectgan.conditions import ALL_LEVELS, Condition, Lesion, Level, parse_condition
from spectgan.errors import SpectganError
from spectgan.files import atomic_write_bytes
from spectgan.geometry.template import canonical_array
from spectgan.lesions import lesion_text, parse_lesions

MANIFEST_COLUMNS = ("split", "id", "level", "pattern", "side", "territory", "severity", "file")
SEED_COLUMN = "seed"  # written only when some slice has a seed (synthetic cohorts)
SPLITS = ("train", "test")
COUNT_SCALE_PERCENTILE = 99.99
COUNT_SCALE_MARGIN = 1.05


@dataclass(frozen=True)
class CohortRecord:
    """One manifest row. ``condition`` is the slice's level, pattern and side; ``lesions`` its defect's territory
    and severity per affected hemisphere (None where the cohort does not know them)."""

    split: str
    id: str
    condition: Condition
    lesions: tuple[Lesion, ...]
    file: str
    seed: int | None = None  # the seed of a synthetic slice

    @property
    def labelled_condition(self) -> Condition:
        """The condition with its lesions."""
        return Condition(self.condition.level, self.condition.pattern, self.condition.side, self.lesions)

    @classmethod
    def from_row(cls, row: dict[str, str]) -> "CohortRecord":
        """Parse a manifest row; the condition and lesions are validated (ValueError names what is allowed)."""
        condition = parse_condition(row["level"], row["pattern"], row["side"] or None)
        lesions = parse_lesions(condition.pattern, condition.side, row["territory"], row["severity"])
        seed = int(row[SEED_COLUMN]) if row.get(SEED_COLUMN) else None
        return cls(row["split"], row["id"], condition, lesions, row["file"], seed)

    def to_row(self) -> dict[str, str]:
        condition = self.condition.to_dict()
        return {"split": self.split, "id": self.id, "level": condition["level"], "pattern": condition["pattern"],
                "side": condition["side"] or "", "territory": lesion_text(self.labelled_condition, "territory"),
                "severity": lesion_text(self.labelled_condition, "severity"), "file": self.file,
                SEED_COLUMN: "" if self.seed is None else str(self.seed)}


def write_manifest(cohort_dir: Path, records: Sequence[CohortRecord]) -> None:
    """Write ``manifest.csv`` atomically, sorted by split and id."""
    rows = sorted((record.to_row() for record in records), key=lambda row: (row["split"], row["id"]))
    columns = MANIFEST_COLUMNS + ((SEED_COLUMN,) if any(record.seed is not None for record in records) else ())
    lines = [",".join(columns)] + [",".join(row[column] for column in columns) for row in rows]
    atomic_write_bytes(Path(cohort_dir) / "manifest.csv", ("\n".join(lines) + "\n").encode())


def write_cohort_info(cohort_dir: Path, info: dict) -> None:
    atomic_write_bytes(Path(cohort_dir) / "cohort.json", (json.dumps(info, indent=2) + "\n").encode())


def read_cohort_info(cohort_dir: Path) -> dict:
    path = Path(cohort_dir) / "cohort.json"
    if not path.is_file():
        raise SpectganError(f"{cohort_dir} is not a spectgan cohort: {path.name} is missing "
                            "(make one with `spectgan cohort` or `spectgan import`)")
    return json.loads(path.read_text())


def finished_cohort(out: Path, key: dict, progress: bool) -> bool:
    """Whether ``out`` already holds the finished cohort made with ``key`` (then it is reused). False for a new or
    unfinished one, which the caller continues; a SpectganError when ``out`` holds another cohort or other files."""
    out = Path(out)
    if not (out / "cohort.json").is_file():
        if out.exists() and any(out.iterdir()):
            raise SpectganError(f"{out} is not empty and holds no spectgan cohort; choose another --out")
        return False
    info = read_cohort_info(out)
    if info.get("key") != key:
        raise SpectganError(f"{out} holds another cohort ({info.get('key')}); choose another --out")
    if info.get("state") == "complete" and progress:
        print(f"reusing the finished cohort in {out}")
    return info.get("state") == "complete"


def read_manifest(cohort_dir: Path) -> list[CohortRecord]:
    """Parse ``manifest.csv``; every row's condition is validated against ``spectgan.conditions``."""
    path = Path(cohort_dir) / "manifest.csv"
    if not path.is_file():
        raise SpectganError(f"{cohort_dir} has no manifest.csv")
    records = []
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise SpectganError(f"{path} lacks the columns {', '.join(sorted(missing))}; "
                                f"expected {','.join(MANIFEST_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            if row["split"] not in SPLITS:
                raise SpectganError(f"{path}:{line}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
            try:
                records.append(CohortRecord.from_row(row))
            except ValueError as error:
                raise SpectganError(f"{path}:{line}: {error}") from None
    return records


def load_split(cohort_dir: Path, split: str, levels: Sequence[Level] = ALL_LEVELS, image_size: int | None = None
               ) -> tuple[np.ndarray, list[CohortRecord]]:
    """All slices of one split at the given levels: float32 counts [N, H, W] and their manifest records.

    With ``image_size`` the slices are area-averaged to ``image_size`` x ``image_size`` (see ``area_average``)."""
    cohort_dir = Path(cohort_dir)
    records = [r for r in read_manifest(cohort_dir) if r.split == split and r.condition.level in levels]
    if not records:
        raise SpectganError(f"{cohort_dir} has no {split} slices at levels {', '.join(lv.value for lv in levels)}")
    arrays = np.stack([canonical_array(sitk.ReadImage(str(cohort_dir / record.file))) for record in records])
    return area_average(arrays.astype(np.float32), image_size or arrays.shape[-1]), records


def area_average(counts: np.ndarray, image_size: int) -> np.ndarray:
    """Slices in counts [N, M, M] -> [N, S, S] with S = ``image_size`` dividing M: each pixel the mean of its
    (M / S)^2 block, so mean counts are kept and the pixel spacing grows by M / S over the same field of view."""
    matrix = counts.shape[-1]
    if image_size > matrix or matrix % image_size:
        raise SpectganError(f"{matrix} x {matrix} slices cannot be area-averaged to {image_size} x {image_size}; "
                            f"allowed sizes divide {matrix}")
    factor = matrix // image_size
    return counts.reshape(len(counts), image_size, factor, image_size, factor).mean(axis=(2, 4), dtype=np.float64
                                                                                    ).astype(np.float32)


def compute_count_scale(train_arrays: np.ndarray) -> float:
    """The cohort-wide constant: a robust maximum of the train split's counts (99.99th percentile x 1.05)."""
    return float(np.percentile(train_arrays, COUNT_SCALE_PERCENTILE) * COUNT_SCALE_MARGIN)
