"""Conditional FastGAN (Liu et al., ICLR 2021) for canonical SPECT slices, sized for a 2-core CPU.

Intensity mapping (one place): a slice in counts ``c`` is fed to the networks as ``x = 2 c / count_scale - 1``
(``count_scale`` is the cohort-wide constant, so background is -1 and the brightest train pixels are about 0.9).
The generator ends in ``tanh`` and, optionally, in the reconstruction's own output stage (see
``ReconstructionOutput``); ``to_counts`` maps its output back to ``(x + 1) / 2 * count_scale``, which is never
negative.

Conditions enter as a tensor ``[B, 3]`` (long): level index, pattern index and side index (0 none, 1 left,
2 right) in the order of ``spectgan.conditions``' enums; a model with defect axes (``territories``) takes ``[B, 7]``
(float): those three, then territory index and severity of the left and of the right hemisphere (see
``encode_conditions``). The generator uses conditional batch norm (and the condition embedding next to the latent),
the discriminator a projection term (Miyato & Koyama 2018).

Channel widths per resolution are ``width * multiplier[resolution]``, fewest at full resolution. Sizing (profiled on
2 CPU cores, batch 16 at 128 x 128): a step's cost grows with the generator's width (one-thread CPU seconds per
step 0.9 at width 16, 1.5 at 24, 2.2 at 32: its 64 and 128 px layers dominate), much less with the discriminator's
(1.1 at 24); the decoders, reconstructing at half the image size from 8 x 8 maps, add a few per cent. Defaults:
width 16 for both, about 0.5 s per step on 2 idle cores.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from spectgan.conditions import Condition, Lesion, Level, Pattern, Side

IMAGE_SIZES = (32, 64, 128)
SIDE_INDEX = {None: 0, Side.LEFT: 1, Side.RIGHT: 2}
CONDITION_CLASSES = (len(Level), len(Pattern), len(SIDE_INDEX))  # classes of each column of an encoded condition

# Generator channels = width x multiplier at each resolution (FastGAN halves them towards full resolution).
GENERATOR_MULTIPLIERS = {4: 16, 8: 8, 16: 4, 32: 2, 64: 1, 128: 1}
# Discriminator channels at each resolution of its encoder; its stem works at half the image size.
DISCRIMINATOR_MULTIPLIERS = {64: 1, 32: 2, 16: 4, 8: 8}
# Decoder channels (self-supervised reconstruction) at each resolution it upsamples to.
DECODER_MULTIPLIERS = {16: 2, 32: 1, 64: 1}


# Territory indices of a model with defect axes: 0 no lesion in that hemisphere, 1 unknown, then its territories.
NO_TERRITORY, UNKNOWN_TERRITORY = 0, 1
UNKNOWN_SEVERITY = -1.0
DEFECT_COLUMNS = 4  # per hemisphere (left, right): territory index, severity


def encode_conditions(conditions: Sequence[Condition], territories: Sequence[str] = ()) -> torch.Tensor:
    """Conditions -> long tensor [B, 3] (level, pattern, side indices); with ``territories`` (a model with defect
    axes) float [B, 7]: then per hemisphere, left first, the territory index (``NO_TERRITORY``,
    ``UNKNOWN_TERRITORY`` or 2 + its place in ``territories``) and the severity (0 without a lesion,
    ``UNKNOWN_SEVERITY`` when not known). An affected hemisphere whose lesion is not named, or a territory the
    model does not know, is encoded as unknown."""
    levels, patterns = list(Level), list(Pattern)
    rows = [[levels.index(c.level), patterns.index(c.pattern), SIDE_INDEX[c.side]] for c in conditions]
    if not territories:
        return torch.tensor(rows, dtype=torch.long).reshape(len(conditions), 3)
    index = {name: 2 + i for i, name in enumerate(territories)}
    for row, condition in zip(rows, conditions):
        for side in Side:
            lesion = condition.lesion(side) or (Lesion(side) if side in condition.affected_sides else None)
            if lesion is None:
                row += [NO_TERRITORY, 0.0]
            else:
                row += [index.get(lesion.territory, UNKNOWN_TERRITORY),
                        UNKNOWN_SEVERITY if lesion.severity is None else lesion.severity]
    return torch.tensor(rows, dtype=torch.float32).reshape(len(conditions), 3 + DEFECT_COLUMNS)


def to_network_range(counts: torch.Tensor, count_scale: float) -> torch.Tensor:
    """Counts -> network range [-1, 1] (clamped: the count scale is a robust maximum, a few pixels exceed it)."""
    return (2.0 * counts / count_scale - 1.0).clamp(-1.0, 1.0)


def to_counts(images: torch.Tensor, count_scale: float) -> torch.Tensor:
    """Generator output in [-1, 1] -> non-negative counts."""
    return (images.float() + 1.0) * (0.5 * count_scale)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False))


class ConditionEmbedding(nn.Module):
    """Sum of learned level, pattern and side embeddings: [B, 3] long -> [B, dim]."""

    def __init__(self, dim: int, normalize: bool = False):
        super().__init__()
        tables = [nn.Embedding(len(Level), dim), nn.Embedding(len(Pattern), dim), nn.Embedding(len(SIDE_INDEX), dim)]
        self.tables = nn.ModuleList(spectral_norm(table) if normalize else table for table in tables)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        return sum(table(condition[:, i].long()) for i, table in enumerate(self.tables))


class DefectEmbedding(nn.Module):
    """The defect axes: per hemisphere (left, right) a learned vector of its territory (none, unknown or one of
    ``territories`` territories) plus the severity times a learned vector of that territory (a learned vector of its
    own when the severity is unknown): conditions [B, 7] -> [B, dim]. Zero at init, so that a model trained without
    these axes starts where it was; linear in the severity, so that a mild and a severe defect of one territory lie
    on one line."""

    def __init__(self, dim: int, territories: int):
        super().__init__()
        classes = territories + 2
        self.territory = nn.ModuleList(nn.Embedding(classes, dim) for _ in range(2))
        self.severity = nn.ModuleList(nn.Embedding(classes, dim) for _ in range(2))
        self.unknown_severity = nn.Parameter(torch.zeros(2, dim))
        for table in (*self.territory, *self.severity):
            nn.init.zeros_(table.weight)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        embedding = 0
        for hemisphere in range(2):
            territory = condition[:, 3 + 2 * hemisphere].long()
            severity = condition[:, 4 + 2 * hemisphere].float()[:, None]
            scaled = severity.clamp(min=0.0) * self.severity[hemisphere](territory)
            embedding = embedding + self.territory[hemisphere](territory) + torch.where(
                severity >= 0, scaled, self.unknown_severity[hemisphere].expand_as(scaled))
        return embedding


def embed_condition(base: ConditionEmbedding, defects: DefectEmbedding | None, condition: torch.Tensor
                    ) -> torch.Tensor:
    """Level, pattern and side embeddings plus, for a model with defect axes, the defect embedding: [B, dim]."""
    embedding = base(condition)
    return embedding if defects is None else embedding + defects(condition).to(embedding.dtype)


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are linear functions of the condition embedding (identity at init).

    In eval mode the running statistics are folded into the per-image scale and shift: one pass over the map.
    """

    def __init__(self, channels: int, condition_dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.scale = nn.Linear(condition_dim, channels)
        self.shift = nn.Linear(condition_dim, channels)
        for layer in (self.scale, self.shift):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + self.scale(embedding)
        shift = self.shift(embedding)
        if self.training:
            return torch.addcmul(shift[:, :, None, None], self.norm(x), scale[:, :, None, None])
        inverse_std = torch.rsqrt(self.norm.running_var + self.norm.eps)
        scale = scale * inverse_std
        shift = shift - self.norm.running_mean * scale
        return torch.addcmul(shift[:, :, None, None].to(x.dtype), x, scale[:, :, None, None].to(x.dtype))


class NoiseInjection(nn.Module):
    """Adds, in place, a learned multiple (zero at init) of a one-channel noise map [B, 1, H, W] to a conv output."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x.addcmul_(noise.to(x.dtype), self.weight.to(x.dtype))


class UpBlock(nn.Module):
    """FastGAN up-block: nearest x2, then one (plain) or two (with noise injection) conv -> norm -> GLU stages."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, with_noise: bool):
        super().__init__()
        stages = 2 if with_noise else 1
        self.convs = nn.ModuleList(_conv(in_channels if i == 0 else out_channels, 2 * out_channels, 3, padding=1)
                                   for i in range(stages))
        self.norms = nn.ModuleList(ConditionalBatchNorm(2 * out_channels, condition_dim) for _ in range(stages))
        self.noises = nn.ModuleList(NoiseInjection() for _ in range(stages)) if with_noise else None

    @property
    def noise_maps(self) -> int:
        return len(self.noises) if self.noises is not None else 0

    def forward(self, x: torch.Tensor, embedding: torch.Tensor, noise: Sequence[torch.Tensor]) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(x)
            if self.noises is not None:
                x = self.noises[i](x, noise[i])
            x = F.glu(norm(x, embedding), dim=1)
        return x


class SkipLayerExcitation(nn.Module):
    """FastGAN SLE: channel gates for a high-resolution map computed from a low-resolution one."""

    def __init__(self, source_channels: int, target_channels: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), _conv(source_channels, target_channels, 4), nn.SiLU(),
                                  _conv(target_channels, target_channels, 1), nn.Sigmoid())

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return target * self.gate(source)


