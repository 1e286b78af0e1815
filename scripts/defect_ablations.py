"""The defect-realism ablations of model A on a cohort's held-out test split: for each bundle or training run, one
synthetic slice per real test slice of the same condition (lesions drawn as an unqualified request draws them), and
for a model with defect axes one more with the real slice's own territory and severity.

Reported per pattern, with the evaluation's own functions (``spectgan.evaluation.defects``): |AI| quantiles, the
mild share (|AI| < 5 %) and the KS P of |AI|; and, given the real slices' lesions, Spearman(severity, |AI|) and the line
|AI| = slope x severity + offset of the
synthetic slices beside the real ones', and the correlation of each synthetic slice's |AI| with its real twin's.

    python scripts/defect_ablations.py --cohort sample_data/cohorts/default --out runs/ablations/default.json \
        models/spect_fastgan_A runs/ablations/A_axes_ac1 ...

A run folder (``checkpoint.pt``) is exported to a bundle beside the output first.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

from spectgan.evaluation.data import SliceSet, read_split
from spectgan.evaluation.defects import MILD_AI, asymmetry_by_pattern, linear_fit, spearman
from spectgan.evaluation.statistics import measure
from spectgan.models.fastgan.bundle import export_bundle
from spectgan.models.synthesizer import load_synthesizer

SEED = 11


def bundle_of(target: Path, work: Path) -> Path:
    """A bundle folder: ``target`` itself, or the export of the training run in it."""
    if not (target / "checkpoint.pt").is_file():
        return target
    bundle = work / f"bundle_{target.name}"
    export_bundle(target, bundle)
    return bundle


def twins(real: SliceSet, bundle: Path, own_lesions: bool) -> SliceSet:
    """One synthetic slice per real slice of the model's levels: its condition, with the real lesions or drawn."""
    model = load_synthesizer(bundle)
    real = real.at_levels(model.levels)
    conditions = real.labelled_conditions() if own_lesions else real.conditions
    return SliceSet(model.sample(conditions, SEED, {}), real.conditions,
                    tuple(condition.lesions for condition in model.resolve(conditions, SEED)))


def controllability(real: SliceSet, own: SliceSet) -> dict:
    """Given the real slices' own lesions: Spearman(severity, |AI|) real and synthetic, and r(|AI| real, synthetic)
    per defect pattern."""
    real_ai, own_ai = np.abs(measure(real).values["AI"]), np.abs(measure(own).values["AI"])
    result = {}
    for pattern in ("unilateral", "bilateral"):
        mask = real.patterns == pattern
        severities = real.severities()[mask]
        keep = np.isfinite(real_ai[mask]) & np.isfinite(own_ai[mask])
        result[pattern] = {"spearman_real": spearman(severities, real_ai[mask])["rho"],
                           "spearman_synthetic": spearman(severities, own_ai[mask])["rho"],
                           "r_twins": float(stats.pearsonr(real_ai[mask][keep], own_ai[mask][keep]).statistic),
                           "fit_real": linear_fit(severities, real_ai[mask]),
                           "fit_synthetic": linear_fit(severities, own_ai[mask])}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON file of the results")
    parser.add_argument("targets", nargs="+", type=Path, help="bundle folders or training runs")
    args = parser.parse_args()
    real = read_split(args.cohort, "test")
    results = {}
    for target in args.targets:
        bundle = bundle_of(target, args.out.parent)
        drawn = twins(real, bundle, own_lesions=False)
        subset = real.at_levels(load_synthesizer(bundle).levels)
        entry = {"asymmetry": asymmetry_by_pattern(measure(subset), measure(drawn))}
        if load_synthesizer(bundle).defect_axes() is not None:
            entry["controllability"] = controllability(subset, twins(real, bundle, own_lesions=True))
        results[target.name] = entry
        line = [f"{target.name}:"] + [
            f"{pattern} |AI| median {values['abs_ai']['real']['q50']:.1f} / {values['abs_ai']['synthetic']['q50']:.1f}"
            f", mild (< {MILD_AI:g} %) {values['mild_share']['real']:.0%} / {values['mild_share']['synthetic']:.0%}"
            f", KS P {values['ks_p_abs_ai']:.2g}" for pattern, values in entry["asymmetry"].items()]
        for pattern, values in entry.get("controllability", {}).items():
            line.append(f"{pattern} given the real lesions: Spearman {values['spearman_real']:.2f} / "
                        f"{values['spearman_synthetic']:.2f}, |AI| = slope x severity + offset: real "
                        f"{values['fit_real']['slope']:.1f} x + {values['fit_real']['offset']:.1f}, synthetic "
                        f"{values['fit_synthetic']['slope']:.1f} x + {values['fit_synthetic']['offset']:.1f}")
        print("\n  ".join(line), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
