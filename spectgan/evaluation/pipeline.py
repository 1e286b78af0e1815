"""The evaluation of synthetic slice sources against a cohort, on arrays: the real side is prepared once
(``prepare_real``), then every source (a model bundle, or arrays standing in for one) is evaluated against it
(``evaluate_source``).

"Real" is always the held-out test split. The train split only trains the real-data classifiers and is the
reference of the memorization test; it is never compared with synthetic slices as "real".
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property

import numpy as np
import torch
from tqdm import tqdm

from spectgan.conditions import Condition, Level, Pattern, valid_conditions
from spectgan.errors import SpectganError
from spectgan.evaluation.data import SliceSet, SyntheticSource, class_indices
from spectgan.evaluation.defects import (SeverityControl, TerritoryClassifier, accuracy_breakdown, asymmetry_by_pattern,
                                         control_grid, train_territory_classifier)
from spectgan.evaluation.features import CONDITION_HEADS, SliceClassifier, classify, to_inputs, train_classifier
from spectgan.evaluation.metrics import (condition_accuracy, frechet_distance, kernel_distance, memorization,
                                         nearest_distances, precision_recall, two_sample_test)
from spectgan.evaluation.statistics import MeasuredSlices, measure, paper_table
from spectgan.evaluation.texture import SpectrumComparison, background_level, background_mask, compare_spectra

SEEDS_PER_RUN = 100  # condition i of run seed s is generated from seed s * SEEDS_PER_RUN + i
CONTROL_SEED = SEEDS_PER_RUN - 1  # ... and the controllability grid from s * SEEDS_PER_RUN + CONTROL_SEED
REFERENCE_NAME = "train split (reference)"  # the train split compared with the test split like a source


@dataclass(frozen=True)
class EvaluationSettings:
    """How much work an evaluation does. Classifiers train for a number of mini-batches (their cost does not grow
    with the cohort); ``per_condition_cap`` keeps at most that many slices of each condition in both splits (None:
    all). The controllability grid of a model with defect axes requests ``control_severities`` severities across
    its range, each ``control_repeats`` times per level, territory and side. ``mode`` names the settings in the
    report."""

    mode: str = "full"
    classifier_steps: int = 900
    c2st_steps: int = 400
    c2st_folds: int = 5
    per_condition_cap: int | None = None
    control_severities: int = 8
    control_repeats: int = 3
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


FULL = EvaluationSettings()
QUICK = EvaluationSettings(mode="quick", classifier_steps=40, c2st_steps=30, c2st_folds=2, per_condition_cap=8,
                           control_severities=4, control_repeats=1)

REAL_STAGES = 1  # stages of prepare_real
SOURCE_STAGES = 8  # stages of evaluate_source
NO_DEFECT_AXES = "no defect axes"  # why controllability and territory recognition do not apply to a source


class Stages:
    """A progress bar over named stages that also records the seconds each took."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = tqdm(total=total, unit="stage", dynamic_ncols=True, disable=not enabled)
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        self.bar.set_description(name)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 2)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


@dataclass
class RealDomain:
    """The real side, prepared once: the train split's inputs and condition classifier, per test slice its MC, LR
    and AI, domain features, the classifier's logits and its distance to the nearest train slice, and the paper table
    of the train split against the test split (what two real samples of the cohort score)."""

    train: SliceSet
    test: MeasuredSlices
    count_scale: float
    pixel_mm: float
    settings: EvaluationSettings
    train_inputs: torch.Tensor
    test_inputs: torch.Tensor
    classifier: SliceClassifier
    test_features: torch.Tensor
    test_logits: dict[str, torch.Tensor]
    test_to_train: np.ndarray
    reference_table: list[dict]
    level_classifiers: dict[tuple[Level, ...], SliceClassifier] = field(default_factory=dict)

    def classifier_at(self, levels: tuple[Level, ...]) -> SliceClassifier:
        """The condition classifier trained on the real train split at ``levels`` only (made once per level set)."""
        if levels == self.train.present_levels():
            return self.classifier
        if levels not in self.level_classifiers:
            subset = np.isin(self.train.levels, [level.value for level in levels])
            self.level_classifiers[levels] = train_classifier(
                self.train_inputs[subset], class_indices(self.train.take(subset).conditions), CONDITION_HEADS,
                self.settings.classifier_steps, self.settings.seed)
        return self.level_classifiers[levels]

    @cached_property
    def territory_classifier(self) -> TerritoryClassifier | None:
        """The territory classifier trained on the real train split's unilateral slices (made on first use; None
        when the cohort records no territory)."""
        return train_territory_classifier(self.train_inputs, self.train, self.settings.classifier_steps,
                                          self.settings.seed)


