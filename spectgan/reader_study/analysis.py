"""``spectgan reader-study analyze``: did the readers tell synthetic from real slices?

"Positive" is *synthetic* throughout: sensitivity is the share of synthetic cases called synthetic, specificity the
share of real cases called real. Proportions get exact (Clopper-Pearson) 95 % intervals and accuracy an exact
two-sided binomial test against 0.5 (scipy). The ROC uses each answer with its confidence on one 10-point scale
(``Answer.rating``); its AUC gets a 95 % interval from a bootstrap over cases (stratified by truth, every reader's
answers to a drawn case kept together). Agreement is Fleiss' kappa (statsmodels) over the cases every reader answered.
Practice answers are never analysed.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import binom, binomtest

from spectgan.conditions import Condition
from spectgan.errors import SpectganError
from spectgan.figures import pyplot, save_figure
from spectgan.files import atomic_write_bytes
from spectgan.reader_study.study import read_info, read_key, read_sheet

ALPHA = 0.05
TARGET_ACCURACY = 0.65  # the accuracy the stated power refers to
BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
RATINGS = 10


@dataclass(frozen=True)
class Trial:
    """One reader's answer to one study case, with the truth."""

    reader: str
    case: str
    condition: Condition
    truth_synthetic: bool
    said_synthetic: bool
    rating: int  # 1 = certainly real ... 10 = certainly synthetic
    seconds: float

    @property
    def correct(self) -> bool:
        return self.truth_synthetic == self.said_synthetic


def load_trials(study_dir: Path) -> list[Trial]:
    """Every reader's study answers joined with the key (practice answers left out)."""
    info, key = read_info(study_dir), read_key(study_dir)
    trials = []
    for reader in info["orders"]:
        for answer in read_sheet(study_dir, reader)["study"]:
            entry = key[answer.case]
            trials.append(Trial(reader, answer.case, entry.condition, entry.truth == "synthetic",
                                answer.answer == "synthetic", answer.rating, answer.seconds))
    return trials


def proportion(successes: int, n: int) -> dict:
    """A proportion with its exact (Clopper-Pearson) 95 % CI; value and bounds None when n is 0."""
    if n == 0:
        return {"k": 0, "n": 0, "value": None, "ci": [None, None]}
    interval = binomtest(successes, n).proportion_ci(confidence_level=1 - ALPHA, method="exact")
    return {"k": successes, "n": n, "value": successes / n, "ci": [interval.low, interval.high]}


def accuracy_summary(trials: list[Trial]) -> dict:
    """For one or more trials: accuracy (with P against 0.5, two-sided exact binomial), sensitivity and specificity for "synthetic"."""
    correct = sum(trial.correct for trial in trials)
    synthetic = [trial for trial in trials if trial.truth_synthetic]
    real = [trial for trial in trials if not trial.truth_synthetic]
    accuracy = proportion(correct, len(trials))
    accuracy["p_vs_half"] = binomtest(correct, len(trials), 0.5).pvalue
    return {"accuracy": accuracy,
            "sensitivity": proportion(sum(trial.said_synthetic for trial in synthetic), len(synthetic)),
            "specificity": proportion(sum(not trial.said_synthetic for trial in real), len(real))}


def rating_histograms(trials: list[Trial]) -> tuple[np.ndarray, np.ndarray]:
    """Per case: counts of each rating [cases, 10], and whether the case is synthetic [cases] (bool)."""
    cases = sorted({trial.case for trial in trials})
    index = {case: row for row, case in enumerate(cases)}
    counts = np.zeros((len(cases), RATINGS))
    synthetic = np.zeros(len(cases), dtype=bool)
    for trial in trials:
        counts[index[trial.case], trial.rating - 1] += 1
        synthetic[index[trial.case]] = trial.truth_synthetic
    return counts, synthetic


