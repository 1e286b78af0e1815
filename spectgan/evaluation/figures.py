"""PNG figures of an evaluation: MC and LR per cell (real beside synthetic), sample grids, confusion matrices, the
memorization histogram, power spectra per level, the map of where the C2ST critic looks, the |AI| distributions per
pattern and, for a model with defect axes, |AI| against severity."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spectgan.evaluation.data import CLASS_NAMES
from spectgan.evaluation.defects import MILD_AI, SEVERITY_EDGES, SeverityControl
from spectgan.figures import pyplot, save_figure
from spectgan.evaluation.pipeline import SourceEvaluation
from spectgan.evaluation.statistics import MEASURES

REAL_COLOUR, SYNTHETIC_COLOUR = "tab:blue", "tab:orange"
GRID_COLUMNS = 5


def plot_measures(evaluation: SourceEvaluation, path: Path) -> None:
    """Box plots of MC and LR per level x pattern cell, real beside synthetic, with the Mann-Whitney P of each."""
    plt = pyplot()
    rows = [row for row in evaluation.summary["paper_table"] if row["scope"] == "cell"]
    cells = list(dict.fromkeys((row["level"], row["pattern"]) for row in rows))
    figure, axes = plt.subplots(len(MEASURES), 1, figsize=(max(6.0, 1.4 * len(cells)), 3.6 * len(MEASURES)),
                                squeeze=False, constrained_layout=True)
    for axis, metric in zip(axes[:, 0], MEASURES):
        p_values = {(row["level"], row["pattern"]): row["p_mannwhitney"] for row in rows if row["metric"] == metric}
        for index, cell in enumerate(cells):
            pairs = [(evaluation.real, REAL_COLOUR), (evaluation.synthetic, SYNTHETIC_COLOUR)]
            for offset, (measured, colour) in enumerate(pairs):
                values = measured.values[metric][measured.group(*cell)]
                boxes = axis.boxplot([values[np.isfinite(values)]], positions=[3 * index + offset], widths=0.8,
                                     patch_artist=True, showfliers=False)
                boxes["boxes"][0].set_facecolor(colour)
        axis.set_xticks([3 * index + 0.5 for index in range(len(cells))],
                        [f"{level}\n{pattern}\nP={p_values[level, pattern]:.2g}" for level, pattern in cells],
                        fontsize=8)
        axis.set_ylabel(metric)
        axis.grid(axis="y", alpha=0.3)
    figure.legend([plt.Rectangle((0, 0), 1, 1, color=c) for c in (REAL_COLOUR, SYNTHETIC_COLOUR)],
                  ["real (test split)", evaluation.name], fontsize=8, loc="outside upper right")
    figure.suptitle(f"{evaluation.name}: MC and LR per cell (two-sided Mann-Whitney P)", fontsize=10)
    save_figure(figure, path)


def save_sample_grid(evaluation: SourceEvaluation, path: Path, count_scale: float) -> None:
    """One row per condition: real test slices on the left, synthetic slices of that condition on the right, in
    counts on one scale (as stored: the patient's right on the viewer's left, radiological display)."""
    plt = pyplot()
    conditions = list(evaluation.real.slices.condition_counts())
    size = evaluation.real.slices.counts.shape[-1]
    gap = size // 4
    mosaic = np.full((len(conditions) * size, (2 * GRID_COLUMNS) * size + gap), np.nan, dtype=np.float32)
    for row, condition in enumerate(conditions):
        for side, slices in enumerate((evaluation.real.slices, evaluation.synthetic.slices)):
            picks = [i for i, c in enumerate(slices.conditions) if c == condition][:GRID_COLUMNS]
            for column, image in enumerate(slices.counts[picks]):
                left = (side * GRID_COLUMNS + column) * size + side * gap
                mosaic[row * size:(row + 1) * size, left:left + size] = image
    width = 2 * GRID_COLUMNS * 1.2 + 1.5
    figure, axis = plt.subplots(figsize=(width, len(conditions) * 1.2 + 0.8))
    shown = axis.imshow(mosaic, cmap="inferno", vmin=0.0, vmax=count_scale, interpolation="nearest")
    axis.set_yticks([(row + 0.5) * size for row in range(len(conditions))],
                    [condition.label for condition in conditions], fontsize=8)
    halves = [GRID_COLUMNS * size / 2, GRID_COLUMNS * size * 1.5 + gap]
    axis.set_xticks(halves, ["real (test split)  R <-> L", f"{evaluation.name}  R <-> L"], fontsize=8)
    axis.tick_params(length=0)
    figure.colorbar(shown, ax=axis, fraction=0.03, label="counts")
    axis.set_title(f"{evaluation.name}: real and synthetic slices per condition", fontsize=10)
    save_figure(figure, path)


def plot_confusions(evaluation: SourceEvaluation, path: Path) -> None:
    """Confusion matrices of the real-data condition classifier on synthetic slices (rows: requested)."""
    plt = pyplot()
    confusion = evaluation.summary["confusion_matrices"]
    figure, axes = plt.subplots(1, len(confusion), figsize=(4.4 * len(confusion), 3.8), constrained_layout=True)
    for axis, (head, matrix) in zip(axes, confusion.items()):
        names = CLASS_NAMES[head][1:] if head == "side" else CLASS_NAMES[head]
        matrix = np.asarray(matrix)
        axis.imshow(matrix, cmap="Blues")
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center", fontsize=9,
                      color="white" if value > matrix.max() / 2 else "black")
        axis.set_xticks(range(len(names)), names, fontsize=8)
        axis.set_yticks(range(len(names)), names, fontsize=8)
        axis.set_xlabel("predicted")
        axis.set_ylabel("requested")
        accuracy = evaluation.summary["conditional_accuracy"][head]
        axis.set_title(f"{head}: accuracy {accuracy:.1%}" + (" (unilateral)" if head == "side" else ""), fontsize=9)
    figure.suptitle(f"{evaluation.name}: conditions of synthetic slices, as a classifier trained on real slices "
                    "sees them", fontsize=10)
    save_figure(figure, path)


def plot_memorization(evaluation: SourceEvaluation, path: Path) -> None:
    """Histograms of the nearest-train-slice distance of synthetic and of real test slices, with the threshold."""
    plt = pyplot()
    memorization = evaluation.summary["memorization"]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    distances = np.concatenate([evaluation.synthetic_distances, evaluation.reference_distances])
    bins = np.linspace(0.0, float(distances.max()) * 1.05 or 1.0, 40)
    axis.hist(evaluation.reference_distances, bins=bins, density=True, alpha=0.6, color=REAL_COLOUR,
              label="real test -> train")
    axis.hist(evaluation.synthetic_distances, bins=bins, density=True, alpha=0.6, color=SYNTHETIC_COLOUR,
              label=f"{evaluation.name} -> train")
    axis.axvline(memorization["threshold"], color="black", linestyle="--", linewidth=1,
                 label=f"threshold: {memorization['percentile']:g} % of real test slices are nearer")
    axis.set_xlabel("RMS difference to the nearest train slice (count-scale units)")
    axis.set_ylabel("density")
    axis.set_title(f"{evaluation.name}: {memorization['fraction']:.1%} of synthetic slices below the threshold",
                   fontsize=10)
    axis.legend(fontsize=8)
    save_figure(figure, path)


def plot_spectra(evaluation: SourceEvaluation, path: Path) -> None:
    """Radially averaged power spectra per level, real beside synthetic, with the largest gap in decades."""
    plt = pyplot()
    spectra = evaluation.spectra
    figure, axes = plt.subplots(1, len(spectra), figsize=(4.2 * len(spectra), 3.6), squeeze=False,
                                constrained_layout=True)
    for axis, (level, spectrum) in zip(axes[0], spectra.items()):
        axis.plot(spectrum.frequency, spectrum.log_power_real, color=REAL_COLOUR, label="real (test split)")
        axis.plot(spectrum.frequency, spectrum.log_power_synthetic, color=SYNTHETIC_COLOUR, label=evaluation.name)
        axis.axvline(spectrum.frequency_of_max_gap, color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"{level}: largest gap {spectrum.max_gap_decades:.2f} decades "
                       f"at {spectrum.frequency_of_max_gap:.3f} cycles/mm", fontsize=9)
        axis.set_xlabel("spatial frequency (cycles/mm)")
        axis.set_ylabel("log10 power (counts / count scale)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"{evaluation.name}: radially averaged power spectra", fontsize=10)
    save_figure(figure, path)


def plot_saliency(evaluation: SourceEvaluation, path: Path) -> None:
    """Where the C2ST critic looks: mean absolute gradient of its margin over the held-out slices, next to the mean
    real slice (same orientation: the patient's right on the viewer's left)."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(8, 4), constrained_layout=True)
    mean_real = evaluation.real.slices.counts.mean(axis=0)
    axes[0].imshow(mean_real, cmap="inferno", interpolation="nearest")
    axes[0].set_title("mean real test slice", fontsize=9)
    shown = axes[1].imshow(evaluation.c2st_saliency, cmap="viridis", interpolation="nearest")
    axes[1].contour(mean_real, levels=[0.1 * mean_real.max()], colors="white", linewidths=0.7)
    axes[1].set_title(f"C2ST critic saliency (accuracy {evaluation.summary['c2st_accuracy']:.3f})", fontsize=9)
    figure.colorbar(shown, ax=axes[1], fraction=0.046, label="mean |d margin / d pixel|")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel("R <-> L", fontsize=8)
    figure.suptitle(f"{evaluation.name}: what tells synthetic from real (white: 10 % of the mean slice's maximum)",
                    fontsize=10)
    save_figure(figure, path)


