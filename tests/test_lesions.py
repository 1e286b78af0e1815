"""Territory and severity: parsing, the manifest cell, the cohort's distribution and drawing from it."""
import numpy as np
import pytest
import torch

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.lesions import DefectAxes, LesionDistribution, lesion_text, parse_lesions, resolve_conditions
from spectgan.models.fastgan.networks import DefectEmbedding, Generator, encode_conditions

UNI_LEFT = Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT)
BILATERAL = Condition(Level.COR, Pattern.BILATERAL)


def test_request_forms_per_pattern():
    assert parse_lesions(Pattern.UNILATERAL, Side.RIGHT, "mca", "0.3") == (Lesion(Side.RIGHT, "MCA", 0.3),)
    assert parse_lesions(Pattern.UNILATERAL, Side.LEFT) == (Lesion(Side.LEFT),)
    both = (Lesion(Side.LEFT, "MCA", 0.2), Lesion(Side.RIGHT, "ACA", 0.4))
    assert parse_lesions(Pattern.BILATERAL, None, "left=MCA;right=ACA", "left=0.2, right=0.4") == both
    assert parse_lesions(Pattern.BILATERAL, None, {"left": "MCA", "right": "ACA"}, {"left": 0.2, "right": 0.4}) == both
    assert parse_lesions(Pattern.BILATERAL, None, "MCA", None) == (Lesion(Side.LEFT, "MCA"), Lesion(Side.RIGHT, "MCA"))
    assert parse_lesions(Pattern.BILATERAL, None, {"right": "ACA"}) == (Lesion(Side.LEFT), Lesion(Side.RIGHT, "ACA"))
    assert parse_lesions(Pattern.NORMAL, None, "", None) == ()


@pytest.mark.parametrize("pattern, side, territory, severity, message", [
    (Pattern.NORMAL, None, "MCA", None, "normal pattern takes neither"),
    (Pattern.UNILATERAL, Side.LEFT, "left=MCA", None, "one territory"),
    (Pattern.UNILATERAL, Side.LEFT, None, 1.5, r"fraction of CBF in \[0, 1\)"),
    (Pattern.UNILATERAL, Side.LEFT, None, "lots", "fraction of CBF"),
    (Pattern.UNILATERAL, Side.LEFT, "M C A", None, "territory name"),
    (Pattern.BILATERAL, None, "top=MCA", None, "allowed: left, right"),
    (Pattern.BILATERAL, None, "left=MCA;left=ACA", None, "left side twice"),
])
def test_bad_forms_name_what_is_allowed(pattern, side, territory, severity, message):
    with pytest.raises(ValueError, match=message):
        parse_lesions(pattern, side, territory, severity)


def test_manifest_cell_round_trip():
    condition = Condition(Level.BG, Pattern.BILATERAL, None, (Lesion(Side.LEFT, "PCA", 0.1509),
                                                               Lesion(Side.RIGHT, "PCA", 0.2771)))
    assert lesion_text(condition, "territory") == "PCA"
    assert lesion_text(condition, "severity") == "left=0.1509;right=0.2771"
    parsed = parse_lesions(condition.pattern, None, lesion_text(condition, "territory"),
                           lesion_text(condition, "severity"))
    assert parsed == condition.lesions
    assert condition.to_dict()["severity"] == {"left": 0.1509, "right": 0.2771}


def _distribution() -> LesionDistribution:
    rows = [Condition(UNI_LEFT.level, UNI_LEFT.pattern, Side.LEFT, (Lesion(Side.LEFT, territory, severity),))
            for territory, severity in (("MCA", 0.2), ("MCA", 0.45), ("ACA", 0.3), ("PCA", 0.16))]
    rows.append(Condition(Level.COR, Pattern.BILATERAL, None, (Lesion(Side.LEFT, "MCA", 0.2),
                                                               Lesion(Side.RIGHT, "ACA", 0.5))))
    return LesionDistribution.from_conditions(rows)


def test_distribution_declares_its_axes_and_round_trips():
    distribution = _distribution()
    axes = distribution.axes()
    assert axes.territories == {"BG": ("ACA", "MCA", "PCA"), "COR": ("ACA", "MCA")}
    assert axes.severity_range == (0.16, 0.5)
    assert DefectAxes.from_dict(axes.to_dict()) == axes
    assert LesionDistribution.from_dict(distribution.to_dict()) == distribution
    with pytest.raises(ValueError, match="allowed: ACA, MCA$"):
        axes.check(Condition(Level.COR, Pattern.BILATERAL, None, (Lesion(Side.LEFT, "PCA"),)))
    with pytest.raises(ValueError, match="allowed: 0.16 to 0.5"):
        axes.check(Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT, (Lesion(Side.LEFT, "MCA", 0.6),)))