def auc_from_histograms(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """AUC (Mann-Whitney, ties count half) from rating counts [..., 10] of synthetic and real answers -> [...]."""
    below = np.cumsum(negative, axis=-1) - negative  # real answers rated strictly lower
    wins = (positive * (below + 0.5 * negative)).sum(axis=-1)
    return wins / (positive.sum(axis=-1) * negative.sum(axis=-1))


def roc(trials: list[Trial]) -> dict:
    """ROC points (false- and true-positive rates for "synthetic" at each rating threshold), AUC and its bootstrap
    95 % CI over cases; None when one truth is missing."""
    counts, synthetic = rating_histograms(trials)
    if synthetic.all() or not synthetic.any():
        return {"fpr": [], "tpr": [], "auc": None, "ci": [None, None]}
    positive, negative = counts[synthetic].sum(axis=0), counts[~synthetic].sum(axis=0)
    tpr = np.concatenate([[0.0], np.cumsum(positive[::-1]) / positive.sum()])
    fpr = np.concatenate([[0.0], np.cumsum(negative[::-1]) / negative.sum()])
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    drawn = [rng.integers(0, len(group), size=(BOOTSTRAP, len(group))) for group in
             (counts[synthetic], counts[~synthetic])]
    samples = auc_from_histograms(counts[synthetic][drawn[0]].sum(axis=1), counts[~synthetic][drawn[1]].sum(axis=1))
    low, high = np.percentile(samples, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(auc_from_histograms(positive, negative)),
            "ci": [float(low), float(high)]}


def fleiss(trials: list[Trial]) -> dict:
    """Fleiss' kappa of the real/synthetic calls over the cases that every reader answered (None for one reader)."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    readers = sorted({trial.reader for trial in trials})
    calls: dict[str, dict[str, int]] = {}
    for trial in trials:
        calls.setdefault(trial.case, {})[trial.reader] = int(trial.said_synthetic)
    complete = [[answers[reader] for reader in readers] for answers in calls.values() if len(answers) == len(readers)]
    if len(readers) < 2 or not complete:
        return {"kappa": None, "readers": len(readers), "cases": len(complete)}
    table, _ = aggregate_raters(np.array(complete), n_cat=2)
    return {"kappa": float(fleiss_kappa(table)), "readers": len(readers), "cases": len(complete)}


def binomial_power(n: int, accuracy: float = TARGET_ACCURACY, alpha: float = ALPHA) -> float:
    """Power of the two-sided exact binomial test against 0.5 with ``n`` independent answers when the true
    accuracy is ``accuracy``: the probability of the counts whose P is <= alpha. Under 0.5 the null distribution is
    symmetric, so each count's two-sided P (as ``binomtest`` gives it) is twice its smaller tail, at most 1."""
    counts = np.arange(n + 1)
    p_values = np.minimum(1.0, 2 * np.minimum(binom.cdf(counts, n, 0.5), binom.sf(counts - 1, n, 0.5)))
    return float(binom.pmf(counts[p_values <= alpha], n, accuracy).sum())


def seconds_summary(trials: list[Trial]) -> dict:
    seconds = np.array([trial.seconds for trial in trials])
    if not len(seconds):
        return {"median": None, "q1": None, "q3": None, "total_min": 0.0}
    q1, median, q3 = np.percentile(seconds, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "total_min": float(seconds.sum() / 60)}


def group_label(condition: Condition) -> str:
    return f"{condition.level.value}-{condition.pattern.value}"


def analyze_trials(trials: list[Trial], n_cases: int) -> dict:
    """Every number of the report, per reader and pooled, from the trials (``n_cases``: cases per reader)."""
    readers = sorted({trial.reader for trial in trials})
    groups = sorted({group_label(trial.condition) for trial in trials})

    def summary(subset: list[Trial]) -> dict:
        return {**accuracy_summary(subset), "roc": roc(subset), "seconds": seconds_summary(subset)}

    pooled = summary(trials)
    power = {"target_accuracy": TARGET_ACCURACY, "alpha": ALPHA,
             "per_reader": {"n": n_cases, "power": binomial_power(n_cases)},
             "pooled": {"n": len(trials), "power": binomial_power(len(trials))}}
    return {
        "readers": {reader: {**summary([t for t in trials if t.reader == reader]),
                             "answered": sum(t.reader == reader for t in trials)} for reader in readers},
        "pooled": pooled,
        "conditions": {group: accuracy_summary([t for t in trials if group_label(t.condition) == group])
                       for group in groups},
        "agreement": fleiss(trials),
        "power": power,
        "conclusion": conclusion(pooled["accuracy"], power),
    }


def conclusion(accuracy: dict, power: dict) -> str:
    """A plain-language conclusion that follows from the pooled accuracy, its CI and the design's power
    (``power``: the "power" entry of the results, per reader and pooled)."""
    value, (low, high), p = accuracy["value"], accuracy["ci"], accuracy["p_vs_half"]
    numbers = f"pooled accuracy {value:.2f}, 95 % CI {low:.2f}-{high:.2f}, P = {p:.2g} against 0.5, {accuracy['n']} answers"
    if low > 0.5:
        verdict = f"The readers told synthetic from real slices apart better than chance ({numbers})."
    elif high < 0.5:
        verdict = (f"The readers were right less often than chance ({numbers}): they systematically took one kind "
                   "of slice for the other, so the two were distinguishable, though not in the way they thought.")
    else:
        verdict = f"The readers did not tell synthetic from real slices apart at this sample size ({numbers})."
    reader, pooled = power["per_reader"], power["pooled"]
    design = (f"The design's power to detect an accuracy of {TARGET_ACCURACY} at alpha {ALPHA} (exact binomial test) "
              f"is {pooled['power']:.0%} for the pooled answers, treated as independent (which overstates it when "
              f"readers judge the same cases), and {reader['power']:.0%} for one reader's {reader['n']} cases")
    if low > 0.5 or high < 0.5:
        return f"{verdict} {design}."
    if reader["power"] >= 0.8:
        chance = f"even one reader's accuracy of {TARGET_ACCURACY} would very likely have been detected"
    elif pooled["power"] >= 0.8:
        chance = (f"an accuracy of {TARGET_ACCURACY} shared by all readers would likely have been detected, but one "
                  "reader's could have been missed")
    else:
        chance = f"a modest ability to tell them apart (accuracy {TARGET_ACCURACY}) could well have been missed"
    return f"{verdict} {design}, so {chance}."


def _share(entry: dict) -> str:
    """``0.53 (0.45-0.61)`` or an em dash for an empty proportion."""
    if entry["value"] is None:
        return "—"
    return f"{entry['value']:.2f} ({entry['ci'][0]:.2f}-{entry['ci'][1]:.2f})"


def _row(name: str, result: dict) -> str:
    accuracy, roc_result, seconds = result["accuracy"], result["roc"], result["seconds"]
    auc = "—" if roc_result["auc"] is None else f"{roc_result['auc']:.2f} ({roc_result['ci'][0]:.2f}-{roc_result['ci'][1]:.2f})"
    time = "—" if seconds["median"] is None else f"{seconds['median']:.1f} ({seconds['q1']:.1f}-{seconds['q3']:.1f})"
    return (f"| {name} | {accuracy['n']} | {_share(accuracy)} | {accuracy['p_vs_half']:.3g} | {_share(result['sensitivity'])} | "
            f"{_share(result['specificity'])} | {auc} | {time} |")


def report_markdown(results: dict, note: str = "") -> str:
    """The report: conclusion, per-reader and pooled table, agreement, per condition, power, figures."""
    readers = "\n".join(_row(reader, result) for reader, result in results["readers"].items())
    conditions = "\n".join(f"| {group} | {result['accuracy']['n']} | {_share(result['accuracy'])} | "
                           f"{_share(result['sensitivity'])} | {_share(result['specificity'])} |"
                           for group, result in results["conditions"].items())
    agreement, power = results["agreement"], results["power"]
    kappa = ("— (needs two or more readers)" if agreement["kappa"] is None else
             f"{agreement['kappa']:.2f} over {agreement['cases']} cases answered by all {agreement['readers']} readers")
    banner = f"> **{note}**\n\n" if note else ""
    return f"""# Reader study: real or synthetic?

{banner}## Conclusion
{results['conclusion']}

## Per reader and pooled
Positive = *synthetic*: sensitivity is the share of synthetic slices called synthetic, specificity the share of real
slices called real. Exact (Clopper-Pearson) 95 % CIs; P from the exact two-sided binomial test against 0.5; AUC from
the answers with their 1-5 confidence on one 10-point scale, 95 % CI from {BOOTSTRAP} bootstrap draws of cases.
Seconds per case as the reading page measured them, from the image on screen to the answer.

| reader | answers | accuracy (95 % CI) | P vs 0.5 | sensitivity | specificity | AUC (95 % CI) | s per case, median (IQR) |
|---|---|---|---|---|---|---|---|
{readers}
{_row('**pooled**', results['pooled'])}

## Agreement between readers
Fleiss' kappa of the real/synthetic calls: {kappa}.

## Per level x pattern (pooled over readers)
| condition | answers | accuracy (95 % CI) | sensitivity | specificity |
|---|---|---|---|---|
{conditions}

## Power of the design
Exact two-sided binomial test at alpha {power['alpha']} against 0.5, for a true accuracy of {power['target_accuracy']}:
{power['per_reader']['power']:.0%} per reader ({power['per_reader']['n']} cases each),
{power['pooled']['power']:.0%} pooled ({power['pooled']['n']} answers,
treated as independent).

## Figures
![ROC](roc.png)

![accuracy per reader and per condition](accuracy.png)
"""


def _save_noted(figure, path: Path, note: str) -> None:
    """Write ``figure`` with ``note`` (when given) wrapped above it, so that the figure carries it on its own."""
    if note:
        figure.suptitle(textwrap.fill(note, 90), fontsize=8, color="darkred", y=1.0, va="bottom")
    save_figure(figure, path)


def save_roc_figure(results: dict, path: Path, note: str = "") -> None:
    """ROC curves for "synthetic": one per reader (thin) and pooled (thick), with the chance line."""
    figure, axis = pyplot().subplots(figsize=(4.8, 4.6))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    for reader, result in results["readers"].items():
        if result["roc"]["auc"] is not None:
            axis.plot(result["roc"]["fpr"], result["roc"]["tpr"], marker=".", linewidth=1, alpha=0.7,
                      label=f"{reader}: AUC {result['roc']['auc']:.2f}")
    pooled = results["pooled"]["roc"]
    if pooled["auc"] is not None:
        axis.plot(pooled["fpr"], pooled["tpr"], color="black", linewidth=2.5,
                  label=f"pooled: AUC {pooled['auc']:.2f} ({pooled['ci'][0]:.2f}-{pooled['ci'][1]:.2f})")
    axis.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal", xlabel="1 - specificity (real called synthetic)",
             ylabel="sensitivity (synthetic called synthetic)", title="ROC: answer x confidence")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    _save_noted(figure, path, note)


