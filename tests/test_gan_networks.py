import pytest
import torch
from gan_toy_cohort import single_thread  # noqa: F401 (fixture)

from spectgan.conditions import Condition, Level, Pattern, Side, valid_conditions
from spectgan.models.fastgan.networks import (Discriminator, Generator, encode_conditions, to_counts, to_network_range)

CONDITIONS = encode_conditions(valid_conditions()[:4])


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_follow_the_image_size(size):
    generator, discriminator = Generator(size, width=4), Discriminator(size, width=4, reconstruction_size=16)
    images = generator(torch.randn(4, generator.latent_dim), CONDITIONS)
    assert images.shape == (4, 1, size, size) and images.abs().max() <= 1
    assert generator.block_resolutions[-1] == size and len(generator.blocks) == {32: 3, 64: 4, 128: 5}[size]
    logits, classes, (whole, part) = discriminator(images, CONDITIONS, quadrant=3)
    assert classes.shape == (4, 9)
    assert logits.shape == (4, 25) and whole.shape == part.shape == (4, 1, 16, 16)
    assert discriminator(images, CONDITIONS)[0].shape == (4, 25)


def test_unsupported_size_is_refused():
    with pytest.raises(ValueError, match="32, 64, 128"):
        Generator(96)


def test_condition_encoding():
    codes = encode_conditions([Condition(Level.CER, Pattern.NORMAL), Condition(Level.COR, Pattern.UNILATERAL, Side.RIGHT)])
    assert codes.tolist() == [[0, 0, 0], [2, 1, 2]]


def test_conditions_and_noise_change_the_image_and_the_logits():
    torch.manual_seed(0)
    generator, discriminator = Generator(32, width=4).eval(), Discriminator(32, width=4, reconstruction_size=16)
    for module in (generator, discriminator):  # move the condition paths away from their zero initialisation
        for name, parameter in module.named_parameters():
            if "scale" in name or "shift" in name or "noises" in name:
                torch.nn.init.normal_(parameter, std=0.5)
    latent = torch.randn(1, generator.latent_dim)
    noise = [torch.randn(shape) for shape in generator.noise_shapes(1)]
    left, right = (encode_conditions([Condition(Level.BG, Pattern.UNILATERAL, side)]) for side in Side)
    with torch.no_grad():
        assert torch.equal(generator(latent, left, noise), generator(latent, left, noise))
        assert not torch.allclose(generator(latent, left, noise), generator(latent, right, noise))
        other_noise = [torch.randn(shape) for shape in generator.noise_shapes(1)]
        assert not torch.allclose(generator(latent, left, noise), generator(latent, left, other_noise))
        image = generator(latent, left, noise)
        discriminator.eval()
        assert not torch.allclose(discriminator(image, left)[0], discriminator(image, right)[0])


def test_count_mapping_round_trip_and_non_negative():
    counts = torch.tensor([0.0, 50.0, 100.0, 250.0])
    images = to_network_range(counts, count_scale=200.0)
    assert images.tolist() == [-1.0, -0.5, 0.0, 1.0]  # above the scale clamps
    assert torch.allclose(to_counts(images, 200.0), torch.tensor([0.0, 50.0, 100.0, 200.0]))
    assert to_counts(torch.tensor([-1.0]), 200.0).item() == 0.0


def test_default_generator_weights_fit_a_bundle():
    generator = Generator()
    megabytes = sum(t.numel() * t.element_size() for t in generator.state_dict().values()) / 2 ** 20
    assert megabytes < 50


