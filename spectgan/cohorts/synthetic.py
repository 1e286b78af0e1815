"""``spectgan synthesize``: a labelled synthetic cohort from a model bundle, in the cohort format (see
``spectgan.cohorts.format``), for any training pipeline: ``spectgan train``, the evaluation's TSTR, or a MONAI
Dataset of the manifest's files.

The model is reached only through the model contract (``spectgan.models.synthesizer``), so any model family's
bundle works. Every slice has its own seed (the manifest's ``seed`` column): ``spectgan sample --bundle B --level L
--pattern P [--side S] --seed SEED --n 1`` makes the same slice again. Work is split in fixed chunks written
atomically, one worker process per core: an interrupted run continues where it stopped, and the same bundle, counts
and seed give the same files.
"""
from __future__ import annotations

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

from spectgan.tools.bench import print_figures
from spectgan.cohorts.format import (CohortRecord, atomic_write_bytes, atomic_write_image, finished_cohort,
                                     read_cohort_info, read_manifest, write_cohort_info, write_manifest)
from spectgan.conditions import Condition, parse_condition, valid_conditions
from spectgan.errors import SpectganError
from spectgan.geometry.template import SLAB_THICKNESS_MM, canonical_image
from spectgan.models.synthesizer import load_synthesizer

CHUNK_SIZE = 512  # slices written by one task
SPLIT = "train"  # a synthetic cohort is training data: every slice goes to the train split
MAX_SLICES = 10_000_000


def slice_seeds(seed: int, count: int) -> list[int]:
    """``count`` seeds in [0, 2^63) from the run ``seed``: slice i gets the i-th (distinct with overwhelming odds)."""
    words = np.random.SeedSequence([seed, 0x5EED]).generate_state(2 * count, dtype=np.uint32).astype(np.uint64)
    return [int(value) for value in (words[0::2] << np.uint64(31)) ^ words[1::2]]


def plan(conditions_and_counts: Sequence[tuple[Condition, int]], seed: int) -> list[tuple[Condition, int]]:
    """Every slice of the cohort, in a fixed order: (condition, seed)."""
    conditions = [condition for condition, count in conditions_and_counts for _ in range(count)]
    if not conditions:
        raise SpectganError("nothing to synthesize: ask for at least one slice")
    if len(conditions) > MAX_SLICES:
        raise SpectganError(f"{len(conditions)} slices asked for; at most {MAX_SLICES} in one cohort")
    return list(zip(conditions, slice_seeds(seed, len(conditions))))


def counts_like(cohort_dir: Path, levels) -> list[tuple[Condition, int]]:
    """The train split's slices per condition in a cohort, at the bundle's ``levels`` (others are left out)."""
    counts = Counter(record.condition for record in read_manifest(Path(cohort_dir))
                     if record.split == "train" and record.condition.level in levels)
    if not counts:
        raise SpectganError(f"{cohort_dir} has no train slices at the bundle's levels "
                            f"{', '.join(level.value for level in levels)}")
    return [(condition, counts[condition]) for condition in valid_conditions(levels) if counts[condition]]


def _chunk_file(out: Path, number: int) -> Path:
    return out / "chunks" / f"chunk_{number:05d}.json"


_WORKER: dict = {}


def _start_worker(bundle_dir: str) -> None:
    torch.set_num_threads(1)
    _WORKER["model"] = load_synthesizer(bundle_dir)


def _run_chunk(number: int, first: int, jobs: list[tuple[str, str, str | None, int]], out: str) -> int:
    """Worker: generate one chunk slice by slice (each from its own seed), write its slices, then its manifest rows
    (which mark it done)."""
    model = _WORKER["model"]
    rows = []
    for offset, (level, pattern, side, seed) in enumerate(jobs):
        condition = parse_condition(level, pattern, side)
        counts = model.sample([condition], seed, {})[0]
        identifier = f"synth_{first + offset:07d}"
        record = CohortRecord(SPLIT, identifier, condition, "", None, f"{SPLIT}/{identifier}.nii.gz", seed)
        atomic_write_image(canonical_image(counts, condition.level), Path(out) / record.file)
        rows.append(record.to_row())
    atomic_write_bytes(_chunk_file(Path(out), number), json.dumps(rows).encode())
    return len(jobs)


def synthesize_cohort(bundle_dir: Path, out: Path, conditions_and_counts: Sequence[tuple[Condition, int]],
                      seed: int = 0, workers: int | None = None, progress: bool = True) -> Path:
    """Write (or continue, or reuse) a synthetic cohort in ``out``; returns ``out``."""
    out = Path(out)
    model = load_synthesizer(bundle_dir).describe()
    jobs = plan(conditions_and_counts, seed)
    key = {"bundle": model["name"], "version": model["version"], "weights_sha256": model["sha256"],
           "seed": seed, "slices": {condition.label: count for condition, count in conditions_and_counts}}
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
        tasks = [pool.submit(_run_chunk, number, number * CHUNK_SIZE,
                             [(c.level.value, c.pattern.value, c.side.value if c.side else None, s)
                              for c, s in chunks[number]], str(out)) for number in pending]
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
                          help="as many slices per condition as the train split of this cohort holds")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")
    parser.add_argument("--workers", type=int, help="worker processes (default: one per core)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_synthesize)


def _run_synthesize(args) -> int:
    model = load_synthesizer(args.bundle)
    if args.per_condition is not None:
        if args.per_condition < 1:
            raise SpectganError(f"--per-condition must be a positive integer, got {args.per_condition}")
        wanted = [(condition, args.per_condition) for condition in model.conditions()]
    else:
        wanted = counts_like(args.like_cohort, model.levels)
    out = synthesize_cohort(args.bundle, args.out, wanted, args.seed, args.workers, progress=not args.no_progress)
    info = read_cohort_info(out)
    print(f"synthetic cohort of {info['counts'][SPLIT]} slices from {info['bundle']['name']} "
          f"{info['bundle']['version']} in {out} (manifest.csv, cohort.json, {SPLIT}/)")
    return 0


def run_synthesize_benchmark(as_json: bool = False) -> int:
    """Slices per second of ``synthesize_cohort`` with the shipped model A, on every core, files included."""
    import tempfile

    bundle = Path("models/spect_fastgan_A")
    conditions = load_synthesizer(bundle).conditions()
    per_condition = 2 * CHUNK_SIZE // len(conditions) + 1
    wanted = [(condition, per_condition) for condition in conditions]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        synthesize_cohort(bundle, Path(folder) / "cohort", wanted, seed=0, progress=False)
        seconds = time.perf_counter() - started
    slices = per_condition * len(wanted)
    rate = slices / seconds
    print_figures({"bundle": str(bundle), "slices": slices, "workers": os.cpu_count(), "seconds": round(seconds, 2),
                   "slices_per_second": round(rate, 1),
                   "minutes_for_100000_slices": round(100_000 / rate / 60, 1)}, as_json)
    return 0
