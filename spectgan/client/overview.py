"""The overview picture of a batch of scans (``overview.png``): every scan displayed radiologically with its
hemisphere ROI outlines, the registered midline and its MC / LR / AI."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from spectgan.figures import pyplot, save_figure
from spectgan.geometry.display import display_orientation, midline_distance, oriented
from spectgan.results import GenerationResult

OVERVIEW_PNG = "overview.png"
OVERVIEW_COLUMNS = 4  # panels per row when every condition has one seed
PANEL_INCHES = (2.4, 2.9)  # width, height of one scan in the overview
OVERVIEW_TITLE = "Synthetic 123I-IMP SPECT (counts); ROIs: patient left orange, right blue; midline dashed"


def _draw_panel(axis, result: GenerationResult, peak: float) -> None:
    """One scan: counts in grey, hemisphere outlines, the midline, and its statistics in the title."""
    orientation = display_orientation(result.image)
    axis.imshow(oriented(sitk.GetArrayFromImage(result.image)[0], orientation), cmap="gray", vmin=0.0,
                vmax=peak if peak > 0 else None, interpolation="nearest")
    stats = result.stats
    if stats is None:
        numbers = "no brain measured"
    else:
        for mask, colour in ((result.masks.left, "tab:orange"), (result.masks.right, "tab:blue")):
            axis.contour(oriented(sitk.GetArrayFromImage(mask)[0], orientation), levels=[0.5], colors=colour,
                         linewidths=0.8)
        numbers = f"MC {stats.mc:.0f}  LR {stats.lr:.3f}  AI {stats.ai:+.1f} %"
    axis.contour(oriented(midline_distance(result.image, result.midline), orientation), levels=[0.0],
                 colors="yellow", linewidths=0.9, linestyles="dashed")
    axis.set_title(f"{result.condition.label}  seed {result.seed}\n{numbers}", fontsize=7)
    axis.text(0.02, 0.03, "R", color="white", fontsize=7, transform=axis.transAxes, ha="left")
    axis.text(0.98, 0.03, "L", color="white", fontsize=7, transform=axis.transAxes, ha="right")


def _overview_grid(results: Sequence[GenerationResult]) -> list[list[GenerationResult]]:
    """Rows of panels: one row per condition (its seeds across) when conditions have several seeds, else the scans
    in order, ``OVERVIEW_COLUMNS`` to a row."""
    by_condition: dict[str, list[GenerationResult]] = {}
    for result in results:
        by_condition.setdefault(result.condition.label, []).append(result)
    if max(len(row) for row in by_condition.values()) > 1:
        return list(by_condition.values())
    return [list(results[start:start + OVERVIEW_COLUMNS]) for start in range(0, len(results), OVERVIEW_COLUMNS)]


def draw_overview(results: Sequence[GenerationResult], path: str | Path, title: str = "") -> Path:
    """A PNG of every scan with its hemisphere ROI outlines (patient left orange, right blue), the registered midline
    (dashed yellow) and its MC / LR / AI, displayed radiologically (the patient's left on the right, anterior up)."""
    plt = pyplot()
    if not results:
        raise ValueError("no scans to draw")
    for result in results:
        if result.image.GetDimension() != 3 or result.image.GetSize()[2] != 1:
            raise ValueError(f"the overview shows one-slice scans (output_space slice); {result.name} has size "
                             f"{result.image.GetSize()}")
    grid = _overview_grid(results)
    columns = max(len(row) for row in grid)
    title = textwrap.fill(title or OVERVIEW_TITLE, width=max(40, int(PANEL_INCHES[0] * columns * 14)))
    title_inches = 0.18 * (title.count("\n") + 1) + 0.1
    height = PANEL_INCHES[1] * len(grid) + title_inches
    figure, axes = plt.subplots(len(grid), columns, figsize=(PANEL_INCHES[0] * columns, height), squeeze=False)
    peak = max(float(np.percentile(sitk.GetArrayViewFromImage(result.image), 99.5)) for result in results)
    for axis in axes.ravel():
        axis.axis("off")
    for row_axes, row in zip(axes, grid):
        for axis, result in zip(row_axes, row):
            _draw_panel(axis, result, peak)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - title_inches / height))
    return save_figure(figure, path, dpi=110, tight=False)
