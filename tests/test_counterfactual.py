"""The physics counterfactual (spectgan.counterfactual.physics) and its paired evaluation (paired): the defect lands on
the requested side of the canonical grid, removing undoes adding, incomplete or impossible lesions are refused, and
on simulated subjects acquired with and without their defect the added defect's |AI| matches the truth's."""
from __future__ import annotations

import numpy as np
import pytest

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.counterfactual import LEARNED, PHYSICS, check_lesions, physics
from spectgan.counterfactual.paired import ADD, REMOVE, Method, measure_pair, paired_design, simulate_pairs
from spectgan.errors import InvalidRequestError
from spectgan.geometry.roi import TEMPLATE_MIDLINE
from spectgan.geometry.template import canonical_origin, pixel_spacing

MATRIX = 64


def _midline_column() -> int:
    return int(round((TEMPLATE_MIDLINE.point[0] - canonical_origin(Level.BG, MATRIX)[0]) / pixel_spacing(MATRIX)))


@pytest.mark.parametrize("side", list(Side))
def test_a_defect_lowers_its_own_side_of_the_canonical_grid_only(side):
    factor = physics.defect_factor([Lesion(side, "MCA", 0.4)], Level.BG, MATRIX)
    middle = _midline_column()
    left, right = factor[:, middle + 2:], factor[:, :middle - 1]  # left = +x = higher columns
    affected, spared = (left, right) if side is Side.LEFT else (right, left)
    assert factor.max() <= 1.0 + 1e-6
    assert affected.min() < 0.75  # deep inside the territory, about 1 - severity
    assert spared.min() > 0.97


def test_removing_a_defect_undoes_adding_it():
    counts = np.random.default_rng(0).uniform(50, 150, (MATRIX, MATRIX)).astype(np.float32)
    lesions = [Lesion(Side.RIGHT, "ACA", 0.3)]
    added = physics.add_defect(counts, lesions, Level.COR)
    assert added.sum() < counts.sum()
    np.testing.assert_allclose(physics.remove_defect(added, lesions, Level.COR), counts, rtol=1e-5)


@pytest.mark.parametrize("lesion, message", [
    (Lesion(Side.LEFT, "MCA", None), "needs its territory and severity"),
    (Lesion(Side.LEFT, None, 0.3), "needs its territory and severity"),
    (Lesion(Side.LEFT, "PICA", 0.3), "not available at BG"),
    (Lesion(Side.LEFT, "MCA", 0.9), "outside the trained range"),
])
def test_incomplete_or_impossible_lesions_are_refused_naming_what_is_allowed(lesion, message):
    with pytest.raises(InvalidRequestError, match=message) as error:
        check_lesions(Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT, (lesion,)), physics.PHYSICS_AXES,
                      "physics method")
    assert "MCA" in str(error.value) or "0.15" in str(error.value)


def test_on_paired_subjects_the_added_defect_matches_the_truth_and_leaves_the_rest():
    """Two subjects at 64 px (BG MCA and COR ACA, 50 %), acquired with and without their defect."""
    design = [item for item in paired_design(3, seed=1) if (item[0], item[1]) in ((Level.BG, "MCA"),
                                                                                  (Level.COR, "ACA"))
              and item[3] == 0.5]
    assert len(design) == 2
    method = physics.PHYSICS_METHOD
    unchanged = Method("unchanged", lambda counts, *_: counts, lambda counts, *_: counts)
    for pair in simulate_pairs(design):
        added, removed = measure_pair(pair, method, ADD), measure_pair(pair, method, REMOVE)
        baseline = measure_pair(pair, unchanged, ADD)
        assert abs(added.ai - added.ai_truth) < 0.3 * abs(baseline.ai - baseline.ai_truth)
        assert np.sign(added.ai) == np.sign(added.ai_truth) == (1 if pair.lesion.side is Side.RIGHT else -1)
        assert abs(added.inside_bias_pct) < 0.3 * abs(baseline.inside_bias_pct)
        assert added.outside_corr_patient > 0.99 and removed.outside_corr_patient > 0.99
        assert added.inside_mae_pct < baseline.inside_mae_pct


@pytest.mark.parametrize("method", [PHYSICS, LEARNED])
def test_a_derivation_reads_back_from_its_json_and_names_what_was_removed_and_how(method):
    from spectgan.results import Derivation

    derivation = Derivation(method, (Lesion(Side.LEFT, "MCA", 0.5),))
    assert Derivation.from_dict(derivation.to_dict()) == derivation
    text = derivation.describe(Condition(Level.BG, Pattern.NORMAL))
    assert f"left MCA 50% removed ({method} method)" in text