def test_reconstruction_output_zeroes_the_floor_and_keeps_only_the_filters_band():
    from spectgan.models.fastgan.networks import ReconstructionOutput

    stage = ReconstructionOutput(sigma=1.0, floor=0.01)
    flat = stage(torch.full((1, 1, 32, 32), -4.0))  # tanh(-4) is 0.0007 of the range above -1: below the floor
    assert torch.all(flat == -1.0)  # exactly zero counts, as OSEM leaves the background
    noise = stage(torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 3)
    power = (torch.fft.fft2((noise + 1) / 2).abs() ** 2).mean(dim=(0, 1))
    # a Gaussian of sigma 1 px passes exp(-(2 pi f)^2) of the power at f cycles/px: 3e-9 at Nyquist (0.5)
    assert power[16, 16] / power[1:4, 1:4].mean() < 1e-3
    assert "profile" not in stage.state_dict()  # it follows from sigma: weights saved without it still load
    with pytest.raises(ValueError, match="sigma >= 0 pixels and 0 <= floor < 1"):
        ReconstructionOutput(sigma=-1.0, floor=0.0)


def test_a_generator_saved_before_the_output_stage_loads_into_one_with_it():
    bare = Generator(image_size=32, latent_dim=8, width=4, condition_dim=4)
    staged = Generator(image_size=32, latent_dim=8, width=4, condition_dim=4, output_filter_sigma=0.97,
                       output_floor=0.001)
    staged.load_state_dict(bare.state_dict())


def test_noise_stage_adds_count_dependent_correlated_noise_from_one_more_map():
    from spectgan.models.fastgan.networks import ReconstructionNoise

    plain = Generator(image_size=32, latent_dim=8, width=4, condition_dim=4, output_filter_sigma=0.97)
    noisy = Generator(image_size=32, latent_dim=8, width=4, condition_dim=4, output_filter_sigma=0.97,
                      output_noise={"gain": 0.05, "exponent": 0.5, "sigma_px": 1.2})
    assert noisy.noise_shapes(3) == plain.noise_shapes(3) + [(3, 1, 32, 32)]
    noisy.load_state_dict(plain.state_dict())  # the stage has no weights: fine-tuning starts from a plain run

    stage = ReconstructionNoise(gain=0.05, exponent=0.5, sigma_px=1.2)
    white = torch.randn(200, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    for level in (0.09, 0.64):  # SD 0.05 * sqrt(level): 0.015 and 0.04 in [0, 1]
        out = (stage(torch.full((200, 1, 32, 32), 2 * level - 1), white) + 1) / 2
        assert float(out.std()) == pytest.approx(0.05 * level ** 0.5, rel=0.1)
        assert float(out.mean()) == pytest.approx(level, abs=0.005)
    assert torch.all(stage(torch.full((2, 1, 32, 32), -1.0), white[:2]) == -1.0)  # no counts: no noise
    neighbours = (out[..., 1:] - level) * (out[..., :-1] - level)
    assert float(neighbours.mean() / out.var()) > 0.6  # correlated: exp(-1 / (4 sigma^2)) = 0.84 for sigma 1.2 px
    with pytest.raises(ValueError, match="gain >= 0 and sigma_px > 0"):
        ReconstructionNoise(gain=0.05, exponent=0.5, sigma_px=0.0)


def test_severity_calibration_learns_the_heads_reading_of_real_hemispheres():
    from spectgan.lesions import Lesion
    from spectgan.models.fastgan.networks import (CONDITION_CLASSES, SEVERITY_SCALE, SeverityCalibration,
                                                  defect_loss)

    territories = ("ACA", "MCA")
    generator = torch.Generator().manual_seed(0)
    severities = 0.15 + 0.35 * torch.rand(64, generator=generator)
    conditions = [Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT, lesions=(Lesion(Side.LEFT, "MCA", float(s)),))
                  for s in severities]
    encoded = encode_conditions(conditions, territories)
    slots = len(territories) + 2
    # a head that reads the affected hemisphere as 1 + 6 x severity (milder than 12 x) and the other as 0.3
    logits = torch.zeros(len(conditions), sum(CONDITION_CLASSES) + 2 * (slots + 1))
    per_hemisphere = logits[:, sum(CONDITION_CLASSES):].view(len(conditions), 2, slots + 1)
    per_hemisphere[:, 0, -1] = 1.0 + 6.0 * severities
    per_hemisphere[:, 1, -1] = 0.3
    calibration = SeverityCalibration(slots)
    mca, none = torch.tensor([3, 3]), torch.tensor([0])
    before = calibration.target(mca, torch.tensor([0.2, 0.4]))
    assert torch.allclose(before, SEVERITY_SCALE * torch.tensor([0.2, 0.4]))  # too few real hemispheres yet
    for _ in range(3):
        calibration.update(logits, encoded)
    assert torch.allclose(calibration.target(mca, torch.tensor([0.2, 0.4])), torch.tensor([2.2, 3.4]), atol=1e-4)
    assert torch.allclose(calibration.target(none, torch.tensor([0.0])), torch.tensor([0.3]), atol=1e-4)
    # the generator's severity loss is zero for readings equal to the real ones, not for 12 x severity
    territory_part = defect_loss(logits, encoded) - torch.nn.functional.mse_loss(
        per_hemisphere[:, 0, -1], SEVERITY_SCALE * severities) - torch.nn.functional.mse_loss(
        per_hemisphere[:, 1, -1], torch.zeros(len(conditions)))
    assert torch.isclose(defect_loss(logits, encoded, calibration), territory_part, atol=1e-4)
    restored = SeverityCalibration(slots)
    restored.load_state_dict(calibration.state_dict())
    assert torch.equal(restored.sums, calibration.sums)


