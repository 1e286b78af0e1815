"""What the statistic targets of a training run share (``asymmetry``, ``count_level``): the train split's mean and
SD of one statistic per group of images, within masks, and the hinges against them: the values over a group of
generated images may not spread less than the train split's, nor centre elsewhere, nor (the energy distance) follow
another distribution.
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
    values: torch.Tensor | None = None  # the train split's values per group [..., N], NaN-padded (None: not kept)

    def to(self, device: torch.device) -> "StatisticTarget":
        return StatisticTarget(self.masks.to(device), self.mean.to(device), self.sd.to(device),
                               None if self.values is None else self.values.to(device))


def moment_shortfall(values: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """relu(1 - SD of ``values`` / ``sd``) + |their mean - ``mean``| / ``sd``: values [N >= 2] of one statistic
    over a group of generated images, mean and sd the train split's (same unit; sd > 0)."""
    return F.relu(1.0 - values.std() / sd) + (values.mean() - mean).abs() / sd


def energy_shortfall(values: torch.Tensor, reference: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """The energy distance between the values [N >= 2] of one statistic over a group of generated images and the
    train split's values ``reference`` [M] (NaN-padded), over ``sd`` (theirs): mean |x - y| - mean over pairs
    |x - x'| / 2 - mean |y - y'| / 2, each pair of generated values once, both orders.

    Unlike a match of mean and SD it sees the whole distribution (two modes where the real values have one, missing
    tails), and unlike a match of sorted values to quantiles it is proper for small groups: its expectation is 0 for
    a generator whose values follow the real distribution and larger for any other, a narrower one included
    (Szekely and Rizzo 2013). Per batch it scatters around that expectation and may be negative."""
    reference = reference[~reference.isnan()].float()
    values = values.float()
    count = values.numel()
    across = (values[:, None] - reference[None]).abs().mean()
    within = (values[:, None] - values[None]).abs().sum() / (count * (count - 1))
    real_within = (reference[:, None] - reference[None]).abs().sum() / (len(reference) * (len(reference) - 1))
    return (across - within / 2 - real_within / 2) / sd