def save_accuracy_figure(results: dict, path: Path, note: str = "") -> None:
    """Accuracy with its exact 95 % CI per reader (and pooled) and per level x pattern, against chance (0.5)."""
    panels = [("per reader", {**{r: v["accuracy"] for r, v in results["readers"].items()},
                              "pooled": results["pooled"]["accuracy"]}),
              ("per level x pattern (pooled)", {g: v["accuracy"] for g, v in results["conditions"].items()})]
    widths = [len(entries) + 1 for _, entries in panels]
    figure, axes = pyplot().subplots(1, 2, figsize=(2 + 0.95 * sum(widths), 4), gridspec_kw={"width_ratios": widths})
    for axis, (title, entries) in zip(axes, panels):
        names = [name for name, entry in entries.items() if entry["value"] is not None]
        values = np.array([entries[name]["value"] for name in names])
        bounds = np.array([entries[name]["ci"] for name in names]).reshape(-1, 2)
        axis.errorbar(range(len(names)), values, yerr=[values - bounds[:, 0], bounds[:, 1] - values], fmt="o",
                      capsize=4, color="black")
        axis.axhline(0.5, color="grey", linestyle=":", label="chance")
        axis.set_xticks(range(len(names)), [f"{name}\n(n={entries[name]['n']})" for name in names], fontsize=8)
        axis.set(xlim=(-0.5, len(names) - 0.5), ylim=(0, 1.02), ylabel="accuracy (95 % CI)", title=title)
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    _save_noted(figure, path, note)


def analyze_study(study_dir: Path, out: Path | None = None, note: str = "") -> Path:
    """Write report.md, results.json, roc.png and accuracy.png to ``out`` (default STUDY/analysis); returns it."""
    study_dir = Path(study_dir)
    out = Path(out) if out else study_dir / "analysis"
    trials = load_trials(study_dir)
    if not trials:
        raise SpectganError(f"{study_dir} has no study answers yet; nothing to analyse")
    n_cases = len(next(iter(read_info(study_dir)["orders"].values())))
    results = analyze_trials(trials, n_cases)
    atomic_write_bytes(out / "results.json", (json.dumps({"note": note, **results}, indent=1) + "\n").encode())
    save_roc_figure(results, out / "roc.png", note)
    save_accuracy_figure(results, out / "accuracy.png", note)
    atomic_write_bytes(out / "report.md", report_markdown(results, note).encode())
    return out