def test_drawing_keeps_what_was_given_and_follows_the_cohort():
    distribution = _distribution()
    drawn = resolve_conditions([UNI_LEFT] * 400, distribution, seed=5)
    assert drawn == resolve_conditions([UNI_LEFT] * 400, distribution, seed=5)  # same seed, same lesions
    pairs = [(c.lesions[0].territory, c.lesions[0].severity) for c in drawn]
    assert set(pairs) == {("MCA", 0.2), ("MCA", 0.45), ("ACA", 0.3), ("PCA", 0.16)}  # rows of the cohort, joint
    given = Condition(UNI_LEFT.level, UNI_LEFT.pattern, Side.LEFT, (Lesion(Side.LEFT, "MCA"),))
    severities = {c.lesions[0].severity for c in resolve_conditions([given] * 200, distribution, seed=1)}
    assert severities == {0.2, 0.45}  # severity drawn among the cohort's MCA defects only
    fixed = Condition(Level.COR, Pattern.BILATERAL, None, (Lesion(Side.RIGHT, None, 0.33),))
    resolved = distribution.resolve(fixed, np.random.default_rng(0))
    assert resolved.lesions == (Lesion(Side.LEFT, "MCA", 0.2), Lesion(Side.RIGHT, "ACA", 0.33))
    assert distribution.resolve(Condition(Level.BG, Pattern.NORMAL), np.random.default_rng(0)).lesions == ()


def test_encoding_and_zero_start_of_the_defect_embedding():
    condition = Condition(Level.COR, Pattern.BILATERAL, None, (Lesion(Side.LEFT, "MCA", 0.2), Lesion(Side.RIGHT)))
    codes = encode_conditions([condition, UNI_LEFT.base], ("ACA", "MCA"))
    assert codes.shape == (2, 7) and codes.dtype == torch.float32
    assert codes[0].tolist() == [2, 2, 0, 3, pytest.approx(0.2), 1, -1]  # MCA = 2 + 1; right: unknown, unknown
    assert codes[1, 3:].tolist() == [1, -1, 0, 0]  # a unilateral left lesion not named: unknown; right: none
    embedding = DefectEmbedding(8, territories=2)
    assert torch.count_nonzero(embedding(codes)) == 0  # a model without the axes starts where it was
    torch.manual_seed(0)
    plain = Generator(image_size=32, width=4, latent_dim=8, condition_dim=8)
    with_axes = Generator(image_size=32, width=4, latent_dim=8, condition_dim=8, territories=("ACA", "MCA"))
    missing = with_axes.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("defect_embedding.") for key in missing)
    latent = torch.randn(2, 8)
    noise = [torch.randn(shape) for shape in plain.noise_shapes(2)]
    plain.eval(), with_axes.eval()
    assert torch.equal(plain(latent, codes[:, :3].long(), noise), with_axes(latent, codes, noise))


def test_defect_head_pools_each_hemisphere_on_its_side_and_its_loss_rewards_the_requested_size():
    from spectgan.models.fastgan.networks import SEVERITY_SCALE, defect_loss, hemisphere_pool

    features = torch.zeros(1, 2, 8, 8)
    features[..., 4:] = 1.0  # the array's right half: columns toward the patient's LEFT
    assert hemisphere_pool(features).tolist() == [[1.0, 1.0, 0.0, 0.0]]  # left hemisphere first
    codes = encode_conditions([Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT,
                                         (Lesion(Side.LEFT, "MCA", 0.2),))], ("ACA", "MCA"))
    exact = torch.zeros(1, 9 + 2 * 5)
    exact[0, 9 + 3] = 20.0  # left: territory MCA (index 3) certain
    exact[0, 9 + 4] = SEVERITY_SCALE * 0.2  # left: the requested severity
    exact[0, 9 + 5] = 20.0  # right: no lesion (index 0) certain
    assert defect_loss(exact, codes).item() < 1e-6
    stronger = exact.clone()
    stronger[0, 9 + 4] = SEVERITY_SCALE * 0.45  # a more severe defect than asked for costs
    assert defect_loss(stronger, codes).item() == pytest.approx(SEVERITY_SCALE ** 2 * 0.25 ** 2, rel=1e-4)
