"""Measure the counterfactual methods on the paired simulated set (``spectgan.counterfactual.paired``): subjects
acquired with and without their defect. The physics method always; with ``--bundle`` also the learned one (that
model inverted, ``spectgan.counterfactual.learned``; ``--learned-limits`` the ways its ratio is limited). Writes
OUT/results.json (every pair's measures, the summaries and each method's seconds per slice) and OUT/paired.png
(examples and |AI| against the truth), and prints the summaries as Markdown tables.

    python scripts/evaluate_counterfactual.py [--per-cell 7] [--seed 0] [--bundle models/spect_fastgan_A]
        [--learned-limits local] [--threads 1] [--out docs/counterfactual]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from spectgan.counterfactual import learned, physics
from spectgan.counterfactual.paired import (ADD, REMOVE, SUMMARY_COLUMNS, Method, PairedSlice, PairMeasures,
                                            measure_pair, paired_design, severity_bin, simulate_pairs, summarize)
from spectgan.figures import pyplot, save_figure
from spectgan.models.fastgan.bundle import load_bundle

UNCHANGED = Method("unchanged", lambda counts, lesions, level: counts, lambda counts, lesions, level: counts)


def markdown(rows: list[dict]) -> str:
    """Summary rows as a Markdown table (``SUMMARY_COLUMNS``)."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(f"{row[name]:.3g}" if isinstance(row[name], float) else str(row[name])
                                for name in SUMMARY_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def draw(pairs: list[PairedSlice], methods: list[Method], measures: list[PairMeasures], png: Path) -> Path:
    """One example per level (the most severe defect): the patient's slice without the defect, the truth with the
    defect and each method's counterfactual (the defect added); and |AI| of each counterfactual against the
    truth's. Radiological display: the patient's right on the image's left."""
    plt = pyplot()
    examples = [max((pair for pair in pairs if pair.level is level), key=lambda pair: pair.lesion.severity)
                for level in dict.fromkeys(pair.level for pair in pairs)]
    shown = [method for method in methods if method is not UNCHANGED]
    columns = len(shown) + 3
    figure, axes = plt.subplots(len(examples), columns, figsize=(2.6 * columns, 2.7 * len(examples)), squeeze=False)
    for row, pair in enumerate(examples):
        vmax = float(np.percentile(pair.without, 99.8))
        panels = [("patient (no defect)", pair.without), ("truth (with defect)", pair.with_defect)] + [
            (f"{method.name}: defect added", method.add(pair.without, [pair.lesion], pair.level)) for method in shown]
        for column, (title, image) in enumerate(panels):
            axes[row, column].imshow(image, cmap="inferno", vmin=0, vmax=vmax)
            if column > 1:
                axes[row, column].contour(pair.inside, levels=[0.5], colors="c", linewidths=0.5)
            axes[row, column].set_title(f"{title}\n{pair.territory} {pair.lesion.side.value} "
                                        f"{pair.lesion.severity:.0%}", fontsize=8)
            axes[row, column].set_xticks([]), axes[row, column].set_yticks([])
            axes[row, column].text(0.02, 0.02, "R", color="cyan", transform=axes[row, column].transAxes, fontsize=7)
            axes[row, column].text(0.93, 0.02, "L", color="cyan", transform=axes[row, column].transAxes, fontsize=7)
        axes[row, -1].axis("off")
    scatter = figure.add_subplot(1, columns, columns)
    markers = dict(zip([method.name for method in methods], "oxsd^v"))
    for method in methods:
        for direction, colour in ((ADD, "tab:red"), (REMOVE, "tab:blue")):
            chosen = [item for item in measures if item.method == method.name and item.direction == direction]
            scatter.scatter([abs(item.ai_truth) for item in chosen], [abs(item.ai) for item in chosen], s=12,
                            marker=markers[method.name], color=colour, label=f"{method.name} {direction}")
    limit = max(abs(item.ai) for item in measures) * 1.05
    scatter.plot([0, limit], [0, limit], "k--", lw=0.8)
    scatter.set_xlabel("|AI| of the truth (%)"), scatter.set_ylabel("|AI| of the counterfactual (%)")
    scatter.legend(fontsize=6)
    figure.suptitle("Counterfactual slices on the paired simulated set (64 px; territory outlined in cyan)",
                    fontsize=10)
    figure.tight_layout()
    return save_figure(figure, png, dpi=90, tight=False)


def methods_to_run(bundle: Path | None, limits: list[str], seed: int) -> list[Method]:
    """Physics, the learned method of the bundle (if given) with each limit, and the unchanged slice."""
    methods = [physics.PHYSICS_METHOD]
    if bundle is not None:
        inverted = learned.LearnedCounterfactual(load_bundle(bundle), seed)
        methods += [inverted.method(limit) for limit in limits]
    return methods + [UNCHANGED]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cell", type=int, default=7, help="subjects per level x territory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", type=Path, help="a model bundle with defect axes: also run the learned method")
    parser.add_argument("--learned-limits", default=learned.DEFAULT_LIMIT,
                        help=f"comma-separated limits of the learned method's ratio, among {', '.join(learned.LIMITS)} "
                             "(default %(default)s; several share one inversion per slice)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("docs/counterfactual"))
    args = parser.parse_args()
    limits = [limit.strip() for limit in args.learned_limits.split(",") if limit.strip()]
    if not set(limits) <= set(learned.LIMITS):
        parser.error(f"--learned-limits must be among {', '.join(learned.LIMITS)}, got {args.learned_limits!r}")
    torch.set_num_threads(args.threads)
    methods = methods_to_run(args.bundle, limits, args.seed)
    started = time.perf_counter()
    pairs = simulate_pairs(paired_design(args.per_cell, args.seed))
    simulated = time.perf_counter() - started
    measures, seconds = [], dict.fromkeys((method.name for method in methods), 0.0)
    for pair in pairs:
        for method in methods:
            for direction in (ADD, REMOVE):
                begun = time.perf_counter()
                measures.append(measure_pair(pair, method, direction))
                seconds[method.name] += time.perf_counter() - begun
    per_slice = {name: round(total / (2 * len(pairs)), 2) for name, total in seconds.items()}
    by_territory = summarize(measures, lambda item: item.territory)
    by_severity = summarize(measures, lambda item: severity_bin(item.severity))
    overall = summarize(measures, lambda item: "all")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({
        "pairs": len(pairs), "per_cell": args.per_cell, "seed": args.seed, "matrix": 64,
        "simulation_seconds": round(simulated, 1), "bundle": str(args.bundle) if args.bundle else None,
        "torch_threads": args.threads,
        "seconds_per_slice": per_slice,
        "overall": overall, "by_territory": by_territory,
        "by_severity": by_severity, "measures": [item.to_dict() for item in measures]}, indent=1) + "\n")
    draw(pairs, methods, measures, args.out / "paired.png")
    for title, rows in (("overall", overall), ("per territory", by_territory), ("per severity bin", by_severity)):
        print(f"\n### {title}\n\n{markdown(rows)}")
    print(f"\n{len(pairs)} pairs simulated in {simulated:.0f} s; seconds per slice and method (measures included; "
          f"the learned limits share one inversion, counted in the first): {per_slice}; written to {args.out}")


if __name__ == "__main__":
    main()
