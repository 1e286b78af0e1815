"""``spectgan evaluate``: synthetic slices of one or more model bundles against a cohort's held-out test split,
written as ``report.md``, ``evaluation.json`` and ``figures/``; and ``spectgan bench evaluate``.

The report judges every bundle against the fidelity targets of the shipped model A (PASS / FAIL, as measured) and
shows the bundles side by side (the paper found B, trained on COR only, worse than A).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import torch

from spectgan.files import atomic_write_bytes
from spectgan.tools.bench import print_figures
from spectgan.cohorts.format import read_cohort_info
from spectgan.conditions import Level
from spectgan.errors import SpectganError
from spectgan.evaluation.data import ArraySource, BundleSource, SyntheticSource, read_split
from spectgan.evaluation.defects import ALL, MILD_AI, PERCENTILES
from spectgan.evaluation.features import FEATURE_DIM
from spectgan.evaluation.figures import write_figures
from spectgan.evaluation.metrics import NEIGHBOURS
from spectgan.evaluation.pipeline import (FULL, QUICK, REAL_STAGES, REFERENCE_NAME, SOURCE_STAGES,
                                          EvaluationSettings, Stages, evaluate_source, prepare_real)
from spectgan.evaluation.statistics import SCOPES, comparison_groups, rank_biserial_null_sd

FORMAT = "spectgan-evaluation"
TIME_TARGET_S = 1200  # a full evaluation of both bundles on 2 CPU cores
P_TARGET = 0.05  # a cell test is met with P > P_TARGET ...
EFFECT_TARGET = 0.1  # ... and |r| < EFFECT_TARGET
EFFECT_CEILING = 0.2  # no cell may show |r| above this
C2ST_TARGET = 0.60
C2ST_CI_TARGET = 0.65  # upper end of the C2ST's 95 % interval
EXACT_HEADS = ("level", "side")  # conditional accuracy must be 100 % for these ...
PATTERN_GAP_TARGET = 0.02  # ... and within this of the real-slice classifier's for the pattern
TSTR_GAP_TARGET = 0.05
MEMORIZATION_TARGET = 0.02  # "near 1 %": at most twice what real test slices score
SPECTRUM_TARGET_DECADES = 0.3  # the largest |log10 ratio| of synthetic to real power at any frequency and level
BACKGROUND_FACTOR = 2.0  # synthetic background mean within this factor of real
MILD_SHARE_GAP_TARGET = 0.05  # share of mild defects (|AI| < MILD_AI) per pattern within this of real
SPEARMAN_TARGET = 0.8  # Spearman's rho of requested severity and measured |AI|
SEVERITY_GAP_TARGET = 2.0  # points of |AI|: each severity bin's mean synthetic |AI| within this of the real fit
TERRITORY_GAP_TARGET = 0.05  # territory accuracy on synthetic slices within this of that on real ones
DEFAULT_COHORT = Path("sample_data/cohorts/default")
DEFAULT_BUNDLES = (Path("models/spect_fastgan_A"), Path("models/spect_fastgan_B"))
SCOPE_TITLES = {"pattern": "Pooled per pattern (as in the paper)", "level": "Pooled per level",
                "cell": "Per level x pattern cell"}


def _cell_met(row: dict) -> bool:
    return row["p_mannwhitney"] > P_TARGET and abs(row["effect_r"]) < EFFECT_TARGET


def assess_cells(paper_table: Sequence[dict]) -> tuple[str, bool]:
    """The cell tests of a paper table: a summary of which meet P > P_TARGET and |r| < EFFECT_TARGET, and whether
    all do."""
    cells = [row for row in paper_table if row["scope"] == "cell"]
    failing = [f"{row['level']}-{row['pattern']} {row['metric']}" for row in cells if not _cell_met(row)]
    summary = f"{len(cells) - len(failing)} of {len(cells)} cell tests met"
    return summary + (f"; not met: {', '.join(failing)}" if failing else ""), not failing


def _cells_against_reference(paper_table: Sequence[dict], reference_table: Sequence[dict]) -> tuple[str, bool]:
    """The cell target: at least as many cell tests met as the train split scores against the test split, and no
    cell with |r| above EFFECT_CEILING."""
    met = sum(_cell_met(row) for row in paper_table if row["scope"] == "cell")
    reference = sum(_cell_met(row) for row in reference_table if row["scope"] == "cell")
    large = [f"{row['level']}-{row['pattern']} {row['metric']} r={row['effect_r']:+.2f}" for row in paper_table
             if row["scope"] == "cell" and abs(row["effect_r"]) > EFFECT_CEILING]
    value = (f"{met} met (train split: {reference}); "
             + (f"|r| > {EFFECT_CEILING}: {', '.join(large)}" if large else f"no |r| > {EFFECT_CEILING}"))
    return value, met >= reference and not large


def _pooled_patterns(paper_table: Sequence[dict]) -> tuple[str, bool]:
    rows = [row for row in paper_table if row["scope"] == "pattern"]
    value = ", ".join(f"{row['pattern']} {row['metric']} P={row['p_mannwhitney']:.2g}" for row in rows)
    return value, all(row["p_mannwhitney"] > P_TARGET for row in rows)


def _asymmetry_ks(asymmetry: dict) -> tuple[str, bool]:
    """The KS P of |AI| of every pattern (``defect_asymmetry``), and whether each is above P_TARGET."""
    value = ", ".join(f"{pattern} P={_p_value(result['ks_p_abs_ai'])}" for pattern, result in asymmetry.items())
    return value, bool(asymmetry) and all(result["ks_p_abs_ai"] > P_TARGET for result in asymmetry.values())


def _mild_shares(asymmetry: dict) -> tuple[str, bool]:
    """The synthetic and real shares of mild defects of every pattern, and whether each pair is within
    MILD_SHARE_GAP_TARGET."""
    shares = {pattern: result["mild_share"] for pattern, result in asymmetry.items()}
    value = ", ".join(f"{pattern} {share['synthetic']:.0%} (real {share['real']:.0%})"
                      for pattern, share in shares.items())
    return value, bool(shares) and all(abs(share["synthetic"] - share["real"]) <= MILD_SHARE_GAP_TARGET
                                       for share in shares.values())


def _tstr_per_pattern(breakdown: dict) -> tuple[str, bool]:
    """TSTR and TRTR of every pattern (``tstr_breakdown``), and whether each pair is within TSTR_GAP_TARGET."""
    pooled = {pattern: groups[ALL] for pattern, groups in breakdown.items()}
    value = ", ".join(f"{pattern} {row['tstr']:.0%} vs {row['trtr']:.0%}" for pattern, row in pooled.items())
    return value, all(abs(row["tstr"] - row["trtr"]) <= TSTR_GAP_TARGET for row in pooled.values())


def _not_applicable(reason: str) -> tuple[str, None]:
    """The value and verdict (None) of a target that does not apply, and why."""
    return f"not applicable ({reason})", None


def _severity_spearman(control: dict) -> tuple[str, bool | None]:
    """Spearman's rho of requested severity and |AI| (``controllability``), and whether it reaches SPEARMAN_TARGET."""
    if not control["applicable"]:
        return _not_applicable(control["reason"])
    rho, real = control["spearman"]["rho"], control["real_spearman"]["rho"]
    return (f"rho {rho:.2f} over {control['spearman']['n']} slices (the real unilateral test slices' own: "
            f"{real:.2f})", rho >= SPEARMAN_TARGET)