def _gaussian_profile(sigma: float) -> torch.Tensor:
    """A normalized 1D Gaussian [K] of ``sigma`` pixels, K = 2 ceil(3 sigma) + 1."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    profile = torch.exp(-0.5 * (offsets / max(sigma, 1e-6)) ** 2)
    return profile / profile.sum()


def _separable_blur(x: torch.Tensor, profile: torch.Tensor) -> torch.Tensor:
    """Images [B, 1, H, W] convolved with the 2D kernel profile x profile (zero padding, same size): two 1D passes."""
    profile = profile.to(x.dtype)
    pad = profile.numel() // 2
    x = F.conv2d(x, profile.view(1, 1, -1, 1), padding=(pad, 0))
    return F.conv2d(x, profile.view(1, 1, 1, -1), padding=(0, pad))


class ReconstructionOutput(nn.Module):
    """The last stage of a SPECT reconstruction, as a fixed (not learned) layer: an image [B, 1, S, S] in [-1, 1]
    -> non-negative counts with the bottom ``floor`` of the range set to zero, blurred by the post-filter (a
    Gaussian of ``sigma`` pixels), back in [-1, 1].

    Why: a reconstructed slice is an OSEM image convolved with the post-filter, so it holds (almost) no power above
    the filter's pass band, and OSEM leaves the background outside the head at (almost) zero. A generator ending in
    ``tanh`` alone paints detail the filter would have removed and a floor of speckle, because ``tanh`` never
    reaches -1 (measured on the first shipped model: 2-3.5 decades too much power above 0.07 cycles/mm and 0.7
    counts of background against 0.01). With this stage the generator draws the unfiltered image and the physics
    of the filter is exact; blurring the output afterwards instead left the mid frequencies too smooth, because the
    generator never learned to draw for the filter.
    """

    def __init__(self, sigma: float, floor: float):
        super().__init__()
        if sigma < 0 or not 0 <= floor < 1:
            raise ValueError(f"the output stage needs sigma >= 0 pixels and 0 <= floor < 1, got {sigma}, {floor}")
        self.sigma, self.floor = float(sigma), float(floor)
        # not in the state dict: it follows from sigma, so weights saved before this stage existed still load
        self.register_buffer("profile", _gaussian_profile(self.sigma), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = ((torch.tanh(x) + 1.0) * 0.5 - self.floor).clamp(min=0.0) / (1.0 - self.floor)
        if self.sigma > 0:
            counts = _separable_blur(counts, self.profile)
        return counts * 2.0 - 1.0


class ReconstructionNoise(nn.Module):
    """The noise of a reconstruction, as a fixed (not learned) stage after ``ReconstructionOutput``: an expected image
    [B, 1, S, S] in [-1, 1] and a white noise map [B, 1, S, S] -> the image plus noise whose SD is
    ``gain * m ** exponent`` at expected value m (m in [0, 1] of the count scale) and whose correlation is white noise
    blurred by a Gaussian of ``sigma_px`` pixels, clipped at zero, back in [-1, 1].

    The parameters come from the training cohort (``spectgan.cohorts.noise.estimate_noise_model``), so the
    generator draws the expected image and the texture follows the counts as Poisson data through OSEM do.
    """

    def __init__(self, gain: float, exponent: float, sigma_px: float):
        super().__init__()
        if gain < 0 or sigma_px <= 0:
            raise ValueError(f"the noise stage needs gain >= 0 and sigma_px > 0, got {gain}, {sigma_px}")
        self.gain, self.exponent, self.sigma_px = float(gain), float(exponent), float(sigma_px)
        profile = _gaussian_profile(self.sigma_px)
        self.register_buffer("profile", profile / profile.pow(2).sum().sqrt(), persistent=False)  # unit variance

    def forward(self, x: torch.Tensor, white: torch.Tensor) -> torch.Tensor:
        expected = ((x + 1.0) * 0.5).clamp(min=0.0)
        correlated = _separable_blur(white.to(x.dtype), self.profile)
        noisy = expected + correlated * self.gain * expected.pow(self.exponent)
        return noisy.clamp(min=0.0) * 2.0 - 1.0


def _check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image size must be one of {IMAGE_SIZES}, got {image_size}")


def _resolutions(start: int, stop: int) -> list[int]:
    """Powers of two from start to stop inclusive, increasing."""
    return [2 ** k for k in range(int(math.log2(start)), int(math.log2(stop)) + 1)]


class Generator(nn.Module):
    """Conditional FastGAN generator: latent [B, latent_dim] + condition [B, 3] (or [B, 7] with defect axes) ->
    image [B, 1, S, S] in [-1, 1].

    Up-blocks from 4 x 4 to the image size alternate with and without noise injection (with noise at 8, 32, 128);
    skip-layer excitation gates every map of 32 pixels or more from the map 16 times (at least 4 px) smaller.
    With ``output_filter_sigma`` (pixels) or ``output_floor`` set, the image passes through the reconstruction's
    output stage (``ReconstructionOutput``) instead of a bare ``tanh``. With ``output_noise`` (``gain``,
    ``exponent``, ``sigma_px``) that image is the expected one and ``ReconstructionNoise`` adds the cohort's noise,
    from one more noise map. With ``territories`` it takes the defect axes (conditions [B, 7], ``DefectEmbedding``).
    """

    def __init__(self, image_size: int = 128, latent_dim: int = 128, width: int = 16, condition_dim: int = 32,
                 output_filter_sigma: float = 0.0, output_floor: float = 0.0, output_noise: dict | None = None,
                 territories: Sequence[str] = ()):
        super().__init__()
        _check_image_size(image_size)
        self.image_size, self.latent_dim = image_size, latent_dim
        self.territories = tuple(territories)
        channels = {r: width * GENERATOR_MULTIPLIERS[r] for r in _resolutions(4, image_size)}
        self.embedding = ConditionEmbedding(condition_dim)
        self.defect_embedding = DefectEmbedding(condition_dim, len(self.territories)) if self.territories else None
        self.initial = spectral_norm(nn.ConvTranspose2d(latent_dim + condition_dim, 2 * channels[4], 4, bias=False))
        self.initial_norm = ConditionalBatchNorm(2 * channels[4], condition_dim)
        self.block_resolutions = _resolutions(8, image_size)
        self.blocks = nn.ModuleList(UpBlock(channels[r // 2], channels[r], condition_dim, with_noise=(i % 2 == 0))
                                    for i, r in enumerate(self.block_resolutions))
        self.excitation_sources = {r: max(4, r // 16) for r in self.block_resolutions if r >= 32}
        self.excitations = nn.ModuleDict({str(r): SkipLayerExcitation(channels[source], channels[r])
                                          for r, source in self.excitation_sources.items()})
        self.to_image = _conv(channels[image_size], 1, 3, padding=1)
        self.output = (ReconstructionOutput(output_filter_sigma, output_floor)
                       if output_filter_sigma > 0 or output_floor > 0 else nn.Tanh())
        self.noise_stage = ReconstructionNoise(**output_noise) if output_noise else None

    def noise_shapes(self, batch: int) -> list[tuple[int, int, int, int]]:
        """Shapes of the noise maps one forward pass consumes, in order."""
        shapes = [(batch, 1, r, r) for r, block in zip(self.block_resolutions, self.blocks)
                  for _ in range(block.noise_maps)]
        return shapes + ([(batch, 1, self.image_size, self.image_size)] if self.noise_stage is not None else [])

    def forward(self, latent: torch.Tensor, condition: torch.Tensor,
                noise: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``noise``: maps shaped as ``noise_shapes`` (drawn from the global RNG when None)."""
        if noise is None:
            noise = [torch.randn(shape, device=latent.device) for shape in self.noise_shapes(latent.shape[0])]
        embedding = embed_condition(self.embedding, self.defect_embedding, condition)
        x = self.initial(torch.cat([latent, embedding], dim=1)[:, :, None, None])
        x = F.glu(self.initial_norm(x, embedding), dim=1)
        features, used = {4: x}, 0
        for resolution, block in zip(self.block_resolutions, self.blocks):
            x = block(x, embedding, noise[used:used + block.noise_maps])
            used += block.noise_maps
            if resolution in self.excitation_sources:
                x = self.excitations[str(resolution)](features[self.excitation_sources[resolution]], x)
            features[resolution] = x
        image = self.output(self.to_image(x))
        return self.noise_stage(image, noise[used]) if self.noise_stage is not None else image


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(0.2)


