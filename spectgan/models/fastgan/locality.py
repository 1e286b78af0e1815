"""Defect locality: a condition's defect may change its territory and nothing else.

In the simulated cohort (and in patients) a subject's anatomy, pose and count level do not depend on its defect, so
the slice of a unilateral left MCA defect is that subject's normal slice with the MCA territory reduced. A generator
may learn another way to tell conditions apart (for a fixed latent, a condition that re-draws the whole brain), which
a classifier trained on synthetic slices then learns instead of the defect (``scripts/tstr_diagnostic.py``,
``scripts/condition_mark_figure.py``; the bundles' ``docs/realism.md``).

The locality loss generates each defect slice twice from the same latent and noise maps, once with its condition
and once with that condition's normal twin (same level, no defect), and penalises their difference outside the
defect's footprint: where the simulation's territory model (``spectgan.counterfactual.physics.defect_factor``,
resolution-blurred, with a unilateral MCA defect's crossed cerebellar diaschisis) reduces counts, dilated by a
margin that covers the cohort's pose and size jitter. Inside the footprint the generator is free; the adversarial
and defect-head losses shape the defect there.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from spectgan.conditions import Lesion, Level, Pattern, Side
from spectgan.counterfactual.physics import defect_factor  # the simulation's territory model
from spectgan.geometry.template import pixel_spacing
from spectgan.models.fastgan.networks import NO_TERRITORY, SIDE_INDEX, UNKNOWN_TERRITORY
from spectgan.simulation.phantom import SEVERITY_RANGE

# Covers the simulated pose and size jitter (3 degrees, 3 mm, 5 %: up to about 8 mm at the cortex) and the soft
# edge of a reduction below FOOTPRINT_THRESHOLD.
FOOTPRINT_MARGIN_MM = 10.0
FOOTPRINT_THRESHOLD = 0.02  # a pixel is in the footprint where the strongest defect reduces it by more than this
NORMAL = list(Pattern).index(Pattern.NORMAL)


def normal_twin(condition: torch.Tensor) -> torch.Tensor:
    """The normal condition [B, 7] of the same level as each encoded condition [B, 7] (defect axes): pattern
    normal, no side, no territory and severity 0 in both hemispheres."""
    twin = condition.clone()
    twin[:, 1], twin[:, 2] = NORMAL, SIDE_INDEX[None]
    twin[:, 3::2], twin[:, 4::2] = NO_TERRITORY, 0.0
    return twin


class DefectFootprints:
    """Where each encoded condition's defects may change a slice of ``image_size`` pixels on the canonical grid of
    its level: masks [S, S] of 1 inside the dilated footprint of the condition's territories (at the strongest
    severity the simulation draws), cached per level and pair of hemisphere territories. A hemisphere whose
    territory is unknown (an imported cohort) frees the whole slice: nothing is known of where its defect lies."""

    def __init__(self, territories: tuple[str, ...], image_size: int, margin_mm: float = FOOTPRINT_MARGIN_MM):
        self.territories, self.image_size = tuple(territories), int(image_size)
        self.margin_px = margin_mm / pixel_spacing(self.image_size)
        self._masks: dict[tuple[int, int, int], torch.Tensor] = {}

    def _mask(self, level: int, left: int, right: int) -> torch.Tensor:
        if UNKNOWN_TERRITORY in (left, right):
            return torch.ones(self.image_size, self.image_size)
        lesions = [Lesion(side, self.territories[slot - 2], SEVERITY_RANGE[1])
                   for side, slot in zip(Side, (left, right)) if slot != NO_TERRITORY]
        if not lesions:
            return torch.zeros(self.image_size, self.image_size)
        reduction = 1.0 - defect_factor(lesions, list(Level)[level], self.image_size)
        inside = reduction > FOOTPRINT_THRESHOLD * float(reduction.max())
        radius = int(np.ceil(self.margin_px))
        yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
        disk = (xx ** 2 + yy ** 2) <= self.margin_px ** 2
        return torch.from_numpy(ndimage.binary_dilation(inside, structure=disk).astype(np.float32))

    def allowed(self, condition: torch.Tensor) -> torch.Tensor:
        """Masks [B, 1, S, S] (1 where the defect may change the slice) for encoded conditions [B, 7]."""
        masks = []
        for row in condition.detach().cpu().long().tolist():
            key = (row[0], row[3], row[5])
            if key not in self._masks:
                self._masks[key] = self._mask(*key)
            masks.append(self._masks[key])
        return torch.stack(masks)[:, None].to(condition.device)


def has_defect(condition: torch.Tensor) -> torch.Tensor:
    """Which encoded conditions [B, 3 or 7] are not normal: bool [B]."""
    return condition[:, 1].long() != NORMAL


def locality_loss(fake: torch.Tensor, twin: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (network range) between generated defect slices [B, 1, S, S] and their normal
    twins from the same latent and noise, over the pixels outside each slice's allowed region [B, 1, S, S]; 0 when
    there are none."""
    outside = 1.0 - allowed
    pixels = outside.sum()
    if pixels == 0:
        return fake.new_zeros((), dtype=torch.float32)
    return ((fake.float() - twin.float()).abs() * outside).sum() / pixels