def test_locality_frees_the_defect_footprint_on_its_side_and_nothing_else():
    from spectgan.geometry.template import canonical_image
    from spectgan.lesions import Lesion
    from spectgan.models.fastgan.locality import DefectFootprints, has_defect, locality_loss, normal_twin

    territories = ("ACA", "MCA", "PCA")
    conditions = [Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT, lesions=(Lesion(Side.LEFT, "MCA", 0.2),)),
                  Condition(Level.BG, Pattern.UNILATERAL, Side.RIGHT, lesions=(Lesion(Side.RIGHT, "MCA", 0.4),)),
                  Condition(Level.BG, Pattern.NORMAL)]
    encoded = encode_conditions(conditions, territories)
    twin = normal_twin(encoded)
    assert twin.tolist() == [encode_conditions([Condition(Level.BG, Pattern.NORMAL)], territories)[0].tolist()] * 3
    assert has_defect(encoded).tolist() == [True, True, False]
    allowed = DefectFootprints(territories, 64).allowed(encoded)
    assert allowed.shape == (3, 1, 64, 64) and allowed[2].sum() == 0
    # patient left is +x: the left defect's footprint lies at larger x than the right one's, mirror images apart
    grid = canonical_image(torch.zeros(64, 64).numpy(), Level.BG)
    x = torch.tensor([grid.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(64)])
    left_x, right_x = ((mask[0] * x).sum() / mask[0].sum() for mask in allowed[:2])
    assert left_x > 20 and right_x < -20
    assert 0.1 < allowed[0].mean() < 0.5  # a territory, not a hemisphere or the whole slice
    # the loss sees a change outside the footprint and ignores one inside it
    fake = torch.zeros(2, 1, 64, 64)
    inside, outside = fake + allowed[:2], fake + (1 - allowed[:2])
    assert locality_loss(inside, fake, allowed[:2]) == 0
    assert torch.isclose(locality_loss(outside, fake, allowed[:2]), torch.tensor(1.0))