def _severity_bins(control: dict) -> tuple[str, bool | None]:
    """Mean synthetic |AI| of every severity bin against the real fit, and whether each is within
    SEVERITY_GAP_TARGET points."""
    if not control["applicable"]:
        return _not_applicable(control["reason"])
    if math.isnan(control["real_fit"]["slope"]):
        return _not_applicable("the test split records too few severities for a fit")
    bins = control["bins"]
    if not bins:
        return "no synthetic slice with a measurable brain", False
    value = ", ".join(f"{label}: {row['mean_abs_ai']:.1f} % vs {row['real_fit']:.1f} %" for label, row in bins.items())
    return value, all(abs(row["gap"]) <= SEVERITY_GAP_TARGET for row in bins.values())


def _territory(territory: dict) -> tuple[str, bool | None]:
    """Territory accuracy on synthetic and real slices (``territory_recognition``), and whether they are within
    TERRITORY_GAP_TARGET."""
    if not territory["applicable"]:
        return _not_applicable(territory["reason"])
    real, synthetic = territory["real"], territory["synthetic"]
    if not (real["n"] and synthetic["n"]):
        return _not_applicable("no unilateral slice of a territory the classifier knows")
    return (f"{synthetic['accuracy']:.1%} of {synthetic['n']} synthetic, {real['accuracy']:.1%} of {real['n']} real",
            abs(synthetic["accuracy"] - real["accuracy"]) <= TERRITORY_GAP_TARGET)


