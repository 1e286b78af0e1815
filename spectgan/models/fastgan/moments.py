"""What the statistic targets of a training run share (``asymmetry``, ``count_level``): the train split's mean and
SD of one statistic per group of images, within masks, and the moment hinge against them: the values over a group of
generated images may not spread less than the train split's, nor centre elsewhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class StatisticTarget:
    """The masks a statistic is read in ([levels, ...], zeros for a level without train slices) and the train
    split's mean and standard deviation of it per group ([levels] or [levels, patterns]; SD 0: no target)."""

    masks: torch.Tensor
    mean: torch.Tensor
    sd: torch.Tensor

    def to(self, device: torch.device) -> "StatisticTarget":
        return StatisticTarget(self.masks.to(device), self.mean.to(device), self.sd.to(device))


def moment_shortfall(values: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """relu(1 - SD of ``values`` / ``sd``) + |their mean - ``mean``| / ``sd``: values [N >= 2] of one statistic
    over a group of generated images, mean and sd the train split's (same unit; sd > 0)."""
    return F.relu(1.0 - values.std() / sd) + (values.mean() - mean).abs() / sd
