"""``spectgan bench sample``: sampling throughput against the CPU's matrix-multiply roofline, measured in one run.

The generator is the shipped model A when its bundle is present, else the default architecture with random
weights (the same arithmetic). Throughput goes through ``gan.inference.generate``, the path ``sample`` uses.
The roofline is the best of several fp32 ``torch.matmul`` runs (MKL) in the same process; on some CPUs oneDNN's
convolutions run faster than MKL's matmul, so the oneDNN rate of a large 1 x 1 convolution (a matrix multiply) is
reported beside it as a second reference.
"""
from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from spectgan.conditions import Condition, Level, Pattern, Side
from spectgan.models.fastgan.bundle import load_bundle
from spectgan.models.fastgan.inference import generate, prepare_for_sampling
from spectgan.models.fastgan.networks import Generator, amp_dtype, encode_conditions

BATCHES = (1, 16, 64)
TARGET_RATIO = 0.6  # generator GFLOP/s over matmul GFLOP/s at batch 64
SHIPPED_BUNDLE = Path(__file__).resolve().parents[3] / "models" / "spect_fastgan_A"
CONDITION = Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT)


def _best_seconds(run, minimum_repeats: int = 3, minimum_seconds: float = 1.0) -> float:
    """Fastest of repeated runs after one warm-up (the least disturbed by other processes)."""
    run()
    times, started = [], time.perf_counter()
    while len(times) < minimum_repeats or time.perf_counter() - started < minimum_seconds:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(size: int = 2048) -> float:
    """Peak fp32 GFLOP/s of ``torch.matmul`` on square matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size ** 3 / _best_seconds(lambda: torch.matmul(a, b)) / 1e9


def onednn_matmul_gflops(rows: int = 16384, channels: int = 512) -> float:
    """GFLOP/s of a matrix multiply done as a channels-last 1 x 1 convolution (oneDNN)."""
    x = torch.randn(rows // 256, channels, 16, 16).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 1, 1).contiguous(memory_format=torch.channels_last)
    return 2 * rows * channels ** 2 / _best_seconds(lambda: F.conv2d(x, weight)) / 1e9


def generator_gflop_per_image(generator: Generator) -> float:
    """Convolution and matmul GFLOP of one image (FLOP counter on a batch of one)."""
    device = next(generator.parameters()).device
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        generator(torch.zeros(1, generator.latent_dim, device=device),
                  encode_conditions([CONDITION]).to(device))
    return counter.get_total_flops() / 1e9


def _benchmark_generator() -> tuple[Generator, str]:
    if SHIPPED_BUNDLE.is_dir():
        return load_bundle(SHIPPED_BUNDLE).generator, str(SHIPPED_BUNDLE.name)
    return prepare_for_sampling(Generator()), "default architecture, random weights"


def measure(generator: Generator, batches=BATCHES) -> dict:
    """Images per second of ``generate`` at each batch size on the generator's device."""
    return {batch: batch / _best_seconds(lambda: generate(generator, [CONDITION] * batch, seed=batch))
            for batch in batches}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_sample_benchmark(as_json: bool = False) -> int:
    generator, source = _benchmark_generator()
    gflop = generator_gflop_per_image(generator)
    baseline_mb = _peak_rss_mb()
    rates = measure(generator)
    sampling_peak_mb = _peak_rss_mb()
    matmul = matmul_gflops()
    onednn = onednn_matmul_gflops()
    generator_gflops = gflop * rates[64]
    result = {
        "generator": source, "image_size": generator.image_size, "gflop_per_image": round(gflop, 3),
        "threads": torch.get_num_threads(),
        "cpu_images_per_s": {str(batch): round(rate, 1) for batch, rate in rates.items()},
        "peak_memory_mb": round(sampling_peak_mb, 1), "memory_before_sampling_mb": round(baseline_mb, 1),
        "generator_gflops_batch64": round(generator_gflops, 1), "matmul_gflops": round(matmul, 1),
        "ratio_to_matmul_roofline": round(generator_gflops / matmul, 3), "target_ratio": TARGET_RATIO,
        "onednn_matmul_gflops": round(onednn, 1), "ratio_to_onednn_matmul": round(generator_gflops / onednn, 3),
    }
    if torch.cuda.is_available():
        cuda_generator = generator.to("cuda")
        torch.cuda.reset_peak_memory_stats()
        cuda_rates = measure(cuda_generator)
        result["cuda"] = {"device": torch.cuda.get_device_name(), "amp": str(amp_dtype(torch.device("cuda"))),
                          "images_per_s": {str(batch): round(rate, 1) for batch, rate in cuda_rates.items()},
                          "peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)}
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_report(result)
    return 0


def _print_report(result: dict) -> None:
    print(f"generator: {result['generator']}, {result['image_size']} x {result['image_size']}, "
          f"{result['gflop_per_image']} GFLOP per image, {result['threads']} CPU threads")
    for batch, rate in result["cpu_images_per_s"].items():
        print(f"  CPU batch {batch:>2}: {rate:8.1f} images/s")
    print(f"  peak memory of the process: {result['peak_memory_mb']} MB "
          f"({result['memory_before_sampling_mb']} MB before sampling)")
    print(f"  at batch 64: {result['generator_gflops_batch64']} GFLOP/s = {result['ratio_to_matmul_roofline']} x the "
          f"torch.matmul roofline of {result['matmul_gflops']} GFLOP/s (target >= {result['target_ratio']}); "
          f"{result['ratio_to_onednn_matmul']} x oneDNN's {result['onednn_matmul_gflops']} GFLOP/s")
    if "cuda" in result:
        cuda = result["cuda"]
        rates = ", ".join(f"batch {batch}: {rate} images/s" for batch, rate in cuda["images_per_s"].items())
        print(f"  CUDA {cuda['device']} with {cuda['amp']} autocast: {rates}; peak {cuda['peak_memory_mb']} MB")