def prepare_real(train: SliceSet, test: SliceSet, count_scale: float, pixel_mm: float,
                 settings: EvaluationSettings, stages: Stages) -> RealDomain:
    """Cap both splits, train the condition classifier on train, and measure and describe every test slice."""
    train, test = train.capped(settings.per_condition_cap), test.capped(settings.per_condition_cap)
    if train.counts.shape[1:] != test.counts.shape[1:]:
        raise SpectganError(f"train slices are {train.counts.shape[1:]} but test slices {test.counts.shape[1:]}")
    with stages.stage("real: classifier, MC and LR, distances"):
        train_inputs, test_inputs = to_inputs(train.counts, count_scale), to_inputs(test.counts, count_scale)
        classifier = train_classifier(train_inputs, class_indices(train.conditions), CONDITION_HEADS,
                                      settings.classifier_steps, settings.seed)
        features, logits = classify(classifier, test_inputs)
        test_measured = measure(test)
        return RealDomain(train, test_measured, count_scale, pixel_mm, settings, train_inputs, test_inputs, classifier,
                          features, logits, nearest_distances(test_inputs, train_inputs),
                          paper_table(REFERENCE_NAME, test_measured, measure(train)))


@dataclass(frozen=True)
class SourceEvaluation:
    """One source's results: ``summary`` is its part of evaluation.json, the rest feeds the figures."""

    name: str
    summary: dict
    real: MeasuredSlices
    synthetic: MeasuredSlices
    synthetic_distances: np.ndarray
    reference_distances: np.ndarray
    spectra: dict[str, SpectrumComparison]  # per level
    c2st_saliency: np.ndarray  # [H, W]: where the C2ST critic looks
    severity_control: SeverityControl | None  # None: the source has no defect axes


def condition_seed(run_seed: int, condition: Condition) -> int:
    """The sampling seed of one condition in a run: the same for every bundle, different for every condition."""
    return run_seed * SEEDS_PER_RUN + valid_conditions().index(condition)


def synthesize(source: SyntheticSource, requested: SliceSet, run_seed: int) -> SliceSet:
    """As many slices of each condition as ``requested`` holds, each condition from its own seed."""
    arrays, conditions = [], []
    for condition, count in requested.condition_counts().items():
        arrays.append(np.asarray(source.generate(condition, count, condition_seed(run_seed, condition)),
                                 dtype=np.float32))
        conditions += [condition] * count
    synthetic = SliceSet(np.concatenate(arrays), tuple(conditions))
    if synthetic.counts.shape[1:] != requested.counts.shape[1:]:
        raise SpectganError(f"{source.name} makes {synthetic.counts.shape[1]} x {synthetic.counts.shape[2]} slices "
                            f"but the cohort's are {requested.counts.shape[1]} x {requested.counts.shape[2]}; "
                            "evaluate a model on a cohort of its own matrix")
    return synthetic


