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
margin that covers the cohort's pose and size jitter.

The profile loss shapes the defect inside the footprint: a defect slice must be its normal twin times the
simulation's own factor for that territory and severity (``expected_factor``), as in the cohort, where a defect is
the subject's perfusion times that factor. Without it the adversarial and defect-head losses alone made the
generator's depth follow the severity too little (mild defects too deep, strong ones half as deep as the
simulation's: ``scripts/defect_profile.py``), and a classifier trained on such slices missed real mild defects.
A hemisphere whose territory or severity is unknown (an imported cohort) has no profile: the loss leaves its slice
out.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from spectgan.conditions import Lesion, Level, Pattern, Side
from spectgan.counterfactual.physics import defect_factor  # the simulation's territory model
from spectgan.geometry.template import pixel_spacing
from spectgan.models.fastgan.networks import NO_TERRITORY, SIDE_INDEX, UNKNOWN_SEVERITY, UNKNOWN_TERRITORY
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
        self._units: dict[tuple[int, int, int], torch.Tensor] = {}

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

    def _unit_reductions(self, level: int, left: int, right: int) -> torch.Tensor:
        """The reduction [2, S, S] per unit severity of the left and of the right lesion of a condition whose
        hemisphere territories are ``left`` and ``right`` (known or none): the simulation's factor is linear in
        each severity, so two of its factors (a unilateral one; a bilateral one at swapped severities) give both."""
        strong, mild = SEVERITY_RANGE[1], SEVERITY_RANGE[0]
        grid = list(Level)[level]
        slots = [(side, slot) for side, slot in zip(Side, (left, right)) if slot != NO_TERRITORY]
        units = np.zeros((2, self.image_size, self.image_size), np.float32)
        if len(slots) == 1:
            side, slot = slots[0]
            units[list(Side).index(side)] = (1.0 - defect_factor([Lesion(side, self.territories[slot - 2], strong)],
                                                                 grid, self.image_size)) / strong
        elif slots:
            def reduction(severities):
                return 1.0 - defect_factor([Lesion(side, self.territories[slot - 2], severity)
                                            for (side, slot), severity in zip(slots, severities)], grid, self.image_size)
            first, second = reduction((strong, mild)), reduction((mild, strong))
            units[0] = (strong * first - mild * second) / (strong ** 2 - mild ** 2)
            units[1] = (strong * second - mild * first) / (strong ** 2 - mild ** 2)
        return torch.from_numpy(units)

    def expected_factor(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The simulation's factor [B, 1, S, S] (1 - severity x unit reduction, summed over the hemispheres) by which
        each encoded condition [B, 7] scales its normal twin's counts, and which of them have one (bool [B]: every
        affected hemisphere's territory and severity known)."""
        rows = condition.detach().cpu().tolist()
        known = torch.tensor([UNKNOWN_TERRITORY not in (int(row[3]), int(row[5]))
                              and UNKNOWN_SEVERITY not in (row[4], row[6]) for row in rows], dtype=torch.bool)
        factors = []
        for row, ok in zip(rows, known.tolist()):
            if not ok:
                factors.append(torch.ones(self.image_size, self.image_size))
                continue
            key = (int(row[0]), int(row[3]), int(row[5]))
            if key not in self._units:
                self._units[key] = self._unit_reductions(*key)
            factors.append(1.0 - row[4] * self._units[key][0] - row[6] * self._units[key][1])
        return torch.stack(factors)[:, None].to(condition.device), known.to(condition.device)


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


def profile_loss(fake: torch.Tensor, twin: torch.Tensor, factor: torch.Tensor, allowed: torch.Tensor,
                 known: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (network range) between generated defect slices [B, 1, S, S] and their normal twins
    [B, 1, S, S] times the simulation's factor [B, 1, S, S] (in counts: network value + 1), over the pixels inside
    each slice's allowed region [B, 1, S, S], for the slices whose lesions are ``known`` (bool [B]); 0 when there
    are none. The twin is the reference: no gradient flows into it."""
    inside = allowed * known[:, None, None, None].to(allowed.dtype)
    pixels = inside.sum()
    if pixels == 0:
        return fake.new_zeros((), dtype=torch.float32)
    target = (twin.detach().float() + 1.0) * factor - 1.0
    return ((fake.float() - target).abs() * inside).sum() / pixels
