"""Evaluation: statistics and metrics on inputs with known answers, the whole evaluation on the small simulated cohort
with arrays standing in for generators (copies of the test split, a count shift, copies of training slices), and
`spectgan evaluate --quick` end to end with a bundle trained for two steps."""
import json

import numpy as np
import pytest
import torch

from spectgan import cli
from spectgan.models.fastgan import train as fastgan_train
from spectgan.cohorts.format import read_cohort_info
from spectgan.conditions import Condition, Level, Pattern, Side
from spectgan.errors import SpectganError
from spectgan.evaluation.data import ArraySource, read_split
from spectgan.evaluation.features import to_inputs
from spectgan.evaluation.metrics import (condition_accuracy, frechet_distance, kernel_distance, memorization,
                                         nearest_distances, precision_recall, two_sample_test)
from spectgan.evaluation.pipeline import QUICK
from spectgan.evaluation.report import run_evaluation
from spectgan.evaluation.statistics import accuracy_interval, compare_samples

PAPER_ROW_KEYS = {"bundle", "level", "pattern", "metric", "n_real", "n_synth", "p_mannwhitney", "effect_r",
                  "mean_real", "mean_synth"}
BUNDLE_KEYS = {"paper_table", "c2st_accuracy", "fid_domain", "kid_domain", "precision", "recall",
               "conditional_accuracy", "tstr", "trtr", "memorization_fraction", "targets", "figures"}
SHIFT = 1.5


# --- statistics with known answers -------------------------------------------------------------------------------

def test_identical_samples_are_not_different():
    values = np.random.default_rng(0).normal(400.0, 50.0, 120)
    result = compare_samples(values, values.copy())
    assert result.p_mannwhitney == pytest.approx(1.0)
    assert result.p_welch == pytest.approx(1.0) and result.p_ks == pytest.approx(1.0)
    assert result.effect_r == 0.0 and result.cohens_d == 0.0
    assert result.mean_real == result.mean_synth and result.n_real == result.n_synth == 120


def test_shifted_samples_differ_with_the_sign_of_the_shift():
    rng = np.random.default_rng(1)
    real, synthetic = rng.normal(400.0, 50.0, 150), rng.normal(460.0, 50.0, 150)
    result = compare_samples(real, synthetic)
    assert result.p_mannwhitney < 0.001 and result.p_welch < 0.001 and result.p_ks < 0.001
    assert 0.4 < result.effect_r < 0.8 and 0.9 < result.cohens_d < 1.5
    assert compare_samples(synthetic, real).effect_r == pytest.approx(-result.effect_r)


def test_rank_biserial_r_of_separated_samples_and_missing_values():
    assert compare_samples([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]).effect_r == 1.0
    assert compare_samples([4.0, 5.0, 6.0], [1.0, 2.0, 3.0]).effect_r == -1.0
    result = compare_samples([1.0, np.nan, 3.0], [2.0, 4.0])
    assert (result.n_real, result.n_synth) == (2, 2)
    empty = compare_samples([1.0, 2.0], [np.nan])
    assert empty.n_synth == 0 and np.isnan(empty.p_mannwhitney)


def test_exact_accuracy_interval():
    low, high = accuracy_interval(50, 100)
    assert low == pytest.approx(0.3983, abs=1e-4) and high == pytest.approx(0.6017, abs=1e-4)
    assert accuracy_interval(0, 10)[0] == 0.0


# --- metrics with known answers ----------------------------------------------------------------------------------

def test_fid_and_kid_of_a_set_with_itself_are_zero_and_grow_with_a_shift():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 16, generator=generator)
    other = torch.randn(400, 16, generator=generator)
    assert abs(frechet_distance(features, features)) < 1e-6
    assert frechet_distance(features, features + 1.0) == pytest.approx(16.0, rel=1e-6)  # |mean difference|^2
    same, _ = kernel_distance(features, other, seed=0)
    shifted, _ = kernel_distance(features, other + 1.0, seed=0)
    assert abs(same) < 0.05 and shifted > 1.0


def test_precision_and_recall_of_same_and_disjoint_sets():
    features = torch.randn(200, 8, generator=torch.Generator().manual_seed(1))
    assert precision_recall(features, features) == (1.0, 1.0)
    assert precision_recall(features, features + 100.0) == (0.0, 0.0)


