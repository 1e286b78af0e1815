"""Metrics of a synthetic slice set against real slices: the classifier two-sample test (C2ST), FID and KID on
domain features, k-NN precision and recall, condition accuracy of a classifier and nearest-neighbour memorization.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
from monai.metrics import FIDMetric
from scipy import stats
from scipy.linalg import LinAlgWarning
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold

from spectgan.conditions import Condition, Level, Pattern, Side
from spectgan.evaluation.data import class_indices
from spectgan.evaluation.features import classify, saliency, train_classifier
from spectgan.evaluation.statistics import accuracy_interval

KID_SUBSET_SIZE = 100
KID_SUBSETS = 50
NEIGHBOURS = 3  # k of the k-NN manifold estimate of precision and recall
MEMORIZATION_PERCENTILE = 1.0  # synthetic slices closer to the train split than this percentile of real test slices
DISTANCE_CHUNK = 256


def frechet_distance(real_features: torch.Tensor, synthetic_features: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (``monai.metrics.FIDMetric``).

    Covariances of ReLU features are often singular (units that never fire); scipy's warning about that is silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # monai passes sqrtm's deprecated ``disp``
        return float(FIDMetric()(synthetic_features, real_features))


def kernel_distance(real_features: torch.Tensor, synthetic_features: torch.Tensor, seed: int,
                    subset_size: int = KID_SUBSET_SIZE, subsets: int = KID_SUBSETS) -> tuple[float, float]:
    """Kernel inception distance (Binkowski et al. 2018) on given features: the unbiased MMD^2 with the cubic
    polynomial kernel (x.y / d + 1)^3, mean and standard deviation over random subsets of both sets."""
    size = min(subset_size, len(real_features), len(synthetic_features))
    if size < 2:
        raise ValueError("the kernel distance needs at least two feature vectors on each side")
    dimension = real_features.shape[1]
    rng = torch.Generator().manual_seed(seed)

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T / dimension + 1.0) ** 3

    def off_diagonal_mean(matrix: torch.Tensor) -> torch.Tensor:
        return (matrix.sum() - matrix.diagonal().sum()) / (size * (size - 1))

    estimates = []
    for _ in range(subsets):
        real = real_features[torch.randperm(len(real_features), generator=rng)[:size]].double()
        synthetic = synthetic_features[torch.randperm(len(synthetic_features), generator=rng)[:size]].double()
        estimates.append(float(off_diagonal_mean(kernel(real, real)) + off_diagonal_mean(kernel(synthetic, synthetic))
                               - 2.0 * kernel(real, synthetic).mean()))
    return float(np.mean(estimates)), float(np.std(estimates))


def precision_recall(real_features: torch.Tensor, synthetic_features: torch.Tensor, k: int = NEIGHBOURS
                     ) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the share of synthetic samples inside the real
    manifold (the union of balls reaching each real sample's k-th nearest real neighbour), and vice versa."""

    def covered(queries: torch.Tensor, support: torch.Tensor) -> float:
        neighbours = min(k, len(support) - 1)
        radii = torch.cdist(support, support).kthvalue(neighbours + 1, dim=1).values  # the first is itself (0)
        return float((torch.cdist(queries, support) <= radii[None]).any(dim=1).double().mean())

    real, synthetic = real_features.double(), synthetic_features.double()
    return covered(synthetic, real), covered(real, synthetic)


