"""Count level: how bright a slice is overall varies from subject to subject.

A real slice's mean count in the brain (the MC of the hemisphere statistics) varies with the subject's perfusion,
uptake and pose: at COR the test normals of the default cohort have MC 377 +- 58 counts. Model A 4.3.0 drew them at
351 +- 26, so a classifier trained on its slices called the brighter and the dimmer real normals defects (the bundles'
``docs/realism.md``, 4.4.0). The discriminator sees real and generated images in separate batches by default, and
its batch norms then take a shift that every generated image shares out of its view.

The count-level hinge measures the mean count (network range + 1, proportional to counts) of each generated image
within a fixed brain mask per level: the train split's mean slice of that level above the ROI threshold. Per level
and pattern present in the batch it penalises how far the SD of the generated images' mean counts falls short of
the train split's, and how far their mean lies from it (``moments.moment_shortfall``). Unilateral-left and -right
share a pattern: the count level does not depend on the side. In groups of 4 a mean-and-SD match can be met with two
modes, so ``match="energy"`` compares the group with the whole train distribution instead
(``moments.energy_shortfall``).
"""
from __future__ import annotations

import torch

from spectgan.conditions import Level, Pattern
from spectgan.geometry.roi import DEFAULT_THRESHOLD_FRACTION
from spectgan.models.fastgan.moments import StatisticTarget, energy_shortfall, moment_shortfall

COUNT_LEVEL_MATCHES = ("moments", "energy")


def mean_counts(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of images [B, 1, S, S] (network range) + 1 within masks [B, S, S] -> [B]."""
    counts = images[:, 0].float() + 1.0
    return (counts * masks).sum(dim=(1, 2)) / masks.sum(dim=(1, 2)).clamp(min=1.0)


def count_levels(images: torch.Tensor, conditions: torch.Tensor) -> StatisticTarget:
    """Brain masks [levels, S, S] and the mean count's targets (network range + 1) per level and pattern [levels,
    patterns], from the train split's images [N, 1, S, S] (network range) and encoded conditions [N, 3 or 7]."""
    size = images.shape[-1]
    masks, mean, sd = (torch.zeros(len(Level), size, size), torch.zeros(len(Level), len(Pattern)),
                       torch.zeros(len(Level), len(Pattern)))
    kept = torch.full((len(Level), len(Pattern), len(images)), float("nan"))
    levels, patterns = conditions[:, 0].long(), conditions[:, 1].long()
    for level in range(len(Level)):
        at_level = levels == level
        if not at_level.any():
            continue
        slice_mean = images[at_level, 0].float().mean(0) + 1.0
        masks[level] = (slice_mean >= DEFAULT_THRESHOLD_FRACTION * slice_mean.max()).float()
        for pattern in range(len(Pattern)):
            members = at_level & (patterns == pattern)
            if int(members.sum()) >= 2:
                values = mean_counts(images[members], masks[level].expand(int(members.sum()), -1, -1))
                mean[level, pattern], sd[level, pattern] = values.mean(), values.std()
                kept[level, pattern, :len(values)] = values
    return StatisticTarget(masks, mean, sd, kept[..., :max(2, int((~kept.isnan()).sum(-1).max()))])


def count_level_shortfall(fake: torch.Tensor, condition: torch.Tensor, target: StatisticTarget,
                          match: str = "moments") -> torch.Tensor:
    """Mean over the level-pattern groups with two or more generated images in the batch of their shortfall against
    the train split's: ``match`` "moments" (``moment_shortfall``: the SD's hinge and the mean's offset) or "energy"
    (``energy_shortfall``: the distance to the whole distribution); fake [B, 1, S, S], condition [B, 3 or 7]; 0 when
    there are none."""
    if match not in COUNT_LEVEL_MATCHES:
        raise ValueError(f"the count-level match must be one of {', '.join(COUNT_LEVEL_MATCHES)}, got {match!r}")
    levels, patterns = condition[:, 0].long(), condition[:, 1].long()
    shortfalls = []
    for level, pattern in torch.stack([levels, patterns], dim=1).unique(dim=0).tolist():
        members = (levels == level) & (patterns == pattern)
        if int(members.sum()) < 2 or float(target.sd[level, pattern]) <= 0:
            continue
        values = mean_counts(fake[members], target.masks[level].expand(int(members.sum()), -1, -1))
        shortfalls.append(moment_shortfall(values, target.mean[level, pattern], target.sd[level, pattern])
                          if match == "moments" else
                          energy_shortfall(values, target.values[level, pattern], target.sd[level, pattern]))
    return torch.stack(shortfalls).mean() if shortfalls else fake.new_zeros((), dtype=torch.float32)
