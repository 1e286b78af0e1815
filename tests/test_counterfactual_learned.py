"""The learned counterfactual (spectgan.counterfactual.learned) with the shipped model A: on simulated patients'
slices a defect lands on the requested side (left = +x) and the other hemisphere keeps the patient's pattern,
removal raises the affected side, a seed gives one answer, and what the model cannot make is refused."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.counterfactual import learned
from spectgan.counterfactual.paired import paired_design, simulate_pairs
from spectgan.errors import InvalidRequestError
from spectgan.geometry.roi import TEMPLATE_MIDLINE
from spectgan.geometry.template import canonical_origin, pixel_spacing
from spectgan.models.fastgan.bundle import load_bundle

MODELS = Path(__file__).resolve().parents[1] / "models"
MATRIX = 64


@pytest.fixture(scope="module")
def model_a() -> learned.LearnedCounterfactual:
    return learned.LearnedCounterfactual(load_bundle(MODELS / "spect_fastgan_A"), seed=0)


@pytest.fixture(scope="module")
def bg_mca_pairs():
    """Two simulated subjects at BG with a 50 % MCA defect, one left, one right, acquired with and without it."""
    design = [item for item in paired_design(2, seed=3) if item[:2] == (Level.BG, "MCA")]
    assert {item[2] for item in design} == {Side.LEFT, Side.RIGHT} and {item[3] for item in design} == {0.15, 0.5}
    design = [(level, territory, side, 0.5, seed) for level, territory, side, _, seed in design]
    return simulate_pairs(design)


def _hemispheres(side: Side) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(affected, other) column ranges of the canonical BG grid; left = +x = higher columns."""
    middle = int(round((TEMPLATE_MIDLINE.point[0] - canonical_origin(Level.BG, MATRIX)[0]) / pixel_spacing(MATRIX)))
    left, right = np.s_[:, middle + 2:], np.s_[:, :middle - 1]
    return (left, right) if side is Side.LEFT else (right, left)


def test_an_added_defect_lowers_its_own_side_and_keeps_the_patients_other_hemisphere(model_a, bg_mca_pairs):
    for pair in bg_mca_pairs:
        patient = pair.without
        made = model_a.add(patient, [pair.lesion], Level.BG)
        brain = patient > 0.3 * patient.max()
        affected, other = _hemispheres(pair.lesion.side)
        assert made[affected][brain[affected]].mean() < 0.92 * patient[affected][brain[affected]].mean()
        kept, own = made[other][brain[other]], patient[other][brain[other]]
        assert np.corrcoef(kept, own)[0, 1] > 0.95
        assert abs(kept.mean() / own.mean() - 1) < 0.05


def test_removing_a_defect_raises_its_side(model_a, bg_mca_pairs):
    for pair in bg_mca_pairs:
        patient = pair.with_defect
        made = model_a.remove(patient, [pair.lesion], Level.BG)
        brain = pair.without > 0.3 * pair.without.max()
        affected, other = _hemispheres(pair.lesion.side)
        assert made[affected][brain[affected]].mean() > 1.08 * patient[affected][brain[affected]].mean()
        assert np.corrcoef(made[other][brain[other]], patient[other][brain[other]])[0, 1] > 0.95


def test_a_seed_gives_one_answer_and_another_seed_another(bg_mca_pairs):
    bundle = load_bundle(MODELS / "spect_fastgan_A")
    pair = bg_mca_pairs[0]
    first, again, other = (learned.LearnedCounterfactual(bundle, seed).add(pair.without, [pair.lesion], Level.BG)
                           for seed in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_what_the_model_cannot_make_is_refused_naming_what_it_takes(model_a):
    counts = np.ones((MATRIX, MATRIX), np.float32)
    with pytest.raises(InvalidRequestError, match="territory PICA is not available at BG; allowed: ACA, MCA, PCA"):
        model_a.add(counts, [Lesion(Side.LEFT, "PICA", 0.3)], Level.BG)
    with pytest.raises(InvalidRequestError, match="needs its territory and severity"):
        model_a.remove(counts, [Lesion(Side.LEFT, "MCA", None)], Level.BG)
    with pytest.raises(InvalidRequestError, match="takes canonical slices of 64 x 64 pixels"):
        model_a.add(np.ones((32, 32), np.float32), [Lesion(Side.LEFT, "MCA", 0.3)], Level.BG)
    model_b = learned.LearnedCounterfactual(load_bundle(MODELS / "spect_fastgan_B"))
    with pytest.raises(InvalidRequestError, match="not available at BG; allowed: none .learned method of "
                                                  "spect_fastgan_B"):
        model_b.add(counts, [Lesion(Side.LEFT, "MCA", 0.3)], Level.BG)


def test_a_bilateral_defect_condition_lists_left_first():
    lesions = [Lesion(Side.RIGHT, "ACA", 0.2), Lesion(Side.LEFT, "MCA", 0.3)]
    condition = learned.defect_condition(Level.COR, lesions)
    assert condition == Condition(Level.COR, Pattern.BILATERAL, None, tuple(reversed(lesions)))