class DownBlock(nn.Module):
    """FastGAN down-block: (4x4 stride-2 conv, 3x3 conv) averaged with (avg-pool, 1x1 conv), batch norm, LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(_conv(in_channels, out_channels, 4, 2, 1), nn.BatchNorm2d(out_channels), _lrelu(),
                                  _conv(out_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels),
                                  _lrelu())
        self.direct = nn.Sequential(nn.AvgPool2d(2), _conv(in_channels, out_channels, 1),
                                    nn.BatchNorm2d(out_channels), _lrelu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class Decoder(nn.Module):
    """Self-supervised decoder: an 8 x 8 feature map -> an image [B, 1, size, size] in [-1, 1]."""

    def __init__(self, in_channels: int, width: int, output_size: int):
        super().__init__()
        layers, channels = [], in_channels
        for resolution in _resolutions(16, output_size):
            out_channels = width * DECODER_MULTIPLIERS[resolution]
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), _conv(channels, 2 * out_channels, 3, padding=1),
                       nn.BatchNorm2d(2 * out_channels), nn.GLU(dim=1)]
            channels = out_channels
        layers += [_conv(channels, 1, 3, padding=1), nn.Tanh()]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


MINIBATCH_GROUP = 4  # images per group of the minibatch standard deviation


def minibatch_group(batch: int) -> int:
    """Images per group in a batch of ``batch``: the largest size up to ``MINIBATCH_GROUP`` that divides it.
    Training batches are drawn so that each group shares one condition (``gan.train.draw_batch``)."""
    return max(size for size in range(1, MINIBATCH_GROUP + 1) if batch % size == 0)


def minibatch_std(features: torch.Tensor, group: int | None = None) -> torch.Tensor:
    """Mean standard deviation over groups of ``group`` consecutive images [B, C, H, W] (None:
    ``minibatch_group(B)``) -> one map [B, 1, H, W] per image.

    A group shares one condition, so the map measures the spread within a condition, which a collapsed
    generator lacks."""
    batch, channels, height, width = features.shape
    group = group or minibatch_group(batch)
    grouped = features.float().reshape(batch // group, group, channels, height, width)
    spread = (grouped.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
    return spread.repeat_interleave(group)[:, None, None, None].expand(batch, 1, height, width).to(features.dtype)


QUADRANTS = 4  # reconstruction crops: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right (array order)


def crop_quadrant(images: torch.Tensor, quadrant: int) -> torch.Tensor:
    """One quadrant [.., H/2, W/2] of maps [.., H, W] (array rows/columns, no change of orientation)."""
    height, width = images.shape[-2] // 2, images.shape[-1] // 2
    row, col = divmod(quadrant, 2)
    return images[..., row * height:(row + 1) * height, col * width:(col + 1) * width]


class Discriminator(nn.Module):
    """Projection discriminator after FastGAN: image [B, 1, S, S] + condition [B, 3] (or [B, 7] with defect axes)
    -> logits [B, 25].

    Encoder: a 4x4 stride-2 stem to S/2, down-blocks to 8 x 8, skip-layer excitation from the stem's map into the
    last map, a 1x1 + 4x4 head (a 5 x 5 map of logits) plus the projection of the condition embedding on the pooled
    last map. The head also sees the minibatch standard deviation over groups of one condition (Karras et al.
    2018), so that a generator whose images of a condition are all alike is caught. An auxiliary classifier on the
    pooled last map predicts level, pattern and side (logits [B, sum(CONDITION_CLASSES)], see
    ``condition_classification_loss``): trained on real images, it makes the generator draw the requested defect
    on the requested side (AC-GAN, Odena et al. 2017). With defect axes a defect head beside it predicts each
    hemisphere's territory and severity (``defect_loss``; its outputs follow the class logits). With ``quadrant`` given (training on real images) it also returns
    two reconstructions of size ``reconstruction_size``: the whole image from the 8 x 8 map and one quadrant from
    the 16 x 16 map.
    """

    def __init__(self, image_size: int = 128, width: int = 16, reconstruction_size: int = 32,
                 territories: Sequence[str] = ()):
        super().__init__()
        _check_image_size(image_size)
        if reconstruction_size not in _resolutions(16, 64):
            raise ValueError(f"reconstruction size must be 16, 32 or 64, got {reconstruction_size}")
        channels = {r: width * DISCRIMINATOR_MULTIPLIERS[r] for r in _resolutions(8, image_size // 2)}
        stem_size = image_size // 2
        self.stem = nn.Sequential(_conv(1, channels[stem_size], 4, 2, 1), _lrelu())
        self.down_resolutions = _resolutions(8, stem_size // 2)[::-1]
        self.downs = nn.ModuleList(DownBlock(channels[2 * r], channels[r]) for r in self.down_resolutions)
        self.excitation = SkipLayerExcitation(channels[stem_size], channels[8])
        self.head = nn.Sequential(_conv(channels[8] + 1, channels[8] // 2, 1), nn.BatchNorm2d(channels[8] // 2),
                                  _lrelu(), _conv(channels[8] // 2, 1, 4))
        self.projection = ConditionEmbedding(channels[8], normalize=True)
        self.defect_projection = DefectEmbedding(channels[8], len(territories)) if territories else None
        self.classifier = nn.Linear(channels[8], sum(CONDITION_CLASSES))
        # with defect axes: per hemisphere, territory logits (none, unknown, territories) and the severity, from the
        # last map pooled over each half of the image (a hemisphere each: see ``hemisphere_pool``)
        self.defect_head = nn.Linear(2 * channels[8], 2 * (len(territories) + 3)) if territories else None
        self.decode_whole = Decoder(channels[8], width, reconstruction_size)
        self.decode_quadrant = Decoder(channels[16], width, reconstruction_size)
        self.reconstruction_size = reconstruction_size

    def forward(self, image: torch.Tensor, condition: torch.Tensor, quadrant: int | None = None,
                group: int | None = None):
        """Images [B, 1, S, S] and conditions [B, 3] -> (logits [B, 25], class logits [B, 9]), and with ``quadrant``
        also the two reconstructions [B, 1, R, R]. ``group``: images per minibatch group (None:
        ``minibatch_group(B)``; a batch of real and generated images passes that of each half)."""
        stem = self.stem(image)
        x, features = stem, {stem.shape[-1]: stem}
        for resolution, down in zip(self.down_resolutions, self.downs):
            x = down(x)
            features[resolution] = x
        x = self.excitation(stem, x)
        pooled = x.mean(dim=(2, 3))
        projection = (embed_condition(self.projection, self.defect_projection, condition) * pooled
                      ).sum(dim=1, keepdim=True)
        logits = self.head(torch.cat([x, minibatch_std(x, group)], dim=1)).flatten(1) + projection
        class_logits = self.classifier(pooled)
        if self.defect_head is not None:
            class_logits = torch.cat([class_logits, self.defect_head(hemisphere_pool(x))], dim=1)
        if quadrant is None:
            return logits, class_logits
        whole = self.decode_whole(x)
        part = self.decode_quadrant(crop_quadrant(features[16], quadrant))
        return logits, class_logits, (whole, part)


def hemisphere_pool(features: torch.Tensor) -> torch.Tensor:
    """Maps [B, C, H, W] of a canonical slice -> [B, 2C]: the mean over the columns toward the patient's left (the
    right half of the array), then over those toward the patient's right. A global mean loses which hemisphere a
    feature came from, and with it most of a defect's size."""
    half = features.shape[-1] // 2
    return torch.cat([features[..., half:].mean(dim=(2, 3)), features[..., :half].mean(dim=(2, 3))], dim=1)


