"""The approaches table for the model docs: one row per approach (a source of synthetic slices in an evaluation
folder written by `spectgan evaluate` or scripts/compare_realism_approaches.py), one column group per cohort.

    python scripts/realism_table.py /tmp/approaches models/spect_fastgan_A/docs/evaluation
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(folder: Path) -> list[str]:
    primary = json.loads((folder / "evaluation.json").read_text())
    evaluations = [("default", primary)] + [
        (name, json.loads((folder / other["report"]).parent.joinpath("evaluation.json").read_text()))
        for name, other in primary.get("other_cohorts", {}).items()]
    lines = []
    for bundle in primary["bundles"]:
        for cohort, result in evaluations:
            s = result["bundles"][bundle]
            cells = next(t["value"] for t in s["targets"] if t["key"] == "cells").split(";")[0]
            low, high = s["c2st"]["ci95"]
            lines.append(f"| {bundle} | {cohort} (seed {result['cohort']['seed']}) | {s['c2st_accuracy']:.3f} "
                         f"({low:.3f}-{high:.3f}) | {s['spectrum_max_gap_decades']:.2f} | "
                         f"{s['background']['synthetic']['mean']:.2f} / {s['background']['real']['mean']:.2f} | "
                         f"{100 * s['tstr']:.1f} / {100 * s['trtr']:.1f} | {cells} | "
                         f"{100 * s['conditional_accuracy']['pattern']:.1f} / "
                         f"{100 * s['classifier_accuracy_real_test']['pattern']:.1f} | "
                         f"{100 * s['memorization_fraction']:.1f} % |")
    return lines


def main() -> None:
    header = ["approach", "cohort", "C2ST (95 % CI)", "spectrum gap (decades)", "background synth / real (counts)",
              "TSTR / TRTR (%)", "cell tests met", "pattern acc. synth / real (%)", "memorization"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for folder in sys.argv[1:]:
        print("\n".join(rows(Path(folder))))


if __name__ == "__main__":
    main()
