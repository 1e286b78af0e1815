"""Normal asymmetry: a normal slice is never perfectly symmetric.

A subject's perfusion varies smoothly by a few percent (``spectgan.simulation.phantom``, the heterogeneity field) and
its pose is not the template's, so real normal slices have a hemisphere asymmetry index of a few percent; model A
4.3.0 draws its normals more symmetric than that. The hinge below makes the generator draw the real spread. In the
bundles' ``docs/realism.md`` (4.3.0) it did so, yet a classifier trained on the slices still called as many real
normals defects: the asymmetry was not what it read.

The asymmetry hinge measures the signed AI (100 (L - R) / ((L + R) / 2), counts) of the generated normals of a
batch within fixed hemisphere masks per level (the train split's mean normal slice above the ROI threshold, split at
the template's midline: left is +x; the grid's x is the same at every level). Per level, it penalises how far their
standard deviation falls short of the train split's normals', as a fraction of it (as the diversity hinge does for
the spread of pairs), plus how far their mean lies from the train split's, in the same unit: a generator may not
meet the spread with one hemisphere brighter in every normal.
"""
from __future__ import annotations

import numpy as np
import torch

from spectgan.conditions import Level, Pattern
from spectgan.geometry.display import midline_distance
from spectgan.geometry.roi import DEFAULT_THRESHOLD_FRACTION, TEMPLATE_MIDLINE
from spectgan.geometry.template import canonical_image
from spectgan.models.fastgan.moments import StatisticTarget, moment_shortfall

NORMAL = list(Pattern).index(Pattern.NORMAL)


def signed_ai(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Signed AI (%) [B] of images [B, 1, S, S] in the network range within masks [B, 2, S, S] (left, right)."""
    counts = images.float() + 1.0  # proportional to counts
    means = (counts * masks).sum(dim=(2, 3)) / masks.sum(dim=(2, 3)).clamp(min=1.0)
    left, right = means[:, 0], means[:, 1]
    return 200.0 * (left - right) / (left + right).clamp(min=1e-6)


def normal_asymmetry(images: torch.Tensor, conditions: torch.Tensor) -> StatisticTarget:
    """Hemisphere masks [levels, 2, S, S] (left, right) and the signed AI's (%) targets per level [levels], from the
    train split's images [N, 1, S, S] (network range) and encoded conditions [N, 3 or 7]."""
    size = images.shape[-1]
    grid = canonical_image(np.zeros((size, size), np.float32), Level.BG)
    left_of_midline = torch.from_numpy(midline_distance(grid, TEMPLATE_MIDLINE) > 0)
    masks, mean, sd = torch.zeros(len(Level), 2, size, size), torch.zeros(len(Level)), torch.zeros(len(Level))
    for level in range(len(Level)):
        normal = (conditions[:, 0].long() == level) & (conditions[:, 1].long() == NORMAL)
        if not normal.any():
            continue
        slice_mean = images[normal, 0].float().mean(0) + 1.0
        brain = slice_mean >= DEFAULT_THRESHOLD_FRACTION * slice_mean.max()
        masks[level, 0], masks[level, 1] = (brain & left_of_midline).float(), (brain & ~left_of_midline).float()
        ai = signed_ai(images[normal], masks[level].expand(int(normal.sum()), -1, -1, -1))
        mean[level], sd[level] = ai.mean(), ai.std()
    return StatisticTarget(masks, mean, sd)


def asymmetry_shortfall(fake: torch.Tensor, condition: torch.Tensor, target: StatisticTarget) -> torch.Tensor:
    """Mean over the levels with two or more generated normals in the batch of relu(1 - SD of their signed AI / the
    train split's SD) + |their mean - the train split's mean| / the train split's SD; fake [B, 1, S, S], condition
    [B, 3 or 7]; 0 when there are none."""
    levels, normal = condition[:, 0].long(), condition[:, 1].long() == NORMAL
    shortfalls = []
    for level in levels[normal].unique().tolist():
        members = normal & (levels == level)
        if int(members.sum()) < 2 or float(target.sd[level]) <= 0:
            continue
        ai = signed_ai(fake[members], target.masks[level].expand(int(members.sum()), -1, -1, -1))
        shortfalls.append(moment_shortfall(ai, target.mean[level], target.sd[level]))
    return torch.stack(shortfalls).mean() if shortfalls else fake.new_zeros((), dtype=torch.float32)