def assess_targets(summary: dict, reference_table: Sequence[dict]) -> list[dict]:
    """Each fidelity target with the measured value and whether it is met (``passed`` None: not applicable, e.g. the
    defect-axes targets of a model without them); ``reference_table`` is the train split's paper table against the
    test split (what two real samples score)."""
    low, high = summary["c2st"]["ci95"]
    accuracy, ceiling = summary["conditional_accuracy"], summary["classifier_accuracy_real_test"]
    gap = summary["tstr"] - summary["trtr"]
    memorized = summary["memorization_fraction"]
    background = summary["background"]
    checks = [("c2st", f"C2ST accuracy <= {C2ST_TARGET:.2f}, upper 95 % bound <= {C2ST_CI_TARGET:.2f}",
               f"{summary['c2st_accuracy']:.3f} (95 % CI {low:.3f}-{high:.3f})",
               summary["c2st_accuracy"] <= C2ST_TARGET and high <= C2ST_CI_TARGET),
              ("pooled", f"pooled per pattern, MC and LR: every P > {P_TARGET}",
               *_pooled_patterns(summary["paper_table"])),
              ("cells", f"cell tests (P > {P_TARGET}, |r| < {EFFECT_TARGET}) met at least as often as by the train "
               f"split, no |r| > {EFFECT_CEILING}", *_cells_against_reference(summary["paper_table"], reference_table))]
    for head in EXACT_HEADS:
        checks.append((head, f"conditional accuracy, {head}{' of unilateral' if head == 'side' else ''} = 100 %",
                       f"{accuracy[head]:.1%} (the classifier on real test slices: {ceiling[head]:.1%})",
                       accuracy[head] >= 1.0))
    checks += [("pattern", f"conditional accuracy, pattern within {PATTERN_GAP_TARGET * 100:.0f} points of the "
                "classifier on real test slices",
                f"{accuracy['pattern']:.1%} (real: {ceiling['pattern']:.1%})",
                accuracy["pattern"] >= ceiling["pattern"] - PATTERN_GAP_TARGET),
               ("tstr", f"TSTR within {TSTR_GAP_TARGET * 100:.0f} points of TRTR (pattern)",
                f"TSTR {summary['tstr']:.1%}, TRTR {summary['trtr']:.1%} ({100 * gap:+.1f} points)",
                abs(gap) <= TSTR_GAP_TARGET),
               ("memorization", f"memorization fraction near 1 % (<= {MEMORIZATION_TARGET:.0%})", f"{memorized:.1%}",
                memorized <= MEMORIZATION_TARGET),
               ("spectrum", f"power spectrum within {SPECTRUM_TARGET_DECADES} decades of real at every frequency "
                "and level", f"largest gap {summary['spectrum_max_gap_decades']:.2f} decades",
                summary["spectrum_max_gap_decades"] <= SPECTRUM_TARGET_DECADES),
               ("background", f"background outside the head: mean within a factor {BACKGROUND_FACTOR:g} of real",
                f"{background['synthetic']['mean']:.3f} counts against {background['real']['mean']:.3f}",
                1 / BACKGROUND_FACTOR <= background["ratio"] <= BACKGROUND_FACTOR),
               ("ai_ks", f"defect size: |AI| of each pattern, two-sample KS P > {P_TARGET}",
                *_asymmetry_ks(summary["defect_asymmetry"])),
               ("mild_share", f"defect size: share of |AI| < {MILD_AI:g} % of each pattern within "
                f"{MILD_SHARE_GAP_TARGET * 100:.0f} points of real", *_mild_shares(summary["defect_asymmetry"])),
               ("tstr_patterns", f"TSTR within {TSTR_GAP_TARGET * 100:.0f} points of TRTR for each pattern (TSTR vs "
                "TRTR)", *_tstr_per_pattern(summary["tstr_breakdown"])),
               ("severity_spearman", f"controllability: Spearman rho of requested severity and |AI| >= "
                f"{SPEARMAN_TARGET:g}", *_severity_spearman(summary["controllability"])),
               ("severity_bins", f"controllability: mean |AI| of each severity bin within {SEVERITY_GAP_TARGET:g} "
                "points of the real slices' fit (synthetic vs real fit)", *_severity_bins(summary["controllability"])),
               ("territory", f"territory of unilateral defects recognised within {TERRITORY_GAP_TARGET * 100:.0f} "
                "points of real test slices (classifier trained on real slices)",
                *_territory(summary["territory_recognition"]))]
    return [{"key": key, "target": target, "value": value, "passed": None if passed is None else bool(passed)}
            for key, target, value, passed in checks]


