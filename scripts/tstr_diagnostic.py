"""Why a pattern classifier trained on synthetic slices misses real defects (TSTR): the evaluation's TSTR, then the
same classifier with both sides changed in one way, each taking one suspected difference out of play.

    python scripts/tstr_diagnostic.py [--bundle models/spect_fastgan_A] [--cohort sample_data/cohorts/default] \
        [--evaluated-only] [--classifier-seeds N]

Synthetic slices: one per real test slice, of its condition and its own lesions (as the evaluation makes them, its
seed). Variants, applied to the synthetic training slices and the real test slices alike:
- as evaluated;
- smoothed (Gaussian, sigma 1.5 px): no noise texture, only coarse anatomy and perfusion;
- Hann-windowed: the image border weighed down to zero;
- batch norms re-estimated on the real test slices (a diagnosis, not an evaluation: it uses the test inputs).
Prints the pattern accuracy on the real test slices, overall and per pattern, beside the real-trained classifier's.
Then, for the classifier trained as evaluated: its accuracy on a second synthetic set (another seed), and on the
unilateral slices whose |AI| is below MODERATE_AI, synthetic against real: a classifier that finds mild synthetic
defects and misses mild real ones has learnt a mark the generator puts on the condition, not the defect.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from spectgan.cohorts.format import read_cohort_info
from spectgan.evaluation.data import SliceSet, class_indices, read_split
from spectgan.evaluation.defects import MODERATE_AI
from spectgan.evaluation.features import (CONDITION_HEADS, classify, recalibrate_batch_norm, to_inputs,
                                          train_classifier)
from spectgan.evaluation.pipeline import EvaluationSettings
from spectgan.evaluation.statistics import measure
from spectgan.models.synthesizer import load_synthesizer

SMOOTHING_PX = 1.5


def predicted_patterns(model, inputs) -> np.ndarray:
    return classify(model, inputs)[1]["pattern"].argmax(dim=1).numpy()


def mild_unilateral_accuracy(predicted: np.ndarray, slices: SliceSet) -> str:
    """Share of the unilateral slices with |AI| below MODERATE_AI that ``predicted`` calls unilateral."""
    unilateral = class_indices(slices.conditions)["pattern"] == 1
    chosen = unilateral & (np.abs(measure(slices).values["AI"]) < MODERATE_AI)
    return f"{np.mean(predicted[chosen] == 1):.1%} of {int(chosen.sum())}"


def pattern_accuracy(model, inputs, conditions) -> str:
    """Pattern accuracy overall and per true pattern."""
    predicted = predicted_patterns(model, inputs)
    truth = class_indices(conditions)["pattern"]
    parts = [f"all {np.mean(predicted == truth):.1%}"]
    for index, pattern in enumerate(("normal", "unilateral", "bilateral")):
        if np.any(truth == index):
            parts.append(f"{pattern} {np.mean(predicted[truth == index] == index):.1%}")
    return ", ".join(parts)


def classifier_spread(synthetic_inputs, real_test, conditions, settings: EvaluationSettings, seeds: int) -> str:
    """TSTR overall and per pattern of ``seeds`` classifiers trained on the synthetic slices from the evaluation's
    seed on: mean and SD over the seeds."""
    truth = class_indices(conditions)["pattern"]
    rows = []
    for seed in range(settings.seed, settings.seed + seeds):
        model = train_classifier(synthetic_inputs, class_indices(conditions), CONDITION_HEADS,
                                 settings.classifier_steps, seed)
        predicted = predicted_patterns(model, real_test)
        rows.append([np.mean(predicted == truth)] + [np.mean(predicted[truth == index] == index)
                                                     for index in range(3) if np.any(truth == index)])
    rows = np.array(rows) * 100
    names = ["all", "normal", "unilateral", "bilateral"][:rows.shape[1]]
    return f"over {seeds} classifier seeds: TSTR " + ", ".join(
        f"{name} {mean:.1f} +- {sd:.1f} %" for name, mean, sd in zip(names, rows.mean(0), rows.std(0, ddof=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/spect_fastgan_A"))
    parser.add_argument("--cohort", type=Path, default=Path("sample_data/cohorts/default"))
    parser.add_argument("--evaluated-only", action="store_true", help="only the variant as evaluated")
    parser.add_argument("--classifier-seeds", type=int, default=1, metavar="N",
                        help="as evaluated, also train N synthetic-trained classifiers from seeds after the "
                             "evaluation's and print their TSTR's mean and SD: one classifier's TSTR moves by a few "
                             "points with small changes of its training slices")
    args = parser.parse_args()
    settings = EvaluationSettings()
    model = load_synthesizer(args.bundle)
    train = read_split(args.cohort, "train").at_levels(model.levels)
    test = read_split(args.cohort, "test").at_levels(model.levels)
    synthetic = model.sample(test.labelled_conditions(), settings.seed, {})
    scale = float(read_cohort_info(args.cohort)["count_scale"])  # the cohort-wide scale the evaluation uses
    hann = np.hanning(test.counts.shape[-1])
    variants = {"as evaluated": lambda counts: counts,
                f"smoothed (sigma {SMOOTHING_PX} px)": lambda counts: ndimage.gaussian_filter(
                    counts, (0, SMOOTHING_PX, SMOOTHING_PX)),
                "Hann-windowed": lambda counts: counts * np.outer(hann, hann)}
    for name, change in list(variants.items())[:1 if args.evaluated_only else None]:
        real_train, real_test = to_inputs(change(train.counts), scale), to_inputs(change(test.counts), scale)
        synthetic_inputs = to_inputs(change(synthetic), scale)
        on_synthetic = train_classifier(synthetic_inputs, class_indices(test.conditions), CONDITION_HEADS,
                                        settings.classifier_steps, settings.seed)
        on_real = train_classifier(real_train, class_indices(train.conditions), CONDITION_HEADS,
                                   settings.classifier_steps, settings.seed)
        print(f"{name}: TSTR {pattern_accuracy(on_synthetic, real_test, test.conditions)}; "
              f"TRTR {pattern_accuracy(on_real, real_test, test.conditions)}", flush=True)
        if name == "as evaluated":
            second = SliceSet(model.sample(test.labelled_conditions(), settings.seed + 1, {}), test.conditions,
                              test.lesions)
            second_inputs = to_inputs(second.counts, scale)
            print(f"  on a second synthetic set: {pattern_accuracy(on_synthetic, second_inputs, test.conditions)}; "
                  f"unilateral with |AI| < {MODERATE_AI:g} % called unilateral: synthetic "
                  f"{mild_unilateral_accuracy(predicted_patterns(on_synthetic, second_inputs), second)}, real "
                  f"{mild_unilateral_accuracy(predicted_patterns(on_synthetic, real_test), test)}", flush=True)
            if args.classifier_seeds > 1:
                spread = classifier_spread(synthetic_inputs, real_test, test.conditions, settings,
                                           args.classifier_seeds)
                print(f"  {spread}", flush=True)
            recalibrate_batch_norm(on_synthetic, real_test)
            print(f"  batch norms re-estimated on the real test slices: TSTR "
                  f"{pattern_accuracy(on_synthetic.eval(), real_test, test.conditions)}", flush=True)


if __name__ == "__main__":
    main()
