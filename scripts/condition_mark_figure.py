"""What the synthetic slices of a defect condition carry besides the defect: at one level, the mean of the mild
unilateral-left slices (|AI| < MODERATE_AI) minus the mean of the normal slices, real and synthetic (one synthetic
slice per real test slice, its condition and own lesions), beside where a pattern classifier trained on the synthetic
slices looks when it reads those slices (saliency).

    python scripts/condition_mark_figure.py [--bundle models/spect_fastgan_A] [--cohort sample_data/cohorts/default] \
        [--level BG] [--out models/spect_fastgan_A/docs/history/condition_mark.png]

A real mild defect changes its own territory; a synthetic one that also changes the whole slice (counts, outline)
carries a mark of its condition that a classifier trained on synthetic slices learns and real slices lack.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from spectgan.cohorts.format import read_cohort_info
from spectgan.conditions import Level, Pattern, Side
from spectgan.evaluation.data import SliceSet, class_indices, read_split
from spectgan.evaluation.defects import MODERATE_AI
from spectgan.evaluation.features import CONDITION_HEADS, saliency, to_inputs, train_classifier
from spectgan.evaluation.pipeline import EvaluationSettings
from spectgan.evaluation.statistics import measure
from spectgan.figures import pyplot, save_figure
from spectgan.models.synthesizer import load_synthesizer

DIFFERENCE_RANGE = 0.15  # colour range of the difference maps, share of the normal mean slice's maximum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/spect_fastgan_A"))
    parser.add_argument("--cohort", type=Path, default=Path("sample_data/cohorts/default"))
    parser.add_argument("--level", default="BG", choices=[level.value for level in Level])
    parser.add_argument("--out", type=Path, default=Path("models/spect_fastgan_A/docs/history/condition_mark.png"))
    args = parser.parse_args()
    settings = EvaluationSettings()
    model = load_synthesizer(args.bundle)
    test = read_split(args.cohort, "test").at_levels(model.levels)
    scale = float(read_cohort_info(args.cohort)["count_scale"])
    synthetic = SliceSet(model.sample(test.labelled_conditions(), settings.seed, {}), test.conditions, test.lesions)
    classifier = train_classifier(to_inputs(synthetic.counts, scale), class_indices(test.conditions),
                                  CONDITION_HEADS, settings.classifier_steps, settings.seed)
    at_level = np.array([condition.level.value == args.level for condition in test.conditions])
    normal = at_level & np.array([condition.pattern is Pattern.NORMAL for condition in test.conditions])
    left = at_level & np.array([condition.pattern is Pattern.UNILATERAL and condition.side is Side.LEFT
                                for condition in test.conditions])
    figure, axes = pyplot().subplots(2, 2, figsize=(9, 8))
    for row, (name, slices) in enumerate((("real", test), ("synthetic", synthetic))):
        mild = left & (np.abs(measure(slices).values["AI"]) < MODERATE_AI)
        normal_mean = slices.counts[normal].mean(axis=0)
        difference = (slices.counts[mild].mean(axis=0) - normal_mean) / normal_mean.max()
        image = axes[row, 0].imshow(difference, cmap="RdBu_r", vmin=-DIFFERENCE_RANGE, vmax=DIFFERENCE_RANGE)
        axes[row, 0].set_title(f"{name} {args.level}:\nmild unilateral-left (n={int(mild.sum())}) - normal", fontsize=10)
        figure.colorbar(image, ax=axes[row, 0], label="share of the normal mean's maximum")
        image = axes[row, 1].imshow(saliency(classifier, to_inputs(slices.counts[mild], scale), "pattern").numpy(),
                                    cmap="magma")
        axes[row, 1].set_title(f"saliency of the synthetic-trained\nclassifier on these {name} slices", fontsize=10)
        figure.colorbar(image, ax=axes[row, 1])
    for axis in axes.ravel():
        axis.set_xticks([]), axis.set_yticks([])
        axis.set_xlabel("R <-> L")
    figure.suptitle(f"{model.name}: what a mild unilateral condition changes, real against synthetic")
    save_figure(figure, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