def evaluate_source(source: SyntheticSource, real: RealDomain, settings: EvaluationSettings,
                    stages: Stages) -> SourceEvaluation:
    """Every metric of one source at the levels it shares with the test split."""
    test_levels = real.test.slices.present_levels()
    levels = tuple(level for level in test_levels if level in source.levels)
    if not levels:
        raise SpectganError(f"{source.name} makes levels {', '.join(lv.value for lv in source.levels)} but the "
                            f"test split has only {', '.join(lv.value for lv in test_levels)}")
    in_levels = np.isin(real.test.slices.levels, [level.value for level in levels])
    real_test = real.test.take(in_levels)
    real_inputs, real_features = real.test_inputs[in_levels], real.test_features[in_levels]
    name = source.name
    with stages.stage(f"{name}: sample"):
        synthetic = synthesize(source, real_test.slices, settings.seed)
        synthetic_inputs = to_inputs(synthetic.counts, real.count_scale)
    with stages.stage(f"{name}: MC and LR"):
        synthetic_measured = measure(synthetic)
        table = paper_table(name, real_test, synthetic_measured)
    with stages.stage(f"{name}: C2ST"):
        c2st = two_sample_test(real_inputs, synthetic_inputs, settings.c2st_folds, settings.c2st_steps,
                               settings.seed, with_saliency=True)
        c2st_saliency = c2st.pop("saliency")
    with stages.stage(f"{name}: power spectrum and background"):
        spectra, background = texture(real_test.slices, synthetic, real.pixel_mm, real.count_scale)
    with stages.stage(f"{name}: FID, KID, precision, recall, conditions"):
        features, logits = classify(real.classifier, synthetic_inputs)
        kid, kid_sd = kernel_distance(real_features, features, settings.seed)
        precision, recall = precision_recall(real_features, features)
        conditional = condition_accuracy(logits, synthetic.conditions)
        real_conditional = condition_accuracy({head: values[in_levels] for head, values in real.test_logits.items()},
                                              real_test.slices.conditions)
        fid = frechet_distance(real_features, features)
    with stages.stage(f"{name}: TSTR and TRTR"):
        synthetic_trained = train_classifier(synthetic_inputs, class_indices(synthetic.conditions), CONDITION_HEADS,
                                             settings.classifier_steps, settings.seed)
        logits = {"tstr": classify(synthetic_trained, real_inputs)[1],
                  "trtr": classify(real.classifier_at(levels), real_inputs)[1]}
        tstr, trtr = (condition_accuracy(logits[kind], real_test.slices.conditions) for kind in ("tstr", "trtr"))
        tstr_breakdown = accuracy_breakdown({kind: values["pattern"].argmax(dim=1).numpy()
                                             for kind, values in logits.items()}, real_test.slices)
    with stages.stage(f"{name}: defect size, severity and territory"):
        asymmetry = asymmetry_by_pattern(real_test, synthetic_measured)
        controllability, territory, severity_control = requested_defects(source, real, real_test, real_inputs, levels,
                                                                          settings)
    with stages.stage(f"{name}: memorization"):
        synthetic_distances = nearest_distances(synthetic_inputs, real.train_inputs)
        reference_distances = real.test_to_train[in_levels]
        memorized = memorization(synthetic_distances, reference_distances)
    summary = {
        "levels": [level.value for level in levels], "n_real": len(real_test.slices), "n_synth": len(synthetic),
        "paper_table": table,
        "c2st_accuracy": c2st["accuracy"], "c2st": c2st,
        "fid_domain": fid, "kid_domain": kid, "kid_domain_sd": kid_sd, "precision": precision, "recall": recall,
        "conditional_accuracy": conditional["accuracy"], "conditional_n": conditional["n"],
        "confusion_matrices": conditional["confusion"],
        "classifier_accuracy_real_test": real_conditional["accuracy"],
        "tstr": tstr["accuracy"]["pattern"], "trtr": trtr["accuracy"]["pattern"],
        "tstr_heads": tstr["accuracy"], "trtr_heads": trtr["accuracy"], "tstr_breakdown": tstr_breakdown,
        "defect_asymmetry": asymmetry, "controllability": controllability, "territory_recognition": territory,
        "memorization_fraction": memorized["fraction"], "memorization": memorized,
        "spectrum_max_gap_decades": max(spectrum.max_gap_decades for spectrum in spectra.values()),
        "spectrum": {level: spectrum.to_dict() for level, spectrum in spectra.items()},
        "background": background,
    }
    return SourceEvaluation(name, summary, real_test, synthetic_measured, synthetic_distances, reference_distances,
                            spectra, c2st_saliency, severity_control)


