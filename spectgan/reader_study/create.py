"""``spectgan reader-study create``: a balanced, seeded, blinded set of real and synthetic slices.

Real slices come from a cohort's test split, synthetic ones from a model bundle; each condition (level x pattern x
side) gets as many real as synthetic cases. Every case is rendered the same way: one fixed count window per level
(shared by real and synthetic), the same matrix (real slices area-averaged to the model's size), the same colour map,
interpolation and pixel size.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from spectgan.cohorts.format import load_split, read_cohort_info
from spectgan.conditions import Condition, Level, describe_allowed, valid_conditions
from spectgan.errors import SpectganError
from spectgan.figures import pyplot, save_figure
from spectgan.reader_study.study import (IMAGE_DIRS, KEY_COLUMNS, KEY_FILE, READER_COLUMNS, READERS_FILE,
                                         SECRET_FILE, STUDY_FILE, KeyEntry, write_csv)

DISPLAY = {"colour_map": "inferno", "interpolation": "bilinear", "size_px": 384,
           "window": "[0, 99.5th percentile of all cases' counts at the level, real and synthetic together]"}
WINDOW_PERCENTILE = 99.5
MAX_READERS = 100
COUNT_SCALE_TOLERANCE = 1.25  # the cohort's and the model's count scales may differ by this factor either way


class Synthesizer(NamedTuple):
    """What the study needs from a model: its name, image size (pixels), the count scale of its training data,
    levels and ``sample(condition, seed, n) -> float32 counts [n, size, size]`` in the canonical orientation."""

    name: str
    image_size: int
    count_scale: float
    levels: tuple[Level, ...]
    sample: Callable[[Condition, int, int], np.ndarray]


def open_synthesizer(bundle_dir: Path) -> Synthesizer:
    """The one place the reader study calls the model API (``spectgan.models.fastgan`` bundles today)."""
    from spectgan.conditions import parse_levels
    from spectgan.models.fastgan.bundle import load_bundle
    from spectgan.models.fastgan.sample import sample

    bundle = load_bundle(bundle_dir)
    metadata = bundle.metadata

    def draw(condition: Condition, seed: int, n: int) -> np.ndarray:
        return sample(bundle, condition.level, condition.pattern, condition.side, seed=seed, n=n)[0]

    return Synthesizer(metadata["name"], int(metadata["image_size"]), float(metadata["count_scale"]),
                       parse_levels(metadata["levels"]), draw)


@dataclass(frozen=True)
class Case:
    """A case before blinding: truth (real | synthetic), condition, where it came from, counts [H, W]."""

    block: str
    truth: str
    condition: Condition
    source: str
    counts: np.ndarray


def per_condition(conditions: list[Condition], total: int, rng: np.random.Generator) -> dict[Condition, int]:
    """Spread ``total`` cases over the conditions as evenly as possible (the remainder to randomly chosen ones)."""
    counts = {condition: total // len(conditions) for condition in conditions}
    for index in rng.permutation(len(conditions))[:total % len(conditions)]:
        counts[conditions[index]] += 1
    return counts


def pick_real(pools: dict[Condition, list[tuple[str, np.ndarray]]], wanted: dict[Condition, int], block: str,
              rng: np.random.Generator) -> list[Case]:
    """Draw ``wanted[c]`` slices of each condition from ``pools`` without replacement (removing them from the pool)."""
    cases = []
    for condition, count in wanted.items():
        pool = pools.get(condition, [])
        if count > len(pool):
            raise SpectganError(f"the cohort's test split has {len(pool)} unused {condition.label} slice(s), the "
                                f"study needs {count}; use a larger cohort or fewer cases (--n, --practice)")
        for index in sorted(rng.choice(len(pool), size=count, replace=False), reverse=True):
            slice_id, counts = pool.pop(index)
            cases.append(Case(block, "real", condition, f"cohort test slice {slice_id}", counts))
    return cases


def make_synthetic(synthesizer: Synthesizer, wanted: dict[Condition, int], block: str,
                   rng: np.random.Generator) -> list[Case]:
    cases = []
    for condition, count in wanted.items():
        if count:
            seed = int(rng.integers(2 ** 31))
            for index, counts in enumerate(synthesizer.sample(condition, seed, count)):
                cases.append(Case(block, "synthetic", condition, f"SYNTHETIC {synthesizer.name} seed {seed} #{index}",
                                  counts))
    return cases


def display_windows(cases: list[Case]) -> dict[str, float]:
    """One upper count limit per level (lower limit 0), from all cases at that level, real and synthetic alike."""
    levels = sorted({case.condition.level for case in cases}, key=list(Level).index)
    return {level.value: float(np.percentile(np.stack([case.counts for case in cases
                                                      if case.condition.level is level]), WINDOW_PERCENTILE))
            for level in levels}


def render_case(counts: np.ndarray, upper: float, path: Path) -> None:
    """Write one slice (counts [H, W], canonical: the patient's right on the viewer's left) as a square PNG of
    DISPLAY['size_px'] pixels on the window [0, upper], with R / L marks."""
    plt = pyplot()
    inches = DISPLAY["size_px"] / 100
    figure = plt.figure(figsize=(inches, inches), dpi=100, facecolor="black")
    axis = figure.add_axes((0, 0, 1, 1))
    axis.imshow(counts, cmap=DISPLAY["colour_map"], vmin=0.0, vmax=upper, interpolation=DISPLAY["interpolation"])
    axis.set_axis_off()
    for x, label in ((0.03, "R"), (0.93, "L")):
        axis.text(x, 0.03, label, color="white", fontsize=11, transform=axis.transAxes)
    save_figure(figure, path, dpi=100, tight=False)


def random_ids(count: int) -> list[str]:
    """``count`` distinct random hex ids, each drawn independently (so their order says nothing)."""
    ids: list[str] = []
    while len(ids) < count:
        candidate = secrets.token_hex(5)
        if candidate not in ids:
            ids.append(candidate)
    return ids


def real_pools(cohort_dir: Path, synthesizer: Synthesizer) -> dict[Condition, list[tuple[str, np.ndarray]]]:
    """The cohort's test slices at the model's levels and size, grouped by condition (manifest order)."""
    arrays, records = load_split(cohort_dir, "test", synthesizer.levels, synthesizer.image_size)
    pools: dict[Condition, list[tuple[str, np.ndarray]]] = {}
    for record, counts in zip(records, arrays):
        pools.setdefault(record.condition, []).append((record.id, counts))
    return pools


def check_count_scales(cohort_dir: Path, synthesizer: Synthesizer) -> None:
    """Refuse a cohort whose counts are not those the model was trained on: with one window per level, real and
    synthetic slices would differ in brightness, and the display would give the answer away."""
    cohort_scale = float(read_cohort_info(cohort_dir)["count_scale"])
    ratio = cohort_scale / synthesizer.count_scale
    if not 1 / COUNT_SCALE_TOLERANCE <= ratio <= COUNT_SCALE_TOLERANCE:
        raise SpectganError(
            f"the cohort's count scale ({cohort_scale:.1f}) is {ratio:.2f} x the model's ({synthesizer.count_scale:.1f}; "
            f"allowed: {1 / COUNT_SCALE_TOLERANCE:.2f}-{COUNT_SCALE_TOLERANCE:.2f} x), so real and synthetic slices "
            "would differ in brightness; use a cohort made like the model's training cohort (same matrix, e.g. "
            "`spectgan cohort --matrix 128` for a model trained at 128 and sampled at 64)")


def check_counts(n_cases: int, n_readers: int, n_practice: int, n_conditions: int) -> None:
    if n_cases < 2 or n_cases % 2:
        raise SpectganError(f"--n must be an even number of at least 2 (half real, half synthetic), got {n_cases}")
    if not 1 <= n_readers <= MAX_READERS:
        raise SpectganError(f"--readers must be from 1 to {MAX_READERS}, got {n_readers}")
    if n_practice < 0 or n_practice % 2:
        raise SpectganError(f"--practice must be an even number >= 0 (0: no practice block), got {n_practice}")
    if n_conditions == 0:
        raise SpectganError("the model and the cohort share no condition")


def create_study(cohort_dir: Path, bundle_dir: Path, out: Path, n_cases: int = 60, n_readers: int = 3,
                 seed: int = 0, n_practice: int = 4) -> Path:
    """Write a blinded study folder (see ``spectgan.reader_study.study``) to ``out``, which must not exist.

    ``n_cases`` study cases (half real, half synthetic, balanced per condition), ``n_practice`` practice cases, one
    secret link per reader. The same seed picks the same cases, seeds and orders; case ids and tokens are random.
    """
    out = Path(out)
    if out.exists():
        raise SpectganError(f"{out} exists; a reader study is never overwritten (its answers would be lost): "
                            "choose a new --out")
    synthesizer = open_synthesizer(bundle_dir)
    check_count_scales(cohort_dir, synthesizer)
    pools = real_pools(cohort_dir, synthesizer)
    conditions = [condition for condition in valid_conditions(synthesizer.levels) if condition in pools]
    check_counts(n_cases, n_readers, n_practice, len(conditions))
    rng = np.random.default_rng(seed)
    cases = []
    for block, count in (("study", n_cases), ("practice", n_practice)):
        wanted = per_condition(conditions, count // 2, rng)
        cases += pick_real(pools, wanted, block, rng) + make_synthetic(synthesizer, wanted, block, rng)
    entries = _write_folder(out, cases, synthesizer, cohort_dir, n_readers, seed, rng)
    print(f"reader study: {out} ({sum(e.block == 'study' for e in entries)} cases, "
          f"{sum(e.block == 'practice' for e in entries)} practice, {n_readers} reader(s); "
          f"conditions: {describe_allowed(synthesizer.levels)})")
    return out


def _write_folder(out: Path, cases: list[Case], synthesizer: Synthesizer, cohort_dir: Path, n_readers: int,
                  seed: int, rng: np.random.Generator) -> list[KeyEntry]:
    """Render, key and link the cases into a staging folder beside ``out``, then rename it to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging."))
    try:
        staging.chmod(0o755)
        (staging / "private").mkdir(mode=0o700)
        windows = display_windows(cases)
        blinded = list(zip(random_ids(len(cases)), cases))  # in the seeded case order, so the orders below are too
        for case_id, case in sorted(blinded, key=lambda pair: pair[0]):  # written in id order: file times say nothing
            render_case(case.counts, windows[case.condition.level.value],
                        staging / IMAGE_DIRS[case.block] / f"{case_id}.png")
        entries = [KeyEntry(case_id, case.block, case.truth, case.condition, case.source) for case_id, case in blinded]
        write_csv(staging / KEY_FILE, KEY_COLUMNS, [entry.to_row() for entry in sorted(entries, key=lambda e: e.id)])
        (staging / SECRET_FILE).write_text(secrets.token_hex(32))
        readers = [f"reader{index + 1}" for index in range(n_readers)]
        tokens = [secrets.token_urlsafe(18) for _ in readers]
        write_csv(staging / READERS_FILE, READER_COLUMNS, [{"reader": reader, "token": token, "url": f"/read/{token}"}
                                                           for reader, token in zip(readers, tokens)])
        os.chmod(staging / READERS_FILE, 0o600)
        study_ids = [entry.id for entry in entries if entry.block == "study"]
        practice_ids = [entry.id for entry in entries if entry.block == "practice"]
        info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": seed,
                "model": synthesizer.name, "cohort": str(Path(cohort_dir).resolve()), "display": DISPLAY,
                "windows_counts": windows, "practice": [practice_ids[i] for i in rng.permutation(len(practice_ids))],
                "orders": {reader: [study_ids[i] for i in rng.permutation(len(study_ids))] for reader in readers}}
        (staging / STUDY_FILE).write_text(json.dumps(info, indent=1) + "\n")
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return entries