def plot_defect_asymmetry(evaluation: SourceEvaluation, path: Path) -> None:
    """Per pattern, the empirical distribution functions of |AI| of real (solid) and synthetic (dashed) slices, with
    the mild-defect threshold and the KS P."""
    plt = pyplot()
    compared = evaluation.summary["defect_asymmetry"]
    figure, axes = plt.subplots(1, len(compared), figsize=(4.2 * len(compared), 3.6), squeeze=False,
                                constrained_layout=True)
    for axis, (pattern, result) in zip(axes[0], compared.items()):
        for measured, colour, style, label in [(evaluation.real, REAL_COLOUR, "-", "real (test split)"),
                                               (evaluation.synthetic, SYNTHETIC_COLOUR, "--", evaluation.name)]:
            values = np.sort(np.abs(measured.values["AI"][measured.slices.patterns == pattern]))
            values = values[np.isfinite(values)]
            axis.step(values, np.arange(1, len(values) + 1) / len(values), where="post", color=colour,
                      linestyle=style, label=f"{label} (n={len(values)})")
        axis.axvline(MILD_AI, color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"{pattern}: KS P={result['ks_p_abs_ai']:.2g}; |AI| < {MILD_AI:g} %: "
                       f"{result['mild_share']['real']:.0%} real, {result['mild_share']['synthetic']:.0%} synthetic",
                       fontsize=8)
        axis.set_xlabel("|AI| (%)")
        axis.set_ylabel("share of slices with |AI| at most x")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    figure.suptitle(f"{evaluation.name}: defect size per pattern (hemispheric asymmetry |AI|)", fontsize=10)
    save_figure(figure, path)