def two_sample_test(real_inputs: torch.Tensor, synthetic_inputs: torch.Tensor, folds: int, steps: int,
                    seed: int, with_saliency: bool = False) -> dict:
    """Classifier two-sample test: a CNN learns real from synthetic; cross-validated accuracy (0.5 is ideal), its
    exact 95 % interval and the one-sided binomial P value of doing better than chance.

    Both sets must be of one size (chance is then 0.5 whatever the critic predicts). With ``with_saliency`` the
    result also holds ``saliency`` [H, W] (numpy): the held-out slices' mean absolute gradient of the critic's
    margin, i.e. where it looks."""
    if len(real_inputs) != len(synthetic_inputs):
        raise ValueError(f"the two-sample test needs sets of one size, got {len(real_inputs)} real and "
                         f"{len(synthetic_inputs)} synthetic inputs")
    inputs = torch.cat([real_inputs, synthetic_inputs])
    labels = np.r_[np.zeros(len(real_inputs), dtype=np.int64), np.ones(len(synthetic_inputs), dtype=np.int64)]
    folds = min(folds, len(real_inputs))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    correct, looked_at = 0, torch.zeros(inputs.shape[-2:])
    for fold, (train, held_out) in enumerate(splitter.split(labels, labels)):
        model = train_classifier(inputs[train], {"synthetic": labels[train]}, {"synthetic": 2}, steps, seed + fold)
        _, logits = classify(model, inputs[held_out])
        correct += int((logits["synthetic"].argmax(dim=1).numpy() == labels[held_out]).sum())
        if with_saliency:
            looked_at += saliency(model, inputs[held_out], "synthetic") * len(held_out)
    total = len(labels)
    result = {"accuracy": correct / total, "ci95": list(accuracy_interval(correct, total)),
              "p_better_than_chance": float(stats.binomtest(correct, total, 0.5, alternative="greater").pvalue),
              "n_real": len(real_inputs), "n_synth": len(synthetic_inputs), "folds": folds, "steps_per_fold": steps}
    if with_saliency:
        result["saliency"] = (looked_at / total).numpy()
    return result


def condition_accuracy(logits: dict[str, torch.Tensor], conditions: Sequence[Condition]) -> dict:
    """Accuracy and confusion matrices of a condition classifier's predictions against the given conditions.

    Side is scored on the unilateral slices only, as left versus right (a pattern error is counted under pattern).
    """
    truth = class_indices(conditions)
    predicted = {name: logits[name].argmax(dim=1).numpy() for name in ("level", "pattern")}
    predicted["side"] = 1 + logits["side"][:, 1:].argmax(dim=1).numpy()
    scored = {"level": np.ones(len(conditions), dtype=bool), "pattern": np.ones(len(conditions), dtype=bool),
              "side": truth["side"] > 0}
    labels = {"level": list(range(len(Level))), "pattern": list(range(len(Pattern))),
              "side": list(range(1, len(Side) + 1))}
    result: dict[str, dict] = {"accuracy": {}, "n": {}, "confusion": {}}
    for name, mask in scored.items():
        hits = predicted[name][mask] == truth[name][mask]
        result["accuracy"][name] = float(hits.mean()) if mask.any() else math.nan
        result["n"][name] = int(mask.sum())
        result["confusion"][name] = confusion_matrix(truth[name][mask], predicted[name][mask],
                                                     labels=labels[name]).tolist()
    return result


def nearest_distances(queries: torch.Tensor, references: torch.Tensor) -> np.ndarray:
    """Root-mean-square pixel difference (in count-scale units) of each query slice to its nearest reference slice."""
    flat_references = references.flatten(1).double()
    nearest = [torch.cdist(chunk, flat_references).min(dim=1).values
               for chunk in queries.flatten(1).double().split(DISTANCE_CHUNK)]
    return (torch.cat(nearest) / math.sqrt(flat_references.shape[1])).numpy()


def memorization(synthetic_distances: np.ndarray, reference_distances: np.ndarray,
                 percentile: float = MEMORIZATION_PERCENTILE) -> dict:
    """Share of synthetic slices nearer to the train split than ``percentile`` % of real test slices are (a
    generator that makes new subjects scores about ``percentile`` %; copies of training slices score 100 %)."""
    threshold = float(np.percentile(reference_distances, percentile))
    return {"fraction": float(np.mean(synthetic_distances < threshold)), "threshold": threshold,
            "percentile": percentile, "median_synthetic": float(np.median(synthetic_distances)),
            "median_reference": float(np.median(reference_distances))}
