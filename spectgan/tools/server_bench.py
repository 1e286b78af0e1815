"""``spectgan bench server``: a real server process against the same work in-process (``measure_server``)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import requests

from spectgan.errors import SpectganError
from spectgan.models.fastgan import export_bundle
from spectgan.models.fastgan.train import train
from spectgan.serving.service import GenerationService, use_server_threads
from spectgan.serving.settings import SAMPLE_STUDIES_DIR, generation_workers_from, models_dir_from
from spectgan.tools.server import ServerProcess

BENCH_MODEL = "spect_fastgan_A"
BENCH_STUDY = "study_unilateral_left_oblique"
BENCH_PARAMS = {"level": "BG", "pattern": "unilateral", "side": "left", "output_space": "reference"}
BENCH_LATENCY_REQUESTS = 100
BENCH_THROUGHPUT_REQUESTS = 32
BENCH_CLIENTS = (1, 2, 4)
BENCH_ROUNDS = 3
BENCH_WARM_UP_REQUESTS = 16
TARGET_RATIO = 1.15
TARGET_SPEEDUP_4 = 1.7


def _percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000.0, q))


def _stand_in_models_dir(work: Path) -> Path:
    """A barely trained 64 px bundle (a small simulated cohort, one training step) when no trained bundle exists."""
    from spectgan.cohorts.simulated import build_cohort  # the acquisition stack (pytomography) only for the stand-in

    cohort = build_cohort(work / "cohort", seed=7, matrix=64, scale=0.1, progress=False)
    train(work / "run", progress=False, cohort=str(cohort), iterations=1, batch_size=4)
    export_bundle(work / "run", work / "models" / BENCH_MODEL, name=BENCH_MODEL)
    return work / "models"


def _infer_over_http(session, url: str, seed: int) -> None:
    response = session.post(f"{url}/infer/{BENCH_MODEL}", params={"image": BENCH_STUDY, "output": "all"},
                            data={"params": json.dumps({**BENCH_PARAMS, "seed": seed})}, timeout=120)
    if response.status_code != 200:
        raise SpectganError(f"benchmark request failed ({response.status_code}): {response.text[:500]}")


def _throughput(url: str, clients: int, requests_total: int) -> float:
    """Requests per second of ``clients`` concurrent clients sharing ``requests_total`` requests."""
    counter = iter(range(requests_total))
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    seed = next(counter, None)
                if seed is None:
                    return
                _infer_over_http(session, url, seed)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    return requests_total / (time.perf_counter() - started)


def _seconds(call: Callable[[int], None], seed: int) -> float:
    started = time.perf_counter()
    call(seed)
    return time.perf_counter() - started


def measure_server(models_dir: Path, work: Path) -> dict:
    """End-to-end (HTTP) and in-process latencies of the same requests, interleaved so that both see the same load
    on a shared machine, then throughput with 1, 2 and 4 clients (the median of ``BENCH_ROUNDS`` rounds)."""
    studies = work / "studies"
    shutil.copytree(SAMPLE_STUDIES_DIR, studies)
    use_server_threads()  # the server's setting, so that both sides do the same work
    generation_workers = generation_workers_from()  # the server's (it gets this environment)
    service = GenerationService(models_dir, [BENCH_MODEL])
    study_path = studies / f"{BENCH_STUDY}.nii.gz"

    def in_process(seed: int) -> None:
        request = service.request(BENCH_MODEL, {**BENCH_PARAMS, "seed": seed})  # checked, as the server does
        path, _ = service.generate_file(request, study_path)
        path.read_bytes()
        path.unlink()

    with ServerProcess(studies, models_dir, work / "server.log", models=BENCH_MODEL) as server, \
            requests.Session() as session:
        def over_http(seed: int) -> None:
            _infer_over_http(session, server.url, seed)

        # Registration and bundle loading are not part of the measured requests: concurrent warm-up requests reach
        # every generation worker of the server (each registers the study once).
        in_process(0)
        _throughput(server.url, max(BENCH_CLIENTS), BENCH_WARM_UP_REQUESTS)
        local, remote = [], []
        for seed in range(BENCH_LATENCY_REQUESTS):
            local.append(_seconds(in_process, seed))
            remote.append(_seconds(over_http, seed))
        rounds = {clients: [] for clients in BENCH_CLIENTS}
        for _ in range(BENCH_ROUNDS):
            for clients in BENCH_CLIENTS:
                rounds[clients].append(_throughput(server.url, clients, BENCH_THROUGHPUT_REQUESTS))
    throughput = {clients: float(np.median(rates)) for clients, rates in rounds.items()}
    bundle = service.synthesizer(BENCH_MODEL).describe()
    figures = {
        "bundle": {"name": bundle["name"], "version": bundle["version"], "image_size": bundle["image_size"],
                   "trained_iterations": bundle["trained_iterations"]},
        "request": {"image": BENCH_STUDY, **BENCH_PARAMS}, "requests": BENCH_LATENCY_REQUESTS,
        "server_ms": {"p50": _percentile_ms(remote, 50), "p95": _percentile_ms(remote, 95)},
        "in_process_ms": {"p50": _percentile_ms(local, 50), "p95": _percentile_ms(local, 95)},
        "throughput_rps": {str(clients): rate for clients, rate in throughput.items()},
        "throughput_rounds": BENCH_ROUNDS, "cores": os.cpu_count(), "generation_workers": generation_workers,
    }
    figures["overhead_ms_p50"] = figures["server_ms"]["p50"] - figures["in_process_ms"]["p50"]
    figures["ratio_p50"] = figures["server_ms"]["p50"] / figures["in_process_ms"]["p50"]
    figures["ratio_p95"] = figures["server_ms"]["p95"] / figures["in_process_ms"]["p95"]
    figures["speedup_4_clients"] = throughput[4] / throughput[1]
    figures["targets"] = {"ratio_p50_max": TARGET_RATIO, "speedup_4_clients_min": TARGET_SPEEDUP_4,
                          "ratio_met": figures["ratio_p50"] <= TARGET_RATIO,
                          "speedup_met": figures["speedup_4_clients"] >= TARGET_SPEEDUP_4}
    return figures


def format_server_figures(figures: dict) -> str:
    bundle = figures["bundle"]
    lines = [f"server benchmark: {bundle['name']} {bundle['version']} ({bundle['image_size']} px, "
             f"{bundle['trained_iterations']} iterations), {figures['requests']} requests "
             f"{json.dumps(figures['request'])}, {figures['cores']} cores, server with "
             f"{figures['generation_workers']} generation worker process(es)",
             f"{'':<22}{'p50 ms':>10}{'p95 ms':>10}",
             f"{'end-to-end (HTTP)':<22}{figures['server_ms']['p50']:>10.1f}{figures['server_ms']['p95']:>10.1f}",
             f"{'in-process':<22}{figures['in_process_ms']['p50']:>10.1f}{figures['in_process_ms']['p95']:>10.1f}",
             f"ratio p50 {figures['ratio_p50']:.3f} (target <= {TARGET_RATIO}), p95 {figures['ratio_p95']:.3f}; "
             f"HTTP, MONAI Label and the worker hop add {figures['overhead_ms_p50']:.1f} ms (p50)",
             f"throughput (median of {figures['throughput_rounds']} rounds): "
             + ", ".join(f"{clients} client(s) {rate:.2f} req/s"
                         for clients, rate in figures["throughput_rps"].items()),
             f"4 clients / 1 client: {figures['speedup_4_clients']:.2f} x (target >= {TARGET_SPEEDUP_4})"]
    if figures.get("note"):
        lines.append(f"note: {figures['note']}")
    return "\n".join(lines)


def run_server_benchmark(as_json: bool = False) -> int:
    """``spectgan bench server``: a real server process against the same work in-process (see ``measure_server``).

    Uses the trained ``spect_fastgan_A`` of the models folder ($SPECTGAN_MODELS_DIR or models/); without one, an
    untrained 64 px stand-in made on the spot (the figures then say so).
    """
    models_dir = models_dir_from()
    with tempfile.TemporaryDirectory(prefix="spectgan_bench_server_") as temporary:
        work = Path(temporary)
        note = None
        if not GenerationService(models_dir, [BENCH_MODEL]).has_bundle(BENCH_MODEL):
            note = (f"no trained {BENCH_MODEL} in {models_dir}: measured a barely trained 64 px stand-in bundle, "
                    "so generation is cheaper than with the shipped 128 px model")
            models_dir = _stand_in_models_dir(work)
        figures = measure_server(models_dir, work)
    figures["note"] = note
    print(json.dumps(figures, indent=2) if as_json else format_server_figures(figures))
    return 0