def test_memorization_is_high_for_copies_of_training_slices():
    rng = np.random.default_rng(2)
    train, test, new = (torch.from_numpy(rng.random((n, 1, 16, 16), dtype=np.float32)) for n in (300, 300, 300))
    reference = nearest_distances(test, train)
    copies = nearest_distances(train[:100], train)
    assert np.allclose(copies, 0.0, atol=1e-6)
    assert memorization(copies, reference)["fraction"] == 1.0
    assert memorization(nearest_distances(new, train), reference)["fraction"] < 0.05


def test_condition_accuracy_scores_side_on_unilateral_requests_only():
    conditions = [Condition(Level.BG, Pattern.NORMAL), Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT),
                  Condition(Level.COR, Pattern.UNILATERAL, Side.RIGHT)]
    logits = {"level": torch.tensor([[0.0, 9.0, 0.0], [0.0, 9.0, 0.0], [0.0, 9.0, 0.0]]),  # all BG
              "pattern": torch.tensor([[9.0, 0.0, 0.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]]),  # normal, normal, uni
              "side": torch.tensor([[9.0, 0.0, 1.0], [9.0, 1.0, 0.0], [0.0, 1.0, 2.0]])}  # left over right, right
    result = condition_accuracy(logits, conditions)
    assert result["accuracy"] == pytest.approx({"level": 2 / 3, "pattern": 2 / 3, "side": 1.0})
    assert result["n"] == {"level": 3, "pattern": 3, "side": 2}
    assert result["confusion"]["side"] == [[1, 0], [0, 1]]
    assert result["confusion"]["level"] == [[0, 0, 0], [0, 2, 0], [0, 1, 0]]


def test_c2st_is_at_chance_for_one_distribution_and_finds_a_count_shift(small_cohort):
    scale = read_cohort_info(small_cohort)["count_scale"]
    train, test = (to_inputs(read_split(small_cohort, split).counts, scale) for split in ("train", "test"))
    same = two_sample_test(test, train, folds=2, steps=80, seed=0)
    assert abs(same["accuracy"] - 0.5) < 0.1  # cross-validation under the null runs a little below 0.5
    shifted = two_sample_test(test, test * SHIFT, folds=2, steps=80, seed=0)
    assert shifted["accuracy"] > 0.7 and shifted["ci95"][0] > 0.5


# --- the whole evaluation on arrays --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def array_evaluation(small_cohort, tmp_path_factory):
    """One quick evaluation of three stand-ins: the (capped) test split itself, the test split with 1.5 x the
    counts, and copies of COR training slices."""
    test = read_split(small_cohort, "test").capped(QUICK.per_condition_cap)
    train_cor = read_split(small_cohort, "train", [Level.COR]).capped(QUICK.per_condition_cap)
    sources = [ArraySource("copy_of_test", test), ArraySource("shifted_test", test, gain=SHIFT),
               ArraySource("train_copies_COR", train_cor)]
    out = tmp_path_factory.mktemp("evaluation")
    return out, run_evaluation(sources, small_cohort, out, QUICK, progress=False)


def test_report_files_and_structure(array_evaluation):
    out, result = array_evaluation
    assert json.loads((out / "evaluation.json").read_text()) == result
    assert result["mode"] == "quick" and result["real"]["split"] == "test" and result["run_time_s"] > 0
    assert list(result["bundles"]) == ["copy_of_test", "shifted_test", "train_copies_COR"]
    for name, summary in result["bundles"].items():
        assert BUNDLE_KEYS <= set(summary)
        assert set(summary["conditional_accuracy"]) == {"level", "pattern", "side"}
        assert len(summary["targets"]) == 7 and all(isinstance(t["passed"], bool) for t in summary["targets"])
        assert all((out / path).stat().st_size > 1000 for path in summary["figures"].values())
        assert all(PAPER_ROW_KEYS <= set(row) and row["bundle"] == name for row in summary["paper_table"])
    assert len(result["paper_table"]) == sum(len(s["paper_table"]) for s in result["bundles"].values())
    reference = result["real_reference"]
    assert {row["bundle"] for row in reference["paper_table"]} == {reference["name"]}
    assert isinstance(reference["cell_target"]["passed"], bool)
    report = (out / "report.md").read_text()
    for text in ("Fidelity targets", "PASS", "FAIL", "held-out **test** split", "Pooled per pattern", "C2ST",
                 "TSTR", "Memorization", "Run time", "quick run", "figures/measures_copy_of_test.png",
                 "train split (reference)"):
        assert text in report


