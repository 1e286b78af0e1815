"""The learned counterfactual: a model with defect axes (model A) inverted on the patient's slice, its condition
changed, and the model's ratio of the two applied to the patient's own counts.

For a canonical slice (counts [H, W] on the model's grid, the cohort's canonical grid) of a level:

1. the SOURCE condition is what the slice shows (adding a defect: the level's normal; removing one: the defect
   removed), the TARGET what is asked for (the defect; normal);
2. latents z whose EXPECTED image under the source condition matches the slice are found: the generator's output
   with every noise map zero (no noise injection in its blocks, and its final noise stage reduced to the expected
   image it adds noise to), compared in the network range (``to_network_range`` with the bundle's count scale) by
   mean squared error plus a Gaussian prior on z (``PRIOR_WEIGHT`` x mean z^2). The ``CANDIDATES`` latents drawn
   from the seed are ranked by one forward pass; the best ``RESTARTS`` are refined together, one batch, by Adam;
3. the counterfactual is the patient's slice times the ratio G(z, target) / G(z, source) of the expected images in
   counts, averaged over the restarts, 1 where the source image is background (below ``physics.FACTOR_FLOOR`` of
   its maximum). The model supplies only the change; the patient's own pattern stays wherever the model changes
   nothing. ``LIMITS`` are the ways the ratio may be limited further (``docs/counterfactual.md`` measures them;
   ``LOCAL``, the default, did best).

Deterministic for a seed (the candidates are drawn from a ``torch.Generator`` seeded with it, and every step runs on
the CPU). Left is +x on the canonical grid, in the slice and in the model's conditions alike: nothing is flipped.
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side
from spectgan.counterfactual import LEARNED, check_lesions
from spectgan.counterfactual.paired import Method
from spectgan.counterfactual.physics import FACTOR_FLOOR
from spectgan.errors import InvalidRequestError
from spectgan.models.fastgan.bundle import Bundle
from spectgan.models.fastgan.locality import DefectFootprints
from spectgan.models.fastgan.networks import Generator, encode_conditions, to_counts, to_network_range

METHOD = LEARNED
CANDIDATES = 16  # latents drawn per slice and ranked by one forward pass
RESTARTS = 4  # of those, refined together in one batch
STEPS = 30  # Adam steps
LEARNING_RATE = 0.1
PRIOR_WEIGHT = 1e-3  # weight of mean z^2 beside the mean squared error in the network range
# How the model's ratio is limited (each adds to the one before): not at all; to a reduction (adding a defect) or a
# rise (removing one) only; to 1 outside the footprint of the defect's territories
# (``spectgan.models.fastgan.locality.DefectFootprints``); with the model's change of the whole slice's count level
# (the ratio's median over the brain outside the footprint, which a defect does not change) divided out.
NO_LIMIT, CLIP, FOOTPRINT, LOCAL = "none", "clip", "footprint", "local"
LIMITS = (NO_LIMIT, CLIP, FOOTPRINT, LOCAL)
DEFAULT_LIMIT = LOCAL
BRAIN_FRACTION = 0.3  # of the slice's maximum: the brain whose median ratio is the model's change of count level


def defect_condition(level: Level, lesions: Sequence[Lesion]) -> Condition:
    """The condition with these lesions at a level: unilateral on the side of one lesion, bilateral for two."""
    if len(lesions) == 1:
        return Condition(Level(level), Pattern.UNILATERAL, lesions[0].side, tuple(lesions))
    return Condition(Level(level), Pattern.BILATERAL, None, tuple(sorted(lesions, key=lambda item: list(Side).index(
        item.side))))


def expected_images(generator: Generator, latents: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The generator's expected images [B, 1, S, S] (network range) for latents [B, D] and encoded conditions
    [B, C]: every noise map zero."""
    noise = [torch.zeros(shape) for shape in generator.noise_shapes(len(latents))]
    return generator(latents, codes, noise)


