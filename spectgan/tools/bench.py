"""``spectgan bench NAME``: benchmarks that print ratios measured in one run (never timed tests)."""
from __future__ import annotations

import importlib
import json

BENCHMARKS: dict[str, str] = {
    "cohort": "spectgan.cohorts.bench:run_cohort_benchmark",
    "sample": "spectgan.models.fastgan.bench:run_sample_benchmark",
    "server": "spectgan.tools.server_bench:run_server_benchmark",
    "evaluate": "spectgan.evaluation.report:run_evaluate_benchmark",
    "synthesize": "spectgan.cohorts.bench:run_synthesize_benchmark",
}


def add_bench_command(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run a benchmark and print what it measured")
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="what to measure")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    module_name, function_name = BENCHMARKS[args.name].split(":")
    benchmark = getattr(importlib.import_module(module_name), function_name)
    return benchmark(as_json=args.json) or 0


def print_figures(figures: dict, as_json: bool) -> None:
    """A benchmark's figures as JSON, or one aligned ``name value`` line each."""
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        print(f"{name:{width}s}  {value}")