def condition_classification_loss(class_logits: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the level, pattern and side predictions (the first sum(CONDITION_CLASSES) columns of
    ``class_logits``) against the encoded conditions [B, 3 or 7]."""
    heads = torch.split(class_logits[:, :sum(CONDITION_CLASSES)].float(), CONDITION_CLASSES, dim=1)
    return sum(F.cross_entropy(head, condition[:, column].long()) for column, head in enumerate(heads))


# The defect head regresses 12 x severity (about 2-6): a squared error of the severity itself (spread 0.1) weighs
# nothing beside the adversarial and class losses, and at 4 x the generator still ignored the severity it was given.
SEVERITY_SCALE = 12.0


def _hemisphere_outputs(class_logits: torch.Tensor) -> torch.Tensor:
    """The defect head's part of the discriminator's class logits [B, C] -> [B, 2 hemispheres (left, right),
    territories + 3]: per hemisphere the territory logits (none, unknown, the model's territories), then the
    severity reading."""
    outputs = class_logits[:, sum(CONDITION_CLASSES):].float()
    return outputs.reshape(len(outputs), 2, -1)


def defect_loss(class_logits: torch.Tensor, condition: torch.Tensor,
                calibration: "SeverityCalibration | None" = None) -> torch.Tensor:
    """The defect head's loss (a discriminator with defect axes): per hemisphere the cross-entropy of its territory
    (none or a territory; unknown ones left out) plus the squared error of its severity reading (unknown severities
    left out), against the encoded conditions [B, 7]. Unlike a class reward, the severity term pulls a generated
    defect toward the requested size from both sides, so mild defects are rewarded for being mild.

    The reading's target is SEVERITY_SCALE x the severity (the discriminator's own loss), or with ``calibration``
    (the generator's loss) what the head reads on real hemispheres of that territory and severity."""
    per_hemisphere = _hemisphere_outputs(class_logits)
    total = per_hemisphere.new_zeros(())
    for hemisphere in range(2):
        territory = condition[:, 3 + 2 * hemisphere].long()
        severity = condition[:, 4 + 2 * hemisphere].float()
        known = territory != UNKNOWN_TERRITORY
        if known.any():
            total = total + F.cross_entropy(per_hemisphere[known, hemisphere, :-1], territory[known])
        known = severity >= 0
        if known.any():
            target = (SEVERITY_SCALE * severity[known] if calibration is None
                      else calibration.target(territory[known], severity[known]))
            total = total + F.mse_loss(per_hemisphere[known, hemisphere, -1], target)
    return total


class SeverityCalibration(nn.Module):
    """What the defect head reads on REAL hemispheres, per territory slot (none, unknown, the model's territories):
    the least-squares line reading = a + b x severity over exponentially weighted running sums, updated from every
    discriminator step's real batch.

    Why: a head trained by squared error reads E[severity | image], pulled toward the mean of its targets, most of
    them 0 (the unaffected hemispheres). It reads a real mild defect as milder than it is, so a generator rewarded
    for a reading of SEVERITY_SCALE x the requested severity draws every defect larger than real ones of that
    severity (the measurements are in the bundles' docs/realism.md). Rewarded for the head's reading of real defects
    of that territory and severity instead, it draws defects the head cannot tell from them.
    """

    DECAY = 0.99  # weight of the running sums per update: about the last 100 real batches
    MINIMUM_WEIGHT = 8.0  # hemispheres (running weight) a territory needs before its line is used
    MINIMUM_SPREAD = 1e-3  # severity variance below which the line is flat (its mean reading)

    def __init__(self, territory_slots: int):
        super().__init__()
        # per slot: weight, sum of severity, of severity^2, of reading, of severity x reading
        self.register_buffer("sums", torch.zeros(territory_slots, 5, dtype=torch.float64))

    @torch.no_grad()
    def update(self, class_logits: torch.Tensor, condition: torch.Tensor) -> None:
        """Add the head's readings on real images (``class_logits`` [B, C] of the discriminator, ``condition``
        [B, 7]) to the running sums."""
        readings = _hemisphere_outputs(class_logits)[..., -1].double()
        territory = condition[:, [3, 5]].long().reshape(-1)
        severity = condition[:, [4, 6]].double().reshape(-1)
        reading = readings.reshape(-1)
        known = severity >= 0
        territory, severity, reading = territory[known], severity[known], reading[known]
        rows = torch.stack([torch.ones_like(severity), severity, severity ** 2, reading, severity * reading], dim=1)
        added = torch.zeros_like(self.sums).index_add_(0, territory, rows)
        self.sums.mul_(self.DECAY).add_(added)

    def target(self, territory: torch.Tensor, severity: torch.Tensor) -> torch.Tensor:
        """The head's expected reading on a real hemisphere of ``territory`` [N] (slot indices) and ``severity`` [N]
        (fractions) -> [N]; SEVERITY_SCALE x severity where a territory has too few real hemispheres yet."""
        weight, s, s2, r, sr = self.sums[territory].unbind(dim=1)
        safe = weight.clamp(min=1e-9)
        mean_s, mean_r = s / safe, r / safe
        spread = s2 / safe - mean_s ** 2
        slope = torch.where(spread > self.MINIMUM_SPREAD, (sr / safe - mean_s * mean_r) / spread.clamp(min=1e-12),
                            torch.zeros_like(spread))
        calibrated = mean_r + slope * (severity.double() - mean_s)
        fallback = SEVERITY_SCALE * severity.double()
        return torch.where(weight >= self.MINIMUM_WEIGHT, calibrated, fallback).to(severity.dtype)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype on CUDA (bfloat16 where supported, else float16); None on the CPU (full precision)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device):
    """The one mixed-precision context for training and sampling: active on CUDA, a no-op on the CPU."""
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