def test_profile_is_the_simulation_factor_of_each_lesion_and_skips_unknown_ones():
    from spectgan.counterfactual.physics import defect_factor
    from spectgan.lesions import Lesion
    from spectgan.models.fastgan.locality import DefectFootprints, profile_loss

    territories = ("ACA", "MCA", "PCA", "PICA")
    known = [Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT, lesions=(Lesion(Side.LEFT, "MCA", 0.27),)),
             Condition(Level.CER, Pattern.UNILATERAL, Side.RIGHT, lesions=(Lesion(Side.RIGHT, "MCA", 0.45),)),
             Condition(Level.CER, Pattern.BILATERAL, lesions=(Lesion(Side.LEFT, "MCA", 0.33),
                                                              Lesion(Side.RIGHT, "PICA", 0.18)))]
    unknown = Condition(Level.BG, Pattern.UNILATERAL, Side.RIGHT, lesions=(Lesion(Side.RIGHT),))
    footprints = DefectFootprints(territories, 64)
    encoded = encode_conditions(known + [unknown], territories)
    factor, has_profile = footprints.expected_factor(encoded)
    assert has_profile.tolist() == [True, True, True, False] and torch.all(factor[3] == 1)
    for condition, expected in zip(known, factor):  # linear in each severity; the bilateral one has no diaschisis
        assert torch.allclose(expected[0], torch.tensor(defect_factor(condition.lesions, condition.level, 64)),
                              atol=1e-4)
    left = factor[0, 0, :, 32:].min() < 0.9 and factor[0, 0, :, :32].min() > 0.99  # patient left is +x
    assert left
    # the loss is 0 for a defect slice that is its twin times the factor, and counts only known slices' footprints
    allowed = footprints.allowed(encoded)
    twin = torch.full((4, 1, 64, 64), 0.2)
    exact = (twin + 1) * factor - 1
    assert profile_loss(exact, twin, factor, allowed, has_profile) < 1e-6
    assert torch.isclose(profile_loss(exact + 0.1, twin, factor, allowed, has_profile), torch.tensor(0.1))
    assert profile_loss(twin, twin, factor, allowed, has_profile) > 0.01  # no defect drawn: a loss
    nothing_known = torch.zeros(4, dtype=torch.bool)
    assert profile_loss(exact + 0.1, twin, factor, allowed, nothing_known) == 0


