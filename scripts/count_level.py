"""How bright the synthetic slices are overall, against the real ones: per level and pattern, the mean count in the
brain (MC, the hemisphere statistics' measure, counts) of one synthetic slice per real test slice of its condition
and lesions (as the evaluation samples them, its seed), beside the real test slices'. Prints mean +- SD and the
two-sample KS P per bundle, and draws the normals' distributions per level.

    python scripts/count_level.py --bundle models/spect_fastgan_A [--bundle ...] \
        [--cohort sample_data/cohorts/default] [--out models/spect_fastgan_A/docs/history/count_level.png]

A classifier trained on synthetic slices reads a real slice whose count level the generator never draws as out of
its classes: with model A 4.3.0 the real COR normals' MC spread twice as wide as the synthetic ones', and the
synthetic-trained classifier called the brightest and dimmest of them defects.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import stats

from spectgan.conditions import Pattern
from spectgan.evaluation.data import SliceSet, read_split
from spectgan.evaluation.pipeline import EvaluationSettings
from spectgan.evaluation.statistics import measure
from spectgan.figures import pyplot, save_figure
from spectgan.models.synthesizer import load_synthesizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True, help="repeat to compare bundles")
    parser.add_argument("--cohort", type=Path, default=Path("sample_data/cohorts/default"))
    parser.add_argument("--out", type=Path, help="a PNG of the normals' MC per level")
    args = parser.parse_args()
    test = read_split(args.cohort, "test")
    real = measure(test)
    sources = {"real test": real}
    for bundle in args.bundle:
        model = load_synthesizer(bundle)
        kept = test.at_levels(model.levels)
        counts = model.sample(kept.labelled_conditions(), EvaluationSettings().seed, {})
        label = f"{model.name} {model.describe().get('version', '')}".strip()
        sources[label] = measure(SliceSet(counts, kept.conditions, kept.lesions))
    for name, measured in list(sources.items())[1:]:
        print(f"== {name}: MC, mean +- SD (real test's), KS P")
        for level in sorted(set(measured.slices.levels)):
            for pattern in Pattern:
                mine, theirs = measured.group(level, pattern.value), real.group(level, pattern.value)
                if not mine.any():
                    continue
                a, b = measured.values["MC"][mine], real.values["MC"][theirs]
                a, b = a[~np.isnan(a)], b[~np.isnan(b)]
                print(f"  {level:4s} {pattern.value:11s} n {len(a):3d}  {a.mean():6.1f} +- {a.std(ddof=1):5.1f} "
                      f"({b.mean():6.1f} +- {b.std(ddof=1):5.1f})  KS P {stats.ks_2samp(a, b).pvalue:.2g}")
    if args.out:
        levels = sorted(set(real.slices.levels), key=["CER", "BG", "COR"].index)
        figure, axes = pyplot().subplots(1, len(levels), figsize=(4 * len(levels), 3.6), squeeze=False)
        for axis, level in zip(axes[0], levels):
            groups = [(name, measured.values["MC"][measured.group(level, Pattern.NORMAL.value)])
                      for name, measured in sources.items()]
            groups = [(name, values[~np.isnan(values)]) for name, values in groups if len(values)]
            axis.violinplot([values for _, values in groups], showmedians=True)
            axis.set_xticks(range(1, len(groups) + 1), [name.replace(" ", "\n", 1) for name, _ in groups],
                            fontsize=8)
            axis.set_title(f"{level} normals")
            axis.set_ylabel("MC (counts)")
        figure.suptitle("Mean count in the brain of normal slices: real test against synthetic")
        save_figure(figure, args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
