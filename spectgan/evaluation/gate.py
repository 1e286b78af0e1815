"""The quality gate before a retrained model is published: the candidate is evaluated beside the served version on
the training cohort's held-out test split (``report.run_evaluation`` in its quick mode, both on the same slices and
seeds), and passes only if it is not worse than the served version on any measure beyond its 95 % interval.

Measures (``GATE_MEASURES`` plus one per pattern for the defect size): the C2ST accuracy (lower is better), TSTR
pattern accuracy, the level and side accuracy of the real-data classifier on synthetic slices (higher is better), the
memorization fraction (lower is better), and per pattern the Kolmogorov-Smirnov distance between synthetic and real
|AI| (lower is better). The intervals are the C2ST's own, exact (Clopper-Pearson) ones of the accuracies and
fractions, and the KS distance +- its 95 % critical value. A candidate is *worse beyond the interval* on a measure
when its whole interval lies on the worse side of the served version's value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from spectgan.evaluation.data import BundleSource
from spectgan.evaluation.pipeline import QUICK, EvaluationSettings
from spectgan.evaluation.report import run_evaluation
from spectgan.evaluation.statistics import accuracy_interval

KS_CRITICAL_95 = 1.358  # c(alpha) of the two-sample KS test at alpha 0.05: D_crit = c sqrt((n + m) / (n m))
CANDIDATE, SERVED = "candidate", "served"  # the sources' names in the gate's evaluation


@dataclass(frozen=True)
class Measure:
    """One measure of the gate: both values, the candidate's 95 % interval, which way is better, the verdict."""

    name: str
    candidate: float
    served: float
    ci95: tuple[float, float]
    higher_is_better: bool

    @property
    def worse(self) -> bool:
        """True when the candidate's whole interval lies on the worse side of the served value."""
        return self.ci95[1] < self.served if self.higher_is_better else self.ci95[0] > self.served

    def to_dict(self) -> dict:
        return {**asdict(self), "ci95": list(self.ci95), "worse": self.worse}


@dataclass(frozen=True)
class GateVerdict:
    """What the gate found: ``passed`` unless a measure is worse beyond its interval (``failed`` names them)."""

    measures: tuple[Measure, ...]
    served_version: str | None  # None: there was no served version to compare with (the first one passes)
    report: str | None  # the evaluation report, relative to the candidate bundle

    @property
    def failed(self) -> list[str]:
        return [measure.name for measure in self.measures if measure.worse]

    @property
    def passed(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line: passed, or which measures failed with both values."""
        if self.served_version is None:
            return "passed: no served version to compare with"
        if self.passed:
            return f"passed: not worse than the served version {self.served_version} on any of " \
                   f"{len(self.measures)} measures"
        worse = "; ".join(f"{m.name} {m.candidate:.3f} (95 % CI {m.ci95[0]:.3f}-{m.ci95[1]:.3f}) against "
                          f"{m.served:.3f}" for m in self.measures if m.worse)
        return f"failed: worse than the served version {self.served_version} on {worse}"

    def to_dict(self) -> dict:
        return {"passed": self.passed, "failed": self.failed, "served_version": self.served_version,
                "summary": self.summary(), "report": self.report,
                "measures": [measure.to_dict() for measure in self.measures]}


def _proportion(name: str, candidate: float | None, served: float | None, n: int, higher_is_better: bool
                ) -> list[Measure]:
    """A measure that is a share of ``n`` slices (none when either value is missing)."""
    if candidate is None or served is None or not n:
        return []
    return [Measure(name, candidate, served, accuracy_interval(round(candidate * n), n), higher_is_better)]


def gate_measures(candidate: dict, served: dict) -> tuple[Measure, ...]:
    """The gate's measures from two sources' summaries of one evaluation (``evaluation.json``'s ``bundles``)."""
    measures = [Measure("c2st", candidate["c2st_accuracy"], served["c2st_accuracy"],
                        tuple(candidate["c2st"]["ci95"]), higher_is_better=False)]
    measures += _proportion("tstr", candidate["tstr"], served["tstr"], candidate["n_real"], True)
    for head in ("level", "side"):
        measures += _proportion(f"{head}_accuracy", candidate["conditional_accuracy"].get(head),
                                served["conditional_accuracy"].get(head), candidate["conditional_n"].get(head, 0),
                                True)
    measures += _proportion("memorization", candidate["memorization_fraction"], served["memorization_fraction"],
                            candidate["n_synth"], False)
    for pattern, asymmetry in candidate["defect_asymmetry"].items():
        if pattern not in served["defect_asymmetry"]:
            continue
        distance, n = asymmetry["ks_d_abs_ai"], asymmetry["n"]
        margin = KS_CRITICAL_95 * math.sqrt((n["real"] + n["synthetic"]) / (n["real"] * n["synthetic"]))
        measures.append(Measure(f"abs_ai_{pattern}", distance, served["defect_asymmetry"][pattern]["ks_d_abs_ai"],
                                (max(0.0, distance - margin), min(1.0, distance + margin)), False))
    return tuple(measures)


def quality_gate(candidate_dir: Path, served_dir: Path, cohort_dir: Path, report_dir: Path,
                 settings: EvaluationSettings = QUICK) -> GateVerdict:
    """Evaluate the candidate bundle beside the served one on the cohort's test split (report, evaluation.json and
    figures into ``report_dir``, inside the candidate bundle) and judge it."""
    served_version = BundleSource(served_dir).model.describe()["version"]
    result = run_evaluation([BundleSource(candidate_dir, CANDIDATE), BundleSource(served_dir, SERVED)], cohort_dir,
                            report_dir, settings, progress=False)
    measures = gate_measures(result["bundles"][CANDIDATE], result["bundles"][SERVED])
    return GateVerdict(measures, served_version, str((report_dir / "report.md").relative_to(candidate_dir)))