def plot_severity_control(evaluation: SourceEvaluation, control: SeverityControl, path: Path) -> None:
    """|AI| against severity: the real unilateral test slices (recorded severity) and the synthetic ones (requested
    severity), each with its least-squares line; dotted lines mark the severity bins."""
    plt = pyplot()
    summary = evaluation.summary["controllability"]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    low, high = summary["severity_range"]
    line = np.linspace(low, high, 2)
    for severity, abs_ai, fit, colour, label in [
            (control.real_severity, control.real_abs_ai, summary["real_fit"], REAL_COLOUR, "real unilateral (test)"),
            (control.synthetic_severity, control.synthetic_abs_ai, summary["synthetic_fit"], SYNTHETIC_COLOUR,
             f"{evaluation.name} (requested)")]:
        axis.scatter(severity, abs_ai, s=10, alpha=0.5, color=colour, label=label)
        axis.plot(line, fit["slope"] * line + fit["offset"], color=colour,
                  label=f"fit: {fit['slope']:.1f} x severity {fit['offset']:+.1f}")
    for edge in SEVERITY_EDGES:
        axis.axvline(edge, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("severity (fractional CBF reduction)")
    axis.set_ylabel("|AI| (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{evaluation.name}: |AI| against severity, Spearman rho {summary['spearman']['rho']:.2f} "
                   f"(real slices: {summary['real_spearman']['rho']:.2f})", fontsize=10)
    save_figure(figure, path)


def write_figures(evaluation: SourceEvaluation, folder: Path, count_scale: float) -> dict[str, Path]:
    """Every figure of one source into ``folder`` (``defect_asymmetry`` where a pattern has measured slices on both
    sides, ``severity_control`` for a source with defect axes); returns {kind: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", evaluation.name)
    optional = {"defect_asymmetry": bool(evaluation.summary["defect_asymmetry"]),
                "severity_control": evaluation.severity_control is not None}
    kinds = ["measures", "samples", "confusion", "memorization", "spectra", "c2st_saliency"]
    paths = {kind: folder / f"{kind}_{stem}.png" for kind in kinds + [kind for kind, made in optional.items() if made]}
    plot_measures(evaluation, paths["measures"])
    save_sample_grid(evaluation, paths["samples"], count_scale)
    plot_confusions(evaluation, paths["confusion"])
    plot_memorization(evaluation, paths["memorization"])
    plot_spectra(evaluation, paths["spectra"])
    plot_saliency(evaluation, paths["c2st_saliency"])
    if "defect_asymmetry" in paths:
        plot_defect_asymmetry(evaluation, paths["defect_asymmetry"])
    if "severity_control" in paths:
        plot_severity_control(evaluation, evaluation.severity_control, paths["severity_control"])
    return paths
