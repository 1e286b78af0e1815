"""``spectgan synthesize``: a labelled synthetic cohort from a model bundle, in the cohort format (see
``spectgan.cohorts.format``), for any training pipeline: ``spectgan train``, the evaluation's TSTR, or a MONAI
Dataset of the manifest's files.

The model is reached only through the model contract (``spectgan.models.synthesizer``), so any model family's
bundle works. Every slice has its own seed (the manifest's ``seed`` column): ``spectgan sample --bundle B --level L
--pattern P [--side S] [--territory T --severity V] --seed SEED --n 1`` makes the same slice again. For a model with
defect axes the manifest records each slice's territory and severity: those asked for (``--territory``,
``--severity``), the rest drawn per slice from the seed, out of the training cohort of the model
(``Synthesizer.resolve``) or, with ``--like-cohort``, out of that cohort's train split, so that the synthetic cohort
has its mix of defects too. Work is split in fixed chunks written atomically, one worker process per core: an
interrupted run continues where it stopped, and the same bundle, counts and seed give the same files.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from spectgan.files import atomic_write_bytes, atomic_write_image
from spectgan.cohorts.format import (CohortRecord, finished_cohort, read_cohort_info, read_manifest, write_cohort_info,
                                     write_manifest)
from spectgan.conditions import Condition, parse_levels, valid_conditions
from spectgan.errors import SpectganError
from spectgan.geometry.template import SLAB_THICKNESS_MM, canonical_image
from spectgan.lesions import LESION_AXES, LesionDistribution, apply_lesions, lesion_text, resolve_conditions
from spectgan.models.synthesizer import check_lesions, load_synthesizer

CHUNK_SIZE = 512  # slices written by one task
SPLIT = "train"  # a synthetic cohort is training data: every slice goes to the train split
MAX_SLICES = 10_000_000


def slice_seeds(seed: int, count: int) -> list[int]:
    """``count`` seeds in [0, 2^63) from the run ``seed``: slice i gets the i-th (distinct with overwhelming odds)."""
    words = np.random.SeedSequence([seed, 0x5EED]).generate_state(2 * count, dtype=np.uint32).astype(np.uint64)
    return [int(value) for value in (words[0::2] << np.uint64(31)) ^ words[1::2]]


def plan(conditions_and_counts: Sequence[tuple[Condition, int]], seed: int,
         lesions: LesionDistribution | None = None) -> list[tuple[Condition, int]]:
    """Every slice of the cohort, in a fixed order: (condition, seed). With ``lesions``, the territory and severity a
    condition leaves out are drawn from them here, slice by slice from the run ``seed`` (the model draws the rest
    from its own training cohort when it makes the slice)."""
    conditions = [condition for condition, count in conditions_and_counts for _ in range(count)]
    if not conditions:
        raise SpectganError("nothing to synthesize: ask for at least one slice")
    if len(conditions) > MAX_SLICES:
        raise SpectganError(f"{len(conditions)} slices asked for; at most {MAX_SLICES} in one cohort")
    if lesions is not None:
        conditions = resolve_conditions(conditions, lesions, seed)
    return list(zip(conditions, slice_seeds(seed, len(conditions))))


def counts_like(cohort_dir: Path, levels) -> tuple[list[tuple[Condition, int]], LesionDistribution]:
    """The train split's slices per condition in a cohort, at the bundle's ``levels`` (others are left out), and
    their lesions (what a synthetic cohort like it draws its territories and severities from)."""
    records = [record for record in read_manifest(Path(cohort_dir))
               if record.split == "train" and record.condition.level in levels]
    if not records:
        raise SpectganError(f"{cohort_dir} has no train slices at the bundle's levels "
                            f"{', '.join(level.value for level in levels)}")
    counts = Counter(record.condition for record in records)
    return ([(condition, counts[condition]) for condition in valid_conditions(levels) if counts[condition]],
            LesionDistribution.from_conditions([record.labelled_condition for record in records]))


def _chunk_file(out: Path, number: int) -> Path:
    return out / "chunks" / f"chunk_{number:05d}.json"


_WORKER: dict = {}


def _start_worker(bundle_dir: str) -> None:
    torch.set_num_threads(1)
    _WORKER["model"] = load_synthesizer(bundle_dir)


def _run_chunk(number: int, first: int, jobs: list[tuple[Condition, int]], out: str) -> int:
    """Worker: generate one chunk slice by slice (each from its own seed, its lesions completed by the model from
    that seed), write its slices, then its manifest rows (which mark it done)."""
    model = _WORKER["model"]
    rows = []
    for offset, (requested, seed) in enumerate(jobs):
        condition = model.resolve([requested], seed)[0]
        counts = model.sample([condition], seed, {})[0]
        identifier = f"synth_{first + offset:07d}"
        record = CohortRecord(SPLIT, identifier, condition.base, condition.lesions, f"{SPLIT}/{identifier}.nii.gz",
                              seed)
        atomic_write_image(canonical_image(counts, condition.level), Path(out) / record.file)
        rows.append(record.to_row())
    atomic_write_bytes(_chunk_file(Path(out), number), json.dumps(rows).encode())
    return len(jobs)


def synthesize_cohort(bundle_dir: Path, out: Path, conditions_and_counts: Sequence[tuple[Condition, int]],
                      seed: int = 0, workers: int | None = None, progress: bool = True,
                      lesions: LesionDistribution | None = None) -> Path:
    """Write (or continue, or reuse) a synthetic cohort in ``out``; returns ``out``.

    A condition's lesions say what its slices' defects must be (``--territory``, ``--severity``); what they leave
    out is drawn per slice, from ``lesions`` when given (a cohort to be like) for a model with defect axes, and
    otherwise by the model. InvalidRequestError for lesions the model does not take."""
    out = Path(out)
    synthesizer = load_synthesizer(bundle_dir)
    model = synthesizer.describe()
    lesions = lesions if synthesizer.defect_axes() is not None else None
    jobs = plan(conditions_and_counts, seed, lesions)
    for condition in dict.fromkeys(condition for condition, _ in jobs):
        check_lesions(synthesizer, condition)
    key = {"bundle": model["name"], "version": model["version"], "weights_sha256": model["sha256"],
           "seed": seed, "slices": {condition.label: count for condition, count in conditions_and_counts},
           **lesions_key(conditions_and_counts, lesions)}
    if finished_cohort(out, key, progress):
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_cohort_info(out, {"format": "spectgan-cohort", "source": "synthetic", "key": key, "state": "building"})
    chunks = [jobs[i:i + CHUNK_SIZE] for i in range(0, len(jobs), CHUNK_SIZE)]
    pending = [number for number in range(len(chunks)) if not _chunk_file(out, number).is_file()]
    workers = max(1, min(workers or os.cpu_count() or 1, len(pending) or 1))
    started = time.perf_counter()
    with tqdm(total=len(jobs), initial=len(jobs) - sum(len(chunks[n]) for n in pending), unit="slice",
              desc="synthesize", disable=not progress) as bar, \
            ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(str(bundle_dir),)) as pool:
        tasks = [pool.submit(_run_chunk, number, number * CHUNK_SIZE, chunks[number], str(out))
                 for number in pending]
        for task in tasks:
            bar.update(task.result())
    records = [CohortRecord.from_row(row) for number in range(len(chunks))
               for row in json.loads(_chunk_file(out, number).read_text())]
    write_manifest(out, records)
    write_cohort_info(out, {
        "format": "spectgan-cohort", "source": "synthetic", "key": key, "state": "complete", "synthetic": True,
        "bundle": {"name": model["name"], "version": model["version"], "weights_sha256": model["sha256"]},
        "matrix": model["image_size"], "pixel_spacing_mm": model["pixel_spacing_mm"],
        "slab_thickness_mm": SLAB_THICKNESS_MM, "count_scale": model["count_scale"], "seed": seed,
        "counts": {SPLIT: len(jobs)}, "slices_per_condition": key["slices"],
        "synthesis_seconds": round(time.perf_counter() - started, 1),
        "note": "every slice is synthetic (made by a GAN); research use only",
    })
    return out


def lesions_key(conditions_and_counts: Sequence[tuple[Condition, int]], lesions: LesionDistribution | None
                ) -> dict:
    """What a cohort's key records of its lesions (empty when nothing restricts or draws them, so that the key of a
    cohort without them stays as it was): the territory and severity asked for per condition and a digest of the
    distribution the rest is drawn from."""
    asked = {condition.label: {axis: lesion_text(condition, axis) for axis in LESION_AXES}
             for condition, _ in conditions_and_counts if any(lesion_text(condition, axis) for axis in LESION_AXES)}
    digest = None if lesions is None else hashlib.sha256(
        json.dumps(lesions.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    return {**({"lesions_asked": asked} if asked else {}), **({"lesions_drawn_from": digest} if digest else {})}


def add_synthesize_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "synthesize", help="write a labelled synthetic cohort (cohort format) from a model bundle",
        description="Synthetic slices per condition into OUT/train/, with manifest.csv (a seed per slice) and "
                    "cohort.json (source: synthetic, the bundle's name, version and sha256). Resumable; uses "
                    "every core.")
    parser.add_argument("--bundle", required=True, type=Path, help="model bundle folder (e.g. models/spect_fastgan_A)")
    parser.add_argument("--out", required=True, type=Path, help="cohort folder to write (created; resumed)")
    how_many = parser.add_mutually_exclusive_group(required=True)
    how_many.add_argument("--per-condition", type=int, metavar="N", help="N slices of every condition the model makes")
    how_many.add_argument("--like-cohort", type=Path, metavar="DIR",
                          help="as many slices per condition as the train split of this cohort holds (and, for a "
                               "model with defect axes, territories and severities drawn from its train split)")
    parser.add_argument("--levels", help="levels to synthesize, comma-separated (default: all the bundle's)")
    parser.add_argument("--territory", help="defect territory of every unilateral and bilateral slice (a model with "
                        "defect axes), e.g. MCA, or per side for bilateral: left=MCA;right=ACA (default: drawn)")
    parser.add_argument("--severity", help="defect severity (fractional CBF reduction, e.g. 0.3), or per side for "
                        "bilateral: left=0.2;right=0.4 (default: drawn)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_synthesize)


def _run_synthesize(args) -> int:
    model = load_synthesizer(args.bundle)
    levels = model.levels if args.levels is None else parse_levels(args.levels)
    missing = [level.value for level in levels if level not in model.levels]
    if missing:
        raise SpectganError(f"the bundle has no level {', '.join(missing)}; its levels: "
                            f"{', '.join(level.value for level in model.levels)}")
    lesions = None
    if args.per_condition is not None:
        if args.per_condition < 1:
            raise SpectganError(f"--per-condition must be a positive integer, got {args.per_condition}")
        wanted = [(condition, args.per_condition) for condition in valid_conditions(levels)]
    else:
        wanted, lesions = counts_like(args.like_cohort, levels)
    restricted = apply_lesions([condition for condition, _ in wanted], args.territory, args.severity)
    wanted = [(condition, count) for condition, (_, count) in zip(restricted, wanted)]
    out = synthesize_cohort(args.bundle, args.out, wanted, args.seed, args.workers, progress=not args.no_progress,
                            lesions=lesions)
    info = read_cohort_info(out)
    print(f"synthetic cohort of {info['counts'][SPLIT]} slices from {info['bundle']['name']} "
          f"{info['bundle']['version']} in {out} (manifest.csv, cohort.json, {SPLIT}/)")
    return 0

