import torch

from spectgan.models.fastgan.augment import BACKGROUND, brightness, contrast, cutout, diff_augment, translate

SIZE = 64


def asymmetric_brain(left_brighter: bool = True) -> torch.Tensor:
    """An elliptical brain [1, 1, 64, 64] whose uptake rises steadily toward the patient's left (higher column)
    (or toward the right), on background -1."""
    rows, cols = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                                indexing="ij")
    inside = ((rows - 31.5) / 26) ** 2 + ((cols - 31.5) / 22) ** 2 <= 1
    ramp = 0.2 + 0.012 * (cols - 31.5) * (1 if left_brighter else -1)
    return torch.where(inside, ramp, torch.tensor(BACKGROUND))[None, None]


def left_right_order(image: torch.Tensor) -> tuple[int, int]:
    """Within the brain (pixels above the image's background level), how many horizontally adjacent pairs rise
    toward the patient's left and how many toward the right."""
    image = image[0, 0]
    brain = image > image.min() + 1e-4
    pairs = brain[:, 1:] & brain[:, :-1]
    steps = (image[:, 1:] - image[:, :-1])[pairs]
    return int((steps > 0).sum()), int((steps < 0).sum())


def test_augmentation_never_mirrors_a_left_right_asymmetry():
    torch.manual_seed(0)
    for left_brighter in (True, False):
        batch = asymmetric_brain(left_brighter).repeat(256, 1, 1, 1)
        for augmented in diff_augment(batch).split(1):
            toward_left, toward_right = left_right_order(augmented)
            # Every in-brain step keeps its direction: the asymmetry's sign survives translation, cutout,
            # brightness and contrast; a mirrored image would have all steps reversed.
            assert (toward_left, toward_right)[0 if left_brighter else 1] > 100
            assert (toward_left, toward_right)[1 if left_brighter else 0] == 0


def test_the_order_statistic_detects_the_other_side():
    toward_left, toward_right = left_right_order(asymmetric_brain(left_brighter=False))
    assert toward_left == 0 and toward_right > 1000


def test_translation_moves_without_reordering():
    torch.manual_seed(1)
    image = torch.arange(SIZE * SIZE, dtype=torch.float32).reshape(1, 1, SIZE, SIZE).repeat(32, 1, 1, 1)
    moved = translate(image)
    assert moved.shape == image.shape
    for one in moved[:, 0]:
        inside = one[one != BACKGROUND]
        assert len(inside) >= (SIZE - 8) ** 2 and torch.all(inside.diff() > 0)  # row-major order kept


def test_cutout_fills_background_and_colour_is_monotone():
    torch.manual_seed(2)
    image = torch.rand(16, 1, SIZE, SIZE)
    cut = cutout(image)
    removed = cut != image
    assert torch.all(cut[removed] == BACKGROUND) and removed.flatten(1).sum(1).max() <= (SIZE // 2) ** 2
    order = image.flatten(1).argsort(dim=1)
    for transformed in (brightness(image), contrast(image)):  # non-decreasing in the original's order
        assert torch.all(transformed.flatten(1).gather(1, order).diff(dim=1) >= 0)
    assert torch.equal(brightness(image, probability=0.0), image) and torch.equal(contrast(image, 0.0), image)
    changed = (brightness(image.repeat(16, 1, 1, 1), probability=0.5) != image.repeat(16, 1, 1, 1)).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 256  # colour changes reach only some images


def test_augmentation_is_differentiable():
    image = torch.rand(4, 1, 32, 32, requires_grad=True)
    diff_augment(image).sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()


def test_without_colour_changes_the_count_level_of_what_survives_stays_true():
    torch.manual_seed(3)
    images = torch.rand(64, 1, 16, 16) * 1.5 - 0.75  # no pixel at the background value
    augmented = diff_augment(images, colour_probability=0.0)
    kept = augmented != BACKGROUND  # translation and cutout only fill background; no pixel's value changes
    assert kept.any() and set(augmented[kept].tolist()) <= set(images.flatten().tolist())
    coloured = diff_augment(images, colour_probability=1.0)
    assert not set(coloured[coloured != BACKGROUND].tolist()) <= set(images.flatten().tolist())