def test_asymmetry_hinge_reads_left_as_plus_x_and_penalises_too_symmetric_normals():
    from spectgan.models.fastgan.asymmetry import asymmetry_shortfall, normal_asymmetry, signed_ai

    size, generator = 32, torch.Generator().manual_seed(0)
    disk = ((torch.arange(size) - 15.5)[None] ** 2 + (torch.arange(size) - 15.5)[:, None] ** 2) < 12 ** 2
    columns = torch.arange(size, dtype=torch.float32)[None, None, None] - 15.5  # + toward the patient's left
    gains = torch.randn(40, 1, 1, 1, generator=generator) * 0.002  # a left-right tilt per normal slice
    images = torch.where(disk, 0.2 + gains * columns, -1.0)
    encoded = encode_conditions([Condition(Level.BG, Pattern.NORMAL)] * 40)
    target = normal_asymmetry(images, encoded)
    bg = list(Level).index(Level.BG)
    assert target.sd[bg] > 0 and target.sd[list(Level).index(Level.COR)] == 0  # no COR normals: no target
    assert target.masks[bg, 0, :, size // 2:].sum() > 0 and target.masks[bg, 0, :, :size // 2].sum() == 0
    brighter_left = torch.where(disk, 0.2 + 0.01 * columns.clamp(min=0).sign(), -1.0)
    assert signed_ai(brighter_left[:, :1].expand(1, 1, size, size).clone(), target.masks[bg][None]) > 0
    # the real spread costs nothing; symmetric normals, or a fixed tilt in every normal, cost a hinge
    assert asymmetry_shortfall(images, encoded, target) < 0.2
    symmetric = torch.where(disk, torch.full_like(images, 0.2), -1.0)
    assert 1.0 <= asymmetry_shortfall(symmetric, encoded, target) < 1.2  # the SD's hinge, and the mean's offset
    tilted = torch.where(disk, 0.2 + 0.004 * columns, -1.0).expand(40, 1, size, size)
    assert asymmetry_shortfall(tilted, encoded, target) > 1.0
    defects = encode_conditions([Condition(Level.BG, Pattern.UNILATERAL, Side.LEFT)] * 40)
    assert asymmetry_shortfall(symmetric, defects, target) == 0  # defect slices are not its business


def test_count_level_hinge_penalises_a_collapsed_or_shifted_count_level_per_level_and_pattern():
    from spectgan.models.fastgan.count_level import count_level_shortfall, count_levels, mean_counts

    size, generator = 32, torch.Generator().manual_seed(0)
    disk = ((torch.arange(size) - 15.5)[None] ** 2 + (torch.arange(size) - 15.5)[:, None] ** 2) < 12 ** 2
    brightness = 0.2 + torch.randn(40, 1, 1, 1, generator=generator) * 0.1  # a count level per slice
    images = torch.where(disk, brightness, -1.0)
    conditions = [Condition(Level.COR, Pattern.NORMAL)] * 20 + [Condition(Level.COR, Pattern.UNILATERAL,
                                                                          Side.LEFT)] * 20
    encoded = encode_conditions(conditions)
    target = count_levels(images, encoded)
    cor, bg = list(Level).index(Level.COR), list(Level).index(Level.BG)
    assert target.masks[cor].bool().equal(disk) and target.masks[bg].sum() == 0  # no BG slices: no mask, no target
    assert torch.allclose(mean_counts(images, target.masks[[cor] * 40]), brightness.flatten() + 1.0)
    assert target.sd[cor, 0] > 0.05 and target.sd[bg].eq(0).all()
    # the real spread costs little; one count level for every slice, or every slice 20 % dimmer, costs a hinge
    assert count_level_shortfall(images, encoded, target) < 0.1
    collapsed = torch.where(disk, torch.full_like(images, float(brightness.mean())), -1.0)
    assert 1.0 <= count_level_shortfall(collapsed, encoded, target) < 1.3  # the SD's hinge, and the offsets
    dimmer = (images + 1.0) * 0.8 - 1.0
    assert count_level_shortfall(dimmer, encoded, target) > 1.0
    assert count_level_shortfall(collapsed, encode_conditions([Condition(Level.BG, Pattern.NORMAL)] * 40),
                                 target) == 0  # a level without train slices has no target


def test_count_level_energy_costs_least_for_the_real_distribution_and_sees_a_second_mode():
    from spectgan.models.fastgan.count_level import count_level_shortfall, count_levels

    size, generator = 32, torch.Generator().manual_seed(1)
    disk = ((torch.arange(size) - 15.5)[None] ** 2 + (torch.arange(size) - 15.5)[:, None] ** 2) < 12 ** 2
    encoded = encode_conditions([Condition(Level.COR, Pattern.NORMAL)] * 400)
    real = torch.where(disk, 0.2 + torch.randn(400, 1, 1, 1, generator=generator) * 0.1, -1.0)
    target = count_levels(real, encoded)
    assert target.values.shape[-1] == 400 and target.values[list(Level).index(Level.COR), 0].isnan().sum() == 0

    def mean_cost(levels: torch.Tensor) -> float:  # over batches of 4, as training sees them
        images = torch.where(disk, levels, -1.0)
        return float(torch.stack([count_level_shortfall(images[i:i + 4], encoded[:4], target, "energy")
                                  for i in range(0, len(images), 4)]).mean())

    draws = torch.randn(2000, 1, 1, 1, generator=generator)
    same = mean_cost(0.2 + draws * 0.1)
    two_modes = mean_cost(0.2 + draws.sign() * 0.1)  # the real mean and SD, two modes
    assert abs(same) < 0.02  # its expectation is 0 for the real distribution
    assert same < two_modes and same < mean_cost(0.2 + draws * 0.05) and same < mean_cost(0.25 + draws * 0.1)
    assert float(count_level_shortfall(torch.where(disk, 0.2 + draws[:4] * 0.1, -1.0), encoded[:4], target,
                                       "moments")) >= 0
    with pytest.raises(ValueError, match="moments, energy"):
        count_level_shortfall(real[:4], encoded[:4], target, "median")