def requested_defects(source: SyntheticSource, real: RealDomain, real_test: MeasuredSlices, real_inputs: torch.Tensor,
                      levels: tuple[Level, ...], settings: EvaluationSettings
                      ) -> tuple[dict, dict, SeverityControl | None]:
    """Controllability and territory recognition of a source with defect axes, on unilateral slices it makes for the
    requests of ``control_grid`` at ``levels``: the summaries of both (``SeverityControl.summary``, and the real
    territory classifier's accuracy on the real unilateral test slices and on the synthetic ones) and the severity
    data of the figure. ``real_test`` and ``real_inputs`` [N, 1, H, W] are the test split at ``levels``. Without
    defect axes, or without a territory at these levels, both summaries say why they do not apply."""
    axes = source.defect_axes
    grid = control_grid(axes, levels, settings.control_severities, settings.control_repeats) if axes else []
    if not grid:
        reason = NO_DEFECT_AXES if axes is None else f"no territory at {', '.join(lv.value for lv in levels)}"
        return {"applicable": False, "reason": reason}, {"applicable": False, "reason": reason}, None
    made = SliceSet(np.asarray(source.generate_lesioned(grid, settings.seed * SEEDS_PER_RUN + CONTROL_SEED),
                               dtype=np.float32), tuple(condition.base for condition in grid),
                    tuple(condition.lesions for condition in grid))
    unilateral = real_test.slices.patterns == Pattern.UNILATERAL.value
    real_unilateral = real_test.take(unilateral)
    control = SeverityControl(real_unilateral.slices.severities(), np.abs(real_unilateral.values["AI"]),
                              made.severities(), np.abs(measure(made).values["AI"]))
    controllability = {"applicable": True, "n": len(grid), "severity_range": list(axes.severity_range),
                       "severities": settings.control_severities, "repeats": settings.control_repeats,
                       **control.summary()}
    classifier = real.territory_classifier
    territory = ({"applicable": False, "reason": "the cohort records no territory"} if classifier is None else
                 {"applicable": True,
                  "territories": {level: list(names) for level, names in classifier.at_level.items()},
                  "real": classifier.accuracy(real_inputs[torch.from_numpy(unilateral)], real_unilateral.slices),
                  "synthetic": classifier.accuracy(to_inputs(made.counts, real.count_scale), made)})
    return controllability, territory, control


def texture(real: SliceSet, synthetic: SliceSet, pixel_mm: float, count_scale: float
            ) -> tuple[dict[str, SpectrumComparison], dict]:
    """Per level, the power spectra of real and synthetic slices; over all levels, the counts outside the head
    (each level's own mask from its real slices) and their ratio synthetic / real."""
    spectra, outside = {}, {"real": [], "synthetic": []}
    for level in real.present_levels():
        real_counts, synthetic_counts = real.at_levels([level]).counts, synthetic.at_levels([level]).counts
        spectra[level.value] = compare_spectra(real_counts, synthetic_counts, pixel_mm, count_scale)
        mask = background_mask(real_counts)
        outside["real"].append(real_counts[:, mask].ravel())
        outside["synthetic"].append(synthetic_counts[:, mask].ravel())
    background = {kind: background_level(np.concatenate(values)) for kind, values in outside.items()}
    real_mean = background["real"]["mean"]
    background["ratio"] = background["synthetic"]["mean"] / real_mean if real_mean > 0 else float("inf")
    return spectra, background
