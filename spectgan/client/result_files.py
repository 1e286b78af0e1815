"""The files of a batch of scans: one NIfTI per scan (its geometry kept), ``stats.csv`` (one row per scan) and
``stats.json`` (each scan's whole result), all written atomically."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

from spectgan.files import NIFTI_SUFFIX, atomic_write_bytes, atomic_write_image
from spectgan.lesions import LESION_AXES, lesion_text
from spectgan.results import GenerationResult

STATS_CSV, STATS_JSON, DICOM_DIR = "stats.csv", "stats.json", "dicom"  # DICOM_DIR: a batch's export folder


def result_file(result: GenerationResult) -> str:
    """The name of a scan's NIfTI file: ``<name>.nii.gz``, e.g. ``BG-unilateral-left_seed3.nii.gz``."""
    return f"{result.name}{NIFTI_SUFFIX}"


def save_result(result: GenerationResult, folder: str | Path) -> Path:
    """Write the scan's image as ``<folder>/<result_file>`` with its geometry; the path."""
    path = Path(folder) / result_file(result)
    atomic_write_image(result.image, path)
    return path


def result_row(result: GenerationResult) -> dict:
    """A flat row for tables and CSV: file, condition (territory and severity empty where the model has no defect
    axes), seed, model and every statistic (or why there are none)."""
    condition = result.condition
    row = {"file": result_file(result), "level": condition.level.value, "pattern": condition.pattern.value,
           "side": condition.side.value if condition.side else "",
           **{axis: lesion_text(condition, axis) for axis in LESION_AXES}, "seed": result.seed,
           "model": result.model.name, "version": result.model.version}
    row.update(result.stats.to_dict() if result.stats is not None else {"stats_error": result.stats_error or ""})
    return row


def _records(results: Sequence[GenerationResult]) -> tuple[list[str], list[dict]]:
    """Column names (in first-seen order) and one ``result_row`` per scan."""
    rows = [result_row(result) for result in results]
    return list(dict.fromkeys(key for row in rows for key in row)), rows


def stats_table(results: Sequence[GenerationResult]) -> tuple[list[str], list[list[str]]]:
    """The columns of ``stats.csv`` and one row of text per scan (numbers to 6 significant digits), for display."""
    columns, rows = _records(results)
    return columns, [[f"{row[column]:.6g}" if isinstance(row.get(column), float) else str(row.get(column, ""))
                      for column in columns] for row in rows]


def write_stats(results: Sequence[GenerationResult], out: str | Path) -> tuple[Path, Path]:
    """``stats.csv`` (one row per scan: file, condition, seed, model, statistics at full precision) and
    ``stats.json`` (each scan's file and whole result, ``GenerationResult.to_json``) in ``out``."""
    out = Path(out)
    columns, rows = _records(results)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / STATS_CSV, text.getvalue().encode())
    entries = [{"file": row["file"], **result.to_json()} for row, result in zip(rows, results)]
    atomic_write_bytes(out / STATS_JSON, (json.dumps(entries, indent=2) + "\n").encode())
    return out / STATS_CSV, out / STATS_JSON
