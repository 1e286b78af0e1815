"""Batches of scans: the conditions a request names among a model's (``expand_conditions``), seeds, and
``GenerationJob``, which requests every scan of conditions x seeds over one reference, saves each and writes the
batch's statistics and overview picture (``spectgan.client.result_files``, ``spectgan.client.overview``)."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from spectgan.client.http import SpectGANClient
from spectgan.client.overview import OVERVIEW_PNG, OVERVIEW_TITLE, draw_overview
from spectgan.client.result_files import save_result, write_stats
from spectgan.conditions import Condition, Lesion, Pattern, Side, parse_levels, parse_member, takes_side
from spectgan.lesions import LESION_AXES, lesion_text, parse_lesions
from spectgan.results import GenerationResult


def _parse_list(text: str | Sequence[str] | None, what: str) -> list[str] | None:
    """``"a,b"`` or a list -> stripped items; None, empty or ``all`` -> None (every value)."""
    if text is None:
        return None
    items = [item.strip() for item in (text.split(",") if isinstance(text, str) else text) if str(item).strip()]
    if not items:
        raise ValueError(f"empty {what}; give values separated by commas, or all")
    return None if any(item.lower() == "all" for item in items) else items


def expand_conditions(available: Sequence[Condition], levels=None, patterns=None, sides=None) -> list[Condition]:
    """The requested conditions among a model's ``available`` ones, in their order.

    ``levels``, ``patterns`` and ``sides`` are comma lists, lists, or ``all``/None (every value the model offers).
    Sides apply to the unilateral pattern only. Combinations the model lacks (bilateral at CER) are left out when
    they come from a list; a request that leaves nothing, or names a level the model lacks, is a ValueError that
    says what is allowed.
    """
    level_items, pattern_items, side_items = (_parse_list(levels, "levels"), _parse_list(patterns, "patterns"),
                                              _parse_list(sides, "sides"))
    model_levels = {condition.level for condition in available}
    allowed = "; ".join(condition.label for condition in available)
    wanted_levels = set(parse_levels(level_items)) if level_items else model_levels
    missing = sorted(level.value for level in wanted_levels - model_levels)
    if missing:
        raise ValueError(f"the model has no level {', '.join(missing)}; its conditions: {allowed}")
    wanted_patterns = {parse_member(Pattern, item, "pattern") for item in pattern_items or Pattern}
    wanted_sides = {parse_member(Side, item, "side") for item in side_items or Side}
    if side_items and not any(takes_side(pattern) for pattern in wanted_patterns):
        sided = ", ".join(pattern.value for pattern in Pattern if takes_side(pattern))
        raise ValueError(f"sides apply to the {sided} pattern only; add {sided} to the patterns or leave the side "
                         "out")
    chosen = [condition for condition in available
              if condition.level in wanted_levels and condition.pattern in wanted_patterns
              and (condition.side is None or condition.side in wanted_sides)]
    if not chosen:
        raise ValueError(f"no valid condition in this request; the model's conditions: {allowed}")
    return chosen


def lesion_params(condition: Condition) -> dict[str, str]:
    """The territory and severity a condition's lesions give, as request params (only those it names)."""
    return {axis: text for axis in LESION_AXES if (text := lesion_text(condition, axis))}


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"3"``, ``"0-4,10,12"`` -> the seeds in order, without repeats."""
    seeds: list[int] = []
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ValueError(f"invalid seeds {text!r}; use numbers and ranges such as 0-9 or 0-4,10")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) else first
        seeds.extend(seed for seed in range(first, last + 1) if seed not in seeds)
    return seeds


def seeds_from_spinboxes(seed: int, count: int) -> list[int | None]:
    """The seeds of a seed / count pair as the Slicer module offers them: ``seed < 0`` lets the server draw."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    return [None] * count if seed < 0 else list(range(seed, seed + count))


def removal_lesions(side: str | None, territory, severity) -> tuple[Lesion, ...]:
    """The defect to remove from the reference patient's slice (base reference, pattern normal): on ``side``
    (``left`` or ``right``; empty or None: both sides) with ``territory`` and ``severity`` (the forms of
    ``spectgan.lesions``); ValueError naming what is allowed."""
    if not side:
        return parse_lesions(Pattern.BILATERAL, None, territory, severity)
    return parse_lesions(Pattern.UNILATERAL, parse_member(Side, side, "side"), territory, severity)


@dataclass
class GenerationJob:
    """Every scan of one request: conditions x seeds (None: the server draws one), over one reference image. A
    condition's lesions are sent as its territory and severity (what they leave out, the model draws)."""

    client: SpectGANClient
    image: str
    model: str
    conditions: list[Condition]
    seeds: list[int | None]
    psi: float | None = None  # None: the model's default (a family without psi takes none)
    axis_values: dict[str, Any] = field(default_factory=dict)  # further declared axes (``SpectGANClient.generate``)
    base: str = "model"  # or "reference": the reference patient's own slice changed to each condition
    removed: tuple[Lesion, ...] = ()  # base reference: the defect the normal conditions take away
    file_with: str = "synthetic"  # base reference: "source" files the DICOM export with the reference's study
    method: str | None = None  # base reference: the counterfactual method (None: the server's default)
    results: list[GenerationResult] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.conditions) * len(self.seeds)

    def run(self, out: str | Path | None = None,
            on_result: Callable[[GenerationResult], None] | None = None) -> list[GenerationResult]:
        """Generate every scan (saving each into ``out`` when given) and return the results in request order."""
        for condition in self.conditions:
            for seed in self.seeds:
                result = self.client.generate(self.image, self.model, condition.level, condition.pattern,
                                              **self._defect_params(condition), seed=seed, psi=self.psi,
                                              axis_values=self.axis_values, base=self.base,
                                              file_with=self.file_with, method=self.method)
                if out is not None:
                    save_result(result, out)
                self.results.append(result)
                if on_result:
                    on_result(result)
        return self.results

    def _defect_params(self, condition: Condition) -> dict:
        """Side, territory and severity to send for a condition: its own, or for a normal condition made from the
        reference the defect it removes (``removed``; the side empty for a defect on both sides)."""
        if self.base == "reference" and condition.pattern is Pattern.NORMAL and self.removed:
            side = self.removed[0].side if len(self.removed) == 1 else None
            defect = Condition(condition.level, Pattern.UNILATERAL if side else Pattern.BILATERAL, side, self.removed)
            return {"side": side, **lesion_params(defect)}
        return {"side": condition.side, **lesion_params(condition)}

    def run_to_folder(self, out: str | Path, progress: bool = True) -> str:
        """Run with a progress bar (stderr), saving each scan into ``out``; then write ``stats.csv``,
        ``stats.json`` and ``overview.png`` there. Returns a summary that says where everything is."""
        from tqdm import tqdm

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=self.total, desc=self.model, unit="scan", disable=not progress, file=sys.stderr) as bar:
            self.run(out, on_result=lambda result: (bar.set_postfix_str(result.name), bar.update()))
        csv_path, json_path = write_stats(self.results, out)
        overview = draw_overview(self.results, out / OVERVIEW_PNG,
                                 title=f"{self.model} over {self.image}. {OVERVIEW_TITLE}")
        return (f"{len(self.results)} scans of {len(self.conditions)} conditions in {out}\n"
                f"statistics: {csv_path}, {json_path}\noverview: {overview}")