def test_copies_of_the_test_split_are_indistinguishable_from_it(array_evaluation):
    summary = array_evaluation[1]["bundles"]["copy_of_test"]
    for row in summary["paper_table"]:
        assert row["p_mannwhitney"] == pytest.approx(1.0) and row["effect_r"] == pytest.approx(0.0)
        assert row["n_real"] == row["n_synth"] and row["mean_real"] == pytest.approx(row["mean_synth"])
    assert summary["targets"][0]["passed"]
    assert abs(summary["fid_domain"]) < 1e-6
    assert summary["precision"] == summary["recall"] == 1.0
    assert summary["conditional_accuracy"] == summary["classifier_accuracy_real_test"]
    assert summary["memorization_fraction"] <= 0.05  # as close to the train split as the test split is


def test_a_count_shift_is_found_in_mc_but_not_in_lr(array_evaluation):
    summary = array_evaluation[1]["bundles"]["shifted_test"]
    pooled = {(row["pattern"], row["metric"]): row for row in summary["paper_table"] if row["scope"] == "pattern"}
    for pattern in ("normal", "unilateral"):
        assert pooled[pattern, "MC"]["p_mannwhitney"] < 0.001 and pooled[pattern, "MC"]["effect_r"] > 0.8
        assert pooled[pattern, "MC"]["mean_synth"] == pytest.approx(SHIFT * pooled[pattern, "MC"]["mean_real"],
                                                                    rel=1e-3)
        assert pooled[pattern, "LR"]["p_mannwhitney"] > 0.5
    assert not summary["targets"][0]["passed"]
    assert summary["fid_domain"] > 1.0 and summary["memorization_fraction"] == 0.0


def test_copies_of_training_slices_are_memorized(array_evaluation):
    summary = array_evaluation[1]["bundles"]["train_copies_COR"]
    assert summary["levels"] == ["COR"] and {row["level"] for row in summary["paper_table"]} <= {"COR", "all"}
    assert summary["memorization_fraction"] == 1.0
    assert not summary["targets"][-1]["passed"]


def test_sources_of_different_sizes_are_refused(small_cohort, tmp_path):
    test = read_split(small_cohort, "test").capped(2)
    halved = read_split(small_cohort, "test", image_size=32).capped(2)
    with pytest.raises(SpectganError, match="one image size"):
        run_evaluation([ArraySource("full", test), ArraySource("halved", halved)], small_cohort, tmp_path, QUICK,
                       progress=False)
    assert not (tmp_path / "evaluation.json").exists()


# --- the command, end to end ---------------------------------------------------------------------------------------

def test_evaluate_command_quick_with_a_tiny_trained_bundle(small_cohort, tmp_path):
    bundle = tmp_path / "tiny_A"
    fastgan_train.train(tmp_path / "run", progress=False, cohort=str(small_cohort), iterations=2, batch_size=4,
                       image_size=32, generator_width=4, discriminator_width=4, latent_dim=16, condition_dim=8,
                       sample_every=1000, checkpoint_every=1000, log_every=1, export_bundle_dir=bundle)
    out = tmp_path / "report"
    assert cli.main(["evaluate", "--bundle", str(bundle), "--cohort", str(small_cohort), "--out", str(out),
                     "--quick", "--no-progress"]) == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert list(result["bundles"]) == ["tiny_A"] and result["mode"] == "quick"
    assert (result["cohort"]["matrix"], result["cohort"]["image_size"]) == (64, 32)  # the real slices area-averaged
    summary = result["bundles"]["tiny_A"]
    assert summary["levels"] == ["CER", "BG", "COR"] and summary["n_synth"] == summary["n_real"]
    assert 0.0 <= summary["c2st_accuracy"] <= 1.0
    assert "tiny_A" in (out / "report.md").read_text()
