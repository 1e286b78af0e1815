"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for the discriminator's inputs, without any flip.

Policy: translation and cutout on every image, then brightness and contrast on about half of them. The hemisphere
side is the signal, so nothing here mirrors an image; every operation either moves pixels without reordering columns (translation), replaces a square
with background (cutout), or is a monotone intensity map applied to the whole image (brightness, contrast), so a
left/right asymmetry keeps its sign. Spatial operations fill with the background value -1 (zero counts); colour
operations come last so background and cut-out regions stay one value.

All functions take and return images [B, C, H, W] in the network range and draw from torch's global RNG
(translation's shifts from the CPU generator, the rest from the images' device).
"""
from __future__ import annotations

import torch

BACKGROUND = -1.0
TRANSLATION_RATIO = 0.125  # largest shift as a fraction of the image size (DiffAugment's default)
CUTOUT_RATIO = 0.5  # side of the cut-out square as a fraction of the image size (DiffAugment's default)
# Each image gets brightness and contrast changes with this probability (independently). Below 1 so that the
# discriminator also sees true count levels (with probability 1 the mean counts of generated images are only
# weakly constrained: colour changes "leak", Karras et al. 2020), which the paper's MC statistics need.
COLOUR_PROBABILITY = 0.5


def _per_image(images: torch.Tensor, low: float, high: float, probability: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform factors in [low, high) and whether each image is changed (with ``probability``), both [B, 1, 1, 1]."""
    shape = (images.shape[0], 1, 1, 1)
    factors = torch.empty(shape, device=images.device).uniform_(low, high).to(images.dtype)
    return factors, torch.rand(shape, device=images.device) < probability


def translate(images: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by whole pixels (up to ``ratio`` x size in each axis), filling with background."""
    batch, _, height, width = images.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (batch,)).tolist()
    dx = torch.randint(-max_dx, max_dx + 1, (batch,)).tolist()
    padded = torch.nn.functional.pad(images, (max_dx, max_dx, max_dy, max_dy), value=BACKGROUND)
    # Output pixel (r, c) of image i is input pixel (r - dy, c - dx): a window of the padded copy.
    return torch.stack([padded[i, :, max_dy - dy[i]:max_dy - dy[i] + height, max_dx - dx[i]:max_dx - dx[i] + width]
                        for i in range(batch)])


def cutout(images: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Replace one square per image (side ``ratio`` x size, centre anywhere, clipped) with background."""
    batch, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    centre_y = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=images.device)
    centre_x = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=images.device)
    rows = torch.arange(height, device=images.device)[None, :, None] - centre_y + size_y // 2
    cols = torch.arange(width, device=images.device)[None, None, :] - centre_x + size_x // 2
    inside = (rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x)
    return images.masked_fill(inside[:, None], BACKGROUND)


def brightness(images: torch.Tensor, probability: float = 1.0) -> torch.Tensor:
    """Add an offset in [-0.5, 0.5) to each image (to each with ``probability``; the others pass unchanged)."""
    offsets, changed = _per_image(images, -0.5, 0.5, probability)
    return torch.where(changed, images + offsets, images)


def contrast(images: torch.Tensor, probability: float = 1.0) -> torch.Tensor:
    """Scale each image about its mean by a factor in [0.5, 1.5) (always positive: order-preserving); each with
    ``probability``, the others pass unchanged."""
    factors, changed = _per_image(images, 0.5, 1.5, probability)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(changed, (images - mean) * factors + mean, images)


def diff_augment(images: torch.Tensor, colour_probability: float = COLOUR_PROBABILITY) -> torch.Tensor:
    """The full policy: translation, cutout, then brightness and contrast (each with ``colour_probability``).
    [B, C, H, W] -> same shape."""
    return contrast(brightness(cutout(translate(images)), colour_probability), colour_probability)
