"""``spectgan bench cohort`` and ``spectgan bench synthesize``: how fast cohorts are simulated and synthesized,
measured in one run (``spectgan.tools.bench`` runs them)."""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from spectgan.cohorts import simulated, synthetic
from spectgan.models.synthesizer import load_synthesizer
from spectgan.tools.bench import print_figures


def run_cohort_benchmark(as_json: bool = False) -> int:
    """Slices per second at 64 and 128 and the projected time of the default and test-size cohorts."""
    figures = {}
    for matrix, n_slices in ((64, 64), (128, 64)):
        jobs = simulated.cohort_jobs(seed=12345, scale=1.0)[:n_slices]
        with tempfile.TemporaryDirectory() as folder:
            chunks = [jobs[i:i + simulated.CHUNK_SIZE] for i in range(0, len(jobs), simulated.CHUNK_SIZE)]
            started = time.perf_counter()
            with ProcessPoolExecutor(max_workers=min(os.cpu_count() or 1, 2)) as pool:
                list(pool.map(simulated.run_chunk, range(len(chunks)), chunks, [matrix] * len(chunks),
                              [folder] * len(chunks)))
            seconds = time.perf_counter() - started
        figures[f"slices_per_second_{matrix}"] = round(n_slices / seconds, 3)
    default_slices = len(simulated.cohort_jobs(0, 1.0))
    test_slices = len(simulated.cohort_jobs(0, 0.1))
    figures["default_cohort_slices"] = default_slices
    figures["default_cohort_projected_seconds"] = round(default_slices / figures["slices_per_second_128"], 1)
    figures["test_cohort_projected_seconds"] = round(test_slices / figures["slices_per_second_64"], 1)
    figures["targets"] = {"default_cohort_seconds": 1800, "test_cohort_seconds": 60}
    figures["ratio_to_target_default"] = round(figures["default_cohort_projected_seconds"] / 1800, 3)
    figures["ratio_to_target_test"] = round(figures["test_cohort_projected_seconds"] / 60, 3)
    print_figures(figures, as_json)
    return 0


def run_synthesize_benchmark(as_json: bool = False) -> int:
    """Slices per second of ``synthesize_cohort`` with the shipped model A, on every core, files included."""
    bundle = Path("models/spect_fastgan_A")
    conditions = load_synthesizer(bundle).conditions()
    per_condition = 2 * synthetic.CHUNK_SIZE // len(conditions) + 1
    wanted = [(condition, per_condition) for condition in conditions]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        synthetic.synthesize_cohort(bundle, Path(folder) / "cohort", wanted, seed=0, progress=False)
        seconds = time.perf_counter() - started
    slices = per_condition * len(wanted)
    rate = slices / seconds
    print_figures({"bundle": str(bundle), "slices": slices, "workers": os.cpu_count(), "seconds": round(seconds, 2),
                   "slices_per_second": round(rate, 1),
                   "minutes_for_100000_slices": round(100_000 / rate / 60, 1)}, as_json)
    return 0
