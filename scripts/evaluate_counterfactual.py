"""Measure the counterfactual methods on the paired simulated set (``spectgan.counterfactual.paired``): subjects
acquired with and without their defect. Writes OUT/results.json (every pair's measures and the summaries) and
OUT/paired.png (examples and |AI| against the truth), and prints the summaries as Markdown tables.

    python scripts/evaluate_counterfactual.py [--per-cell 7] [--seed 0] [--out docs/counterfactual]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from spectgan.counterfactual import physics
from spectgan.counterfactual.paired import (ADD, REMOVE, SUMMARY_COLUMNS, Method, PairedSlice, PairMeasures,
                                            measure_pair, paired_design, severity_bin, simulate_pairs, summarize)
from spectgan.figures import pyplot, save_figure

METHODS = (Method(physics.METHOD, physics.add_defect, physics.remove_defect),
           Method("unchanged", lambda counts, lesions, level: counts, lambda counts, lesions, level: counts))


def markdown(rows: list[dict]) -> str:
    """Summary rows as a Markdown table (``SUMMARY_COLUMNS``)."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(f"{row[name]:.3g}" if isinstance(row[name], float) else str(row[name])
                                for name in SUMMARY_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def draw(pairs: list[PairedSlice], measures: list[PairMeasures], png: Path) -> Path:
    """One example per level (the most severe defect): the patient's slice without the defect, the physics
    counterfactual, the truth with the defect and their difference; and |AI| of each counterfactual against the
    truth's. Radiological display: the patient's right on the image's left."""
    plt = pyplot()
    examples = [max((pair for pair in pairs if pair.level is level), key=lambda pair: pair.lesion.severity)
                for level in dict.fromkeys(pair.level for pair in pairs)]
    figure, axes = plt.subplots(len(examples), 5, figsize=(13, 2.7 * len(examples)), squeeze=False)
    for row, pair in enumerate(examples):
        made = physics.add_defect(pair.without, [pair.lesion], pair.level)
        vmax = float(np.percentile(pair.without, 99.8))
        panels = (("patient (no defect)", pair.without), ("physics: defect added", made),
                  ("truth (with defect)", pair.with_defect))
        for column, (title, image) in enumerate(panels):
            axes[row, column].imshow(image, cmap="inferno", vmin=0, vmax=vmax)
            axes[row, column].set_title(f"{title}\n{pair.territory} {pair.lesion.side.value} "
                                        f"{pair.lesion.severity:.0%}", fontsize=8)
        difference = axes[row, 3].imshow(made - pair.with_defect, cmap="coolwarm", vmin=-0.3 * vmax,
                                          vmax=0.3 * vmax)
        axes[row, 3].contour(pair.inside, levels=[0.5], colors="k", linewidths=0.6)
        axes[row, 3].set_title("added - truth (territory outlined)", fontsize=8)
        figure.colorbar(difference, ax=axes[row, 3], fraction=0.046)
        for column in range(4):
            axes[row, column].set_xticks([]), axes[row, column].set_yticks([])
            axes[row, column].text(0.02, 0.02, "R", color="cyan", transform=axes[row, column].transAxes, fontsize=7)
            axes[row, column].text(0.93, 0.02, "L", color="cyan", transform=axes[row, column].transAxes, fontsize=7)
        axes[row, 4].axis("off")
    scatter = figure.add_subplot(1, 5, 5)
    for method, marker in ((physics.METHOD, "o"), ("unchanged", "x")):
        for direction, colour in ((ADD, "tab:red"), (REMOVE, "tab:blue")):
            chosen = [item for item in measures if item.method == method and item.direction == direction]
            scatter.scatter([abs(item.ai_truth) for item in chosen], [abs(item.ai) for item in chosen], s=12,
                            marker=marker, color=colour, label=f"{method} {direction}")
    limit = max(abs(item.ai) for item in measures) * 1.05
    scatter.plot([0, limit], [0, limit], "k--", lw=0.8)
    scatter.set_xlabel("|AI| of the truth (%)"), scatter.set_ylabel("|AI| of the counterfactual (%)")
    scatter.legend(fontsize=7)
    figure.suptitle("Counterfactual slices on the paired simulated set (64 px)", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, png, dpi=90, tight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cell", type=int, default=7, help="subjects per level x territory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/counterfactual"))
    args = parser.parse_args()
    started = time.perf_counter()
    pairs = simulate_pairs(paired_design(args.per_cell, args.seed))
    simulated = time.perf_counter() - started
    measures = [measure_pair(pair, method, direction) for pair in pairs for method in METHODS
                for direction in (ADD, REMOVE)]
    by_territory = summarize(measures, lambda item: item.territory)
    by_severity = summarize(measures, lambda item: severity_bin(item.severity))
    overall = summarize(measures, lambda item: "all")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({
        "pairs": len(pairs), "per_cell": args.per_cell, "seed": args.seed, "matrix": 64,
        "simulation_seconds": round(simulated, 1), "overall": overall, "by_territory": by_territory,
        "by_severity": by_severity, "measures": [item.to_dict() for item in measures]}, indent=1) + "\n")
    draw(pairs, measures, args.out / "paired.png")
    for title, rows in (("overall", overall), ("per territory", by_territory), ("per severity bin", by_severity)):
        print(f"\n### {title}\n\n{markdown(rows)}")
    print(f"\n{len(pairs)} pairs simulated in {simulated:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