def invert(generator: Generator, target: torch.Tensor, code: torch.Tensor, seed: int) -> torch.Tensor:
    """Latents [RESTARTS, D] whose expected images under the encoded condition ``code`` [1, C] match ``target``
    [S, S] (network range): the best ``RESTARTS`` of ``CANDIDATES`` seeded draws, refined by ``STEPS`` Adam steps
    on the mean squared error plus ``PRIOR_WEIGHT`` x mean z^2."""
    rng = torch.Generator().manual_seed(seed)
    candidates = torch.randn(CANDIDATES, generator.latent_dim, generator=rng)
    with torch.no_grad():
        errors = (expected_images(generator, candidates, code.expand(CANDIDATES, -1)) - target).square()
    latents = candidates[errors.mean(dim=(1, 2, 3)).argsort()[:RESTARTS]].clone().requires_grad_(True)
    codes = code.expand(RESTARTS, -1)
    optimizer = torch.optim.Adam([latents], lr=LEARNING_RATE)
    with torch.enable_grad():  # also where the caller (a server's inference task) turned gradients off
        for _ in range(STEPS):
            error = (expected_images(generator, latents, codes) - target).square().mean(dim=(1, 2, 3))
            loss = (error + PRIOR_WEIGHT * latents.square().mean(dim=1)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return latents.detach()


class LearnedCounterfactual:
    """The learned method on one model bundle with defect axes, for one seed (``Method``: ``method``)."""

    def __init__(self, bundle: Bundle, seed: int = 0):
        if bundle.defect_axes is None:
            raise InvalidRequestError(f"the {METHOD} method needs a model with defect axes (territory, severity); "
                                      f"{bundle.metadata['name']} has none")
        self.bundle, self.seed = bundle, int(seed)
        self.generator = bundle.generator
        self.count_scale = float(bundle.metadata["count_scale"])
        self.footprints = DefectFootprints(self.generator.territories, self.generator.image_size)
        # this instance's inversions, by slice and condition: the methods of several ``LIMITS`` share them
        self._latents = functools.lru_cache(maxsize=8)(self._invert)

    def check(self, condition: Condition) -> None:
        """InvalidRequestError unless the model's defect axes cover the condition's level and lesions (complete:
        territory and severity), naming what it takes."""
        check_lesions(condition, self.bundle.defect_axes, f"{METHOD} method of {self.bundle.metadata['name']}")

    def ratio(self, counts: np.ndarray, source: Condition, target: Condition) -> tuple[np.ndarray, np.ndarray]:
        """(ratio [S, S], footprint [S, S] bool): the model's expected target over expected source image for latents
        inverted on ``counts`` [S, S] under ``source`` (mean over the restarts; 1 on the source's background), and
        where the defect's territories may change the slice."""
        size = self.generator.image_size
        if counts.shape != (size, size):
            raise InvalidRequestError(f"the {METHOD} method with {self.bundle.metadata['name']} takes canonical "
                                      f"slices of {size} x {size} pixels, got {counts.shape}")
        codes = encode_conditions([source, target], self.generator.territories)
        latents = self._latents(counts.astype(np.float32).tobytes(), size, tuple(codes[0].tolist()))
        with torch.no_grad():
            images = [to_counts(expected_images(self.generator, latents, code.expand(len(latents), -1))[:, 0],
                                self.count_scale) for code in codes]
        floor = FACTOR_FLOOR * images[0].amax(dim=(1, 2), keepdim=True)
        ratio = torch.where(images[0] > floor, images[1] / images[0].clamp(min=1e-6), torch.ones_like(images[0]))
        defect = codes[1] if target.pattern is not Pattern.NORMAL else codes[0]
        footprint = self.footprints.allowed(defect[None])[0, 0].numpy() > 0
        return ratio.mean(dim=0).numpy(), footprint

    def _invert(self, counts: bytes, size: int, code: tuple[float, ...]) -> torch.Tensor:
        """``invert`` on a slice (its float32 bytes) under an encoded condition."""
        target = to_network_range(torch.from_numpy(np.frombuffer(counts, np.float32).reshape(size, size).copy()),
                                  self.count_scale)
        return invert(self.generator, target, torch.tensor([code]), self.seed)

    def change(self, counts: np.ndarray, source: Condition, target: Condition, limit: str = DEFAULT_LIMIT
               ) -> np.ndarray:
        """``counts`` [S, S] changed from ``source`` to ``target``: times the model's ratio, limited by ``limit``
        (one of ``LIMITS``)."""
        if limit not in LIMITS:
            raise ValueError(f"limit must be one of {', '.join(LIMITS)}, got {limit!r}")
        self.check(target if target.pattern is not Pattern.NORMAL else source)
        ratio, footprint = self.ratio(counts, source, target)
        outside = ~footprint & (counts > BRAIN_FRACTION * counts.max())
        if limit == LOCAL and outside.any():
            ratio = ratio / np.median(ratio[outside])
        if limit in (FOOTPRINT, LOCAL):
            ratio = np.where(footprint, ratio, 1.0)
        if limit != NO_LIMIT:
            ratio = np.minimum(ratio, 1.0) if target.pattern is not Pattern.NORMAL else np.maximum(ratio, 1.0)
        return (counts * ratio).astype(np.float32)

    def add(self, counts: np.ndarray, lesions: Sequence[Lesion], level: Level, limit: str = DEFAULT_LIMIT
            ) -> np.ndarray:
        """The canonical slice ``counts`` [S, S] (no defect) with these lesions added."""
        return self.change(counts, Condition(Level(level), Pattern.NORMAL), defect_condition(level, lesions), limit)

    def remove(self, counts: np.ndarray, lesions: Sequence[Lesion], level: Level, limit: str = DEFAULT_LIMIT
               ) -> np.ndarray:
        """The canonical slice ``counts`` [S, S] (with these lesions) with them removed."""
        return self.change(counts, defect_condition(level, lesions), Condition(Level(level), Pattern.NORMAL), limit)

    def method(self, limit: str = DEFAULT_LIMIT) -> Method:
        """This method as a ``paired.Method`` (named ``learned``, or ``learned-<limit>`` for another limit)."""
        name = METHOD if limit == DEFAULT_LIMIT else f"{METHOD}-{limit}"
        return Method(name, functools.partial(self.add, limit=limit), functools.partial(self.remove, limit=limit))