def _json_ready(value):
    """NaN and infinities -> None (JSON has neither), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def run_evaluation(sources: Sequence[SyntheticSource], cohort_dir: Path, out_dir: Path,
                   settings: EvaluationSettings = FULL, progress: bool = True,
                   other_cohorts: Sequence[Path] = ()) -> dict:
    """Evaluate every source against the cohort; writes report.md, evaluation.json and figures/ into ``out_dir``
    and returns the evaluation (the content of evaluation.json).

    Each of ``other_cohorts`` (e.g. one simulated with a seed that training never saw) gets a whole evaluation of
    its own in ``out_dir/cohorts/<its folder name>/``, and the report shows its targets beside this cohort's."""
    others = {}
    for other in other_cohorts:
        name = Path(other).resolve().name
        if name in others or Path(other).resolve() == Path(cohort_dir).resolve():
            raise SpectganError(f"give each cohort once, in folders of distinct names; {other} repeats one")
        others[name] = run_evaluation(sources, Path(other), Path(out_dir) / "cohorts" / name, settings, progress)
    started, cpu_started = time.perf_counter(), time.process_time()
    cohort_dir, out_dir = Path(cohort_dir), Path(out_dir)
    names = [source.name for source in sources]
    if not names or len(set(names)) != len(names):
        raise SpectganError(f"give one or more sources with distinct names, got {names}")
    info = read_cohort_info(cohort_dir)
    if "count_scale" not in info:
        raise SpectganError(f"{cohort_dir}/cohort.json has no count_scale: the cohort is not complete")
    sizes = {source.image_size for source in sources}
    if len(sizes) != 1:
        raise SpectganError("evaluate sources of one image size together; got "
                            + ", ".join(f"{source.name} {source.image_size} px" for source in sources))
    image_size = sizes.pop()
    stages = Stages(2 + REAL_STAGES + SOURCE_STAGES * len(sources), enabled=progress)
    try:
        with stages.stage("read cohort"):
            train, test = (read_split(cohort_dir, split, image_size=image_size) for split in ("train", "test"))
        pixel_mm = float(info["pixel_spacing_mm"]) * int(info["matrix"]) / image_size
        real = prepare_real(train, test, info["count_scale"], pixel_mm, settings, stages)
        evaluations = [evaluate_source(source, real, settings, stages) for source in sources]
        with stages.stage("figures"):
            figures = {evaluation.name: write_figures(evaluation, out_dir / "figures", info["count_scale"])
                       for evaluation in evaluations}
    finally:
        stages.close()
    bundles = {evaluation.name: {**evaluation.summary, "targets": assess_targets(evaluation.summary, real.reference_table),
                                 "figures": {kind: str(path.relative_to(out_dir))
                                             for kind, path in figures[evaluation.name].items()}}
               for evaluation in evaluations}
    result = _json_ready({
        "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": settings.mode, "settings": settings.to_dict(),
        "cohort": {"path": str(cohort_dir), "matrix": info.get("matrix"), "image_size": image_size,
                   "count_scale": info["count_scale"],
                   "seed": info.get("seed"), "source": info.get("source")},
        "real": {"split": "test", "n_test": len(real.test.slices), "n_train": len(real.train),
                 "note": "real = the held-out test split; the train split only trains the real-data classifiers "
                         "and is the memorization reference"},
        "bundles": bundles,
        "real_reference": {"name": REFERENCE_NAME, "paper_table": real.reference_table,
                           "cell_target": dict(zip(("value", "passed"), assess_cells(real.reference_table)))},
        "paper_table": [row for summary in bundles.values() for row in summary["paper_table"]],
        "other_cohorts": {name: {"report": f"cohorts/{name}/report.md", "cohort": other["cohort"],
                                 "targets": {bundle: summary["targets"] for bundle, summary in other["bundles"].items()}}
                          for name, other in others.items()},
        "run_time_s": round(time.perf_counter() - started, 1),
        "cpu_time_s": round(time.process_time() - cpu_started, 1), "timings_s": stages.seconds,
        "time_target_s": TIME_TARGET_S,
        "hardware": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "evaluation.json", (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(out_dir / "report.md", render_report(result).encode())
    return result


def _p_value(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; a ``|`` in a cell (as in |AI|) is escaped."""
    def line(cells: Sequence) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(row) for row in rows])


def _mean_sd(mean: float | None, sd: float | None, digits: int) -> str:
    return f"{_number(mean, digits)} ± {_number(sd, digits)}"


def _paper_rows(result: dict, scope: str) -> list[list[str]]:
    """One scope of the paper table; the bundles' rows of a group and measure side by side."""
    digits = {"MC": 1, "LR": 3}
    by_key = {(row["bundle"], row["level"], row["pattern"], row["metric"]): row
              for row in result["paper_table"] + result["real_reference"]["paper_table"] if row["scope"] == scope}
    rows = []
    for _, level, pattern in [group for group in comparison_groups(tuple(Level)) if group[0] == scope]:
        for metric, places in digits.items():
            for name in [*result["bundles"], REFERENCE_NAME]:
                row = by_key.get((name, level, pattern, metric))
                if row is not None:
                    rows.append([name, level, pattern, metric, row["n_real"], row["n_synth"],
                                 _mean_sd(row["mean_real"], row["sd_real"], places),
                                 _mean_sd(row["mean_synth"], row["sd_synth"], places),
                                 _p_value(row["p_mannwhitney"]), _number(row["effect_r"], 3),
                                 _p_value(row["p_welch"]), _number(row["cohens_d"], 2), _p_value(row["p_ks"])])
    return rows


def _reading_note(result: dict) -> str:
    """How much the cell target can be met by chance, from this run's cell sizes and the train split's score."""
    cells = [row for row in result["real_reference"]["paper_table"] if row["scope"] == "cell"]
    chance = 1.0 - (1.0 - P_TARGET) ** len(cells)
    smallest = min(cells, key=lambda row: row["n_real"] + row["n_synth"])
    null_sd = rank_biserial_null_sd(smallest["n_real"], smallest["n_synth"])
    return (f"Reading the cell target: with {len(cells)} cell tests at P > {P_TARGET}, a generator whose slices "
            f"follow the real distribution exactly still fails at least one test with probability {chance:.0%}; and "
            f"for the smallest cell ({smallest['level']}-{smallest['pattern']}, {smallest['n_real']} slices a side) "
            f"the rank-biserial r of two samples of one distribution has a standard deviation of {null_sd:.2f}, so "
            f"|r| < {EFFECT_TARGET} is partly luck there. The train split itself, compared with the test split in "
            f"the same way, scores: {result['real_reference']['cell_target']['value']} (rows '{REFERENCE_NAME}' "
            "below). The table gives every P value and effect size, so the reader can weigh them.")


def _verdict(entry: dict) -> str:
    """A target's cell: PASS, FAIL or n/a (not applicable) and the measured value."""
    verdict = {True: "PASS", False: "FAIL", None: "n/a"}[entry["passed"]]
    return f"**{verdict}** {entry['value']}"


def _other_cohorts_section(result: dict) -> str:
    """The targets on this cohort's test split beside those on every other cohort evaluated in the same run."""
    columns = [(name, "this cohort", summary["targets"]) for name, summary in result["bundles"].items()]
    for cohort_name, other in result["other_cohorts"].items():
        columns += [(name, cohort_name, targets) for name, targets in other["targets"].items()]
    rows = [[entries[0]["target"]] + [_verdict(entry) for entry in entries]
            for entries in zip(*(targets for _, _, targets in columns))]
    links = ", ".join(f"[{name}]({other['report']}) (seed {other['cohort'].get('seed')})"
                      for name, other in result["other_cohorts"].items())
    return "\n".join([f"### The same targets on other cohorts ({links})", "",
                      "Each other cohort's test split is evaluated in full, as this one; its report has every number.",
                      "", _table(["target"] + [f"{name} on {cohort}" for name, cohort, _ in columns], rows)])


def _percentiles(values: dict, digits: int) -> str:
    """``q10 / q50 / q90`` of a ``defects.percentiles`` result."""
    return " / ".join(_number(values[f"q{q}"], digits) for q in PERCENTILES)


def _fit(fit: dict) -> str:
    """A linear fit of |AI| on severity as text."""
    return f"{_number(fit['slope'], 1)} x severity + {_number(fit['offset'], 1)} (n {fit['n']})"


def _defect_section(bundles: dict) -> str:
    """The defect-realism tables: |AI| and LR per pattern, TSTR per pattern and severity, controllability and
    territory recognition."""
    quantiles = "/".join(f"{q}" for q in PERCENTILES)
    lines = ["## Defect realism", "",
             "Defect size is the hemispheric asymmetry a defect leaves: |AI| = |100 (L - R) / ((L + R) / 2)| % and "
             f"LR = L / R, per pattern, real test slices against the synthetic slices above (percentiles {quantiles}; "
             f"mild: |AI| < {MILD_AI:g} %; two-sided two-sample KS P of |AI|). Severity is the fractional CBF "
             "reduction the cohort records (a bilateral defect: its more severe side's).", ""]
    lines.append(_table(["bundle", "pattern", "n real / synth", f"|AI| % real ({quantiles})", "|AI| % synthetic",
                         f"LR real ({quantiles})", "LR synthetic", "mild real", "mild synthetic", "KS P (|AI|)"], [
        [name, pattern, f"{row['n']['real']} / {row['n']['synthetic']}", _percentiles(row["abs_ai"]["real"], 1),
         _percentiles(row["abs_ai"]["synthetic"], 1), _percentiles(row["lr"]["real"], 3),
         _percentiles(row["lr"]["synthetic"], 3), _percent(row["mild_share"]["real"]),
         _percent(row["mild_share"]["synthetic"]), _p_value(row["ks_p_abs_ai"])]
        for name, s in bundles.items() for pattern, row in s["defect_asymmetry"].items()]))
    lines += ["", "### TSTR and TRTR per pattern and severity", "",
              "Pattern accuracy on the real test slices of each pattern and, for defects, each severity bin (slices "
              "of unknown severity count under 'all' only).", ""]
    lines.append(_table(["bundle", "pattern", "severity", "n real", "TSTR", "TRTR"], [
        [name, pattern, group, row["n"], _percent(row["tstr"]), _percent(row["trtr"])]
        for name, s in bundles.items() for pattern, groups in s["tstr_breakdown"].items()
        for group, row in groups.items()]))
    lines += ["", "### Controllability of severity", "",
              "For a model with defect axes: unilateral slices requested at severities evenly across its trained "
              "range, at every level, territory it knows there and side (the same number of each); Spearman's rho "
              "of requested severity and measured |AI|, and least-squares lines of |AI| on severity for these and "
              "for the real unilateral test slices (their recorded severity). The real slices mix territories as the "
              "cohort does, the requests evenly.", ""]
    controlled = {name: s["controllability"] for name, s in bundles.items()}
    lines.append(_table(["bundle", "requests", "Spearman rho (P)", "real slices' rho", "synthetic fit", "real fit"], [
        [name, c["n"], f"{_number(c['spearman']['rho'], 2)} ({_p_value(c['spearman']['p'])})",
         _number(c["real_spearman"]["rho"], 2), _fit(c["synthetic_fit"]), _fit(c["real_fit"])]
        if c["applicable"] else [name, f"not applicable ({c['reason']})", "", "", "", ""]
        for name, c in controlled.items()]))
    rows = [[name, label, row["n"], _number(row["mean_severity"], 3), _number(row["mean_abs_ai"], 1),
             _number(row["real_fit"], 1), _number(row["gap"], 1)]
            for name, c in controlled.items() if c["applicable"] for label, row in c["bins"].items()]
    if rows:
        lines += ["", _table(["bundle", "severity bin", "n", "mean requested severity", "mean |AI| % synthetic",
                              "real fit %", "gap (points)"], rows)]
    lines += ["", "### Territory recognition", "",
              "A classifier trained on the real train split's unilateral slices names the territory of a defect (at "
              "each level among those the train split has there); its accuracy on the real unilateral test slices "
              "and on the synthetic slices requested with a territory (those of the controllability grid).", ""]
    lines.append(_table(["bundle", "territories", "real test", "synthetic"], [
        [name, "; ".join(f"{level} {', '.join(names)}" for level, names in t["territories"].items()),
         f"{_percent(t['real']['accuracy'])} of {t['real']['n']}",
         f"{_percent(t['synthetic']['accuracy'])} of {t['synthetic']['n']}"]
        if t["applicable"] else [name, f"not applicable ({t['reason']})", "", ""]
        for name, t in ((name, s["territory_recognition"]) for name, s in bundles.items())]))
    return "\n".join(lines)


def render_report(result: dict) -> str:
    """report.md from the evaluation."""
    names = list(result["bundles"])
    bundles = result["bundles"]
    cohort = result["cohort"]
    lines = [f"# Evaluation of {', '.join(names)}", "",
             f"Cohort `{cohort['path']}` ({cohort['matrix']} x {cohort['matrix']}"
             + (f", area-averaged to the models' {cohort['image_size']} x {cohort['image_size']}"
                if cohort.get("image_size") not in (None, cohort["matrix"]) else "")
             + f", count scale {cohort['count_scale']:.1f}); real = the held-out **test** split ({result['real']['n_test']} slices), "
             f"never the training split ({result['real']['n_train']} slices, used only to train the real-data "
             f"classifiers and as the memorization reference). Mode **{result['mode']}**; run time "
             f"**{result['run_time_s']:.0f} s** (CPU time {result['cpu_time_s']:.0f} s; "
             f"{result['hardware']['cpu_count']} CPU cores, {result['hardware']['torch_threads']} torch threads; "
             "target for a full run of two bundles: "
             f"{result['time_target_s']} s). Created {result['created']}.", ""]
    if result["mode"] != "full":
        lines += [f"**This is a {result['mode']} run** (at most {result['settings']['per_condition_cap']} slices per "
                  "condition, short classifier training): it checks that the evaluation works; its PASS / FAIL is not "
                  "a verdict on a model.", ""]
    lines += ["## Fidelity targets", "",
              "The targets are those of the shipped model A; every bundle is measured against them, side by side (the "
              "paper found B, trained on COR only, worse than A).", ""]
    verdicts = zip(*(bundles[name]["targets"] for name in names))  # the same targets in the same order
    lines.append(_table(["target"] + names, [[entries[0]["target"]] + [_verdict(entry) for entry in entries]
                                             for entries in verdicts]))
    if result.get("other_cohorts"):
        lines += ["", _other_cohorts_section(result)]
    lines += ["", _reading_note(result), "", "## MC and LR, real versus synthetic (Werner et al. 2022)", "",
              "Two-sided Mann-Whitney U (P, rank-biserial r = 2U / (n_synth n_real) - 1, positive when synthetic "
              "values are larger); Welch's t (P, Cohen's d) and Kolmogorov-Smirnov (P) as secondary tests. As many "
              f"synthetic slices as real ones per condition, seeded. Mean ± SD. Rows '{REFERENCE_NAME}' compare the "
              "train split with the test split the same way: what two real samples of this cohort score.", ""]
    header = ["bundle", "level", "pattern", "measure", "n real", "n synth", "real", "synthetic", "P (MWU)", "r",
              "P (Welch)", "d", "P (KS)"]
    for scope in SCOPES:
        lines += [f"### {SCOPE_TITLES[scope]}", "", _table(header, _paper_rows(result, scope)), ""]
    lines += ["## Distribution metrics", "",
              "C2ST: a small CNN trained to tell real test slices from synthetic ones, cross-validated accuracy with "
              f"its exact 95 % interval (0.5 is ideal). FID and KID use the {FEATURE_DIM} features of a condition "
              "classifier trained on the real training split (no downloaded network; values compare bundles, not "
              f"papers). Precision and recall: k-NN manifolds (k = {NEIGHBOURS}) in the same features.", ""]
    lines.append(_table(["bundle", "n real / synth", "C2ST accuracy", "95 % CI", "FID (domain)", "KID (domain)",
                         "precision", "recall"], [
        [name, f"{s['n_real']} / {s['n_synth']}", _number(s["c2st_accuracy"], 3),
         f"{_number(s['c2st']['ci95'][0], 3)}-{_number(s['c2st']['ci95'][1], 3)}", _number(s["fid_domain"], 3),
         f"{_number(s['kid_domain'], 4)} ± {_number(s['kid_domain_sd'], 4)}", _number(s["precision"], 3),
         _number(s["recall"], 3)] for name, s in bundles.items()]))
    lines += ["", "## Texture: power spectrum and background", "",
              "Radially averaged power spectra of counts / count scale, per level, real test slices against as many "
              "synthetic ones; the gap is |log10(synthetic / real)| in decades, the largest over every frequency and "
              "level. Background: counts in pixels outside the head (where the level's mean real slice is below "
              "1 % of its maximum, 2 px away from the head), pooled over levels. The figures 'spectra' and "
              "'c2st_saliency' show the spectra and where the C2ST critic looks.", ""]
    lines.append(_table(["bundle", "largest spectrum gap (decades)", "per level", "background real (mean ± SD)",
                         "background synthetic (mean ± SD)", "synthetic pixels > 1 count"], [
        [name, _number(s["spectrum_max_gap_decades"], 2),
         ", ".join(f"{level} {spectrum['max_gap_decades']:.2f} at {spectrum['at_cycles_per_mm']:.3f} cycles/mm"
                   for level, spectrum in s["spectrum"].items()),
         _mean_sd(s["background"]["real"]["mean"], s["background"]["real"]["sd"], 3),
         _mean_sd(s["background"]["synthetic"]["mean"], s["background"]["synthetic"]["sd"], 3),
         _percent(s["background"]["synthetic"]["above_1_count"])] for name, s in bundles.items()]))
    lines += ["", "## Conditional accuracy, TSTR and TRTR", "",
              "A condition classifier trained on real training slices predicts level, pattern and side (left or "
              "right, on unilateral requests) of synthetic slices made for a requested condition. Its accuracy on "
              "the real test slices is the ceiling. TSTR: the same classifier trained on the synthetic slices, "
              "tested on real test slices; TRTR: trained on real training slices of the bundle's levels (pattern "
              "accuracy).", ""]
    lines.append(_table(["bundle", "level", "pattern", "side (unilateral)", "classifier on real test (level / "
                         "pattern / side)", "TSTR", "TRTR"], [
        [name, _percent(s["conditional_accuracy"]["level"]), _percent(s["conditional_accuracy"]["pattern"]),
         _percent(s["conditional_accuracy"]["side"]),
         " / ".join(_percent(s["classifier_accuracy_real_test"][head]) for head in ("level", "pattern", "side")),
         _percent(s["tstr"]), _percent(s["trtr"])] for name, s in bundles.items()]))
    lines += ["", _defect_section(bundles)]
    lines += ["", "## Memorization", "",
              "Root-mean-square pixel difference of each synthetic slice to its nearest training slice, against the "
              "same distance of real test slices; the fraction of synthetic slices below the 1st percentile of the "
              "real ones (about 1 % for a generator of new subjects, 100 % for copies).", ""]
    lines.append(_table(["bundle", "fraction below threshold", "threshold", "median synthetic", "median real test"], [
        [name, _percent(s["memorization_fraction"]), _number(s["memorization"]["threshold"], 4),
         _number(s["memorization"]["median_synthetic"], 4), _number(s["memorization"]["median_reference"], 4)]
        for name, s in bundles.items()]))
    lines += ["", "## Figures", ""]
    for name, summary in bundles.items():
        lines += [f"### {name}", ""] + [f"![{kind}]({path})" for kind, path in summary["figures"].items()] + [""]
    lines += ["## Run time", "", _table(["stage", "seconds"], [[stage, f"{seconds:.1f}"]
                                                              for stage, seconds in result["timings_s"].items()]),
              ""]
    return "\n".join(lines)


def add_evaluate_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="compare synthetic slices of model bundles with a cohort's held-out test split",
        description="Paper table (MC and LR, Mann-Whitney U), C2ST, domain FID / KID, precision / recall, "
                    "conditional accuracy, TSTR vs TRTR, memorization, texture and defect realism (|AI| per pattern, "
                    "TSTR per severity; for models with defect axes, severity control and territory recognition); "
                    "writes report.md, evaluation.json and figures/.")
    parser.add_argument("--bundle", action="append", required=True, metavar="DIR",
                        help="model bundle folder (repeat: --bundle models/spect_fastgan_A --bundle "
                             "models/spect_fastgan_B)")
    parser.add_argument("--cohort", action="append", required=True, metavar="DIR",
                        help="cohort folder with train and test splits; repeat to evaluate on more cohorts in one run "
                             "(e.g. one simulated with another seed): the first is the report's, the others get "
                             "reports in OUT/cohorts/ and their targets side by side")
    parser.add_argument("--out", required=True, help="output folder for report.md, evaluation.json and figures/")
    parser.add_argument("--quick", action="store_true",
                        help="few slices per condition and short classifier training (checks the pipeline; not a "
                             "verdict)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and classifiers (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    settings = replace(QUICK if args.quick else FULL, seed=args.seed)
    sources = [BundleSource(path) for path in args.bundle]
    cohorts = [Path(cohort) for cohort in args.cohort]
    result = run_evaluation(sources, cohorts[0], Path(args.out), settings, progress=not args.no_progress,
                            other_cohorts=cohorts[1:])
    for name, summary in result["bundles"].items():
        applicable = [target["passed"] for target in summary["targets"] if target["passed"] is not None]
        print(f"{name}: {sum(applicable)} of {len(applicable)} applicable targets met; C2ST "
              f"{summary['c2st_accuracy']:.3f}, memorization {summary['memorization_fraction']:.1%}")
    print(f"wrote {Path(args.out) / 'report.md'} and evaluation.json in {result['run_time_s']:.0f} s")
    return 0


def benchmark_sources(cohort_dir: Path) -> list[SyntheticSource]:
    """The shipped bundles where they exist, else stand-ins (train slices at A's and B's levels; no sampling)."""
    if all((bundle / "configs" / "metadata.json").is_file() for bundle in DEFAULT_BUNDLES):
        return [BundleSource(bundle) for bundle in DEFAULT_BUNDLES]
    train = read_split(cohort_dir, "train")
    return [ArraySource("stand-in-A", train), ArraySource("stand-in-B", train.at_levels([Level.COR]))]


def run_evaluate_benchmark(as_json: bool = False) -> int:
    """Time a full evaluation of the shipped bundles (or stand-ins) on the default cohort against the 20-min target."""
    if "count_scale" not in read_cohort_info(DEFAULT_COHORT):
        raise SpectganError(f"{DEFAULT_COHORT} is not complete; make it with `spectgan cohort --out {DEFAULT_COHORT} "
                            "--seed 0`")
    sources = benchmark_sources(DEFAULT_COHORT)
    with tempfile.TemporaryDirectory() as folder:
        result = run_evaluation(sources, DEFAULT_COHORT, Path(folder), FULL, progress=False)
    figures = {"sources": [source.name for source in sources],
               "stand_ins": not isinstance(sources[0], BundleSource),
               "test_slices": result["real"]["n_test"], "run_time_s": result["run_time_s"],
               "cpu_time_s": result["cpu_time_s"],
               "time_target_s": TIME_TARGET_S, "ratio_to_target": round(result["run_time_s"] / TIME_TARGET_S, 3),
               **result["hardware"], "timings_s": result["timings_s"]}
    print_figures(figures, as_json)
    return 0
