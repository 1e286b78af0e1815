"""The noise a cohort's reconstructions carry, estimated from its images alone (no noise-free image needed, so it
works for imported real cohorts too).

Model: a reconstructed slice = its expected image ``m`` + noise whose local SD follows the counts,
``sd = gain * m ** exponent`` (Poisson data through OSEM: exponent near 0.5), and whose correlation is that of white
noise blurred by a Gaussian of ``sigma_px`` pixels (OSEM's own smoothing and the post-filter together).

Estimation, on slices in counts: ``m`` is each slice blurred by a wider Gaussian (``SEPARATION_SIGMA_PX``), the
residual is slice - m. The count dependence is fitted on the residual variance per bin of ``m`` (inside the head).
The residual, whitened by that dependence, has its power spectrum fitted as ``c exp(-4 pi^2 sigma^2 f^2)`` times what
the separation keeps, in the band ``FIT_BAND`` where the noise outweighs the anatomy (the system resolution and the
post-filter smooth the anatomy more than the noise); that gives ``sigma_px`` and the share of the residual that is
noise, from which the gain follows.

Checked against the truth on the simulated acquisition (two noise realizations of the same phantoms:
``scripts/validate_noise_model.py``) and on known Gaussian-correlated noise (tests/test_noise_model.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SEPARATION_SIGMA_PX = 1.5  # the blur that stands in for the expected image
BRAIN_SHARE = 0.25  # pixels whose expected value is above this share of the slice's maximum are fitted
MEAN_BINS = 12
FIT_BAND = (0.2, 0.45)  # cycles/pixel where the correlation is fitted


@dataclass(frozen=True)
class NoiseModel:
    """Reconstruction noise: SD ``gain * m ** exponent`` for an expected value ``m`` (in ``unit`` counts), white noise
    blurred by a Gaussian of ``sigma_px`` pixels."""

    gain: float
    exponent: float
    sigma_px: float
    unit: float  # counts per unit of m in the fit (the cohort's count scale: m in [0, 1])

    def network_arguments(self) -> dict:
        """The generator's ``output_noise`` (``ReconstructionNoise``'s arguments: m in units of the count scale)."""
        return {"gain": round(self.gain, 6), "exponent": round(self.exponent, 6), "sigma_px": round(self.sigma_px, 4)}


def _kept(f: np.ndarray) -> np.ndarray:
    """Share of the power at frequency ``f`` (cycles/pixel) that subtracting the separation blur keeps."""
    return (1 - np.exp(-2 * np.pi ** 2 * SEPARATION_SIGMA_PX ** 2 * f ** 2)) ** 2


def _gaussian_noise_share(sigma_px: float, separation_px: float, size: int = 64) -> float:
    """Share of the variance of Gaussian-correlated noise (``sigma_px``) left by subtracting its blur
    (``separation_px``)."""
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    spectrum = np.exp(-4 * np.pi ** 2 * sigma_px ** 2 * f2)
    kept = (1 - np.exp(-2 * np.pi ** 2 * separation_px ** 2 * f2)) ** 2
    return float((spectrum * kept).sum() / spectrum.sum())


def _radial_power(fields: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Power of windowed fields [N, S, S] (window [N, S, S]) per radial frequency (cycles/pixel), scaled so that its
    mean over the 2D frequency grid is the fields' variance inside the window -> (frequencies [K], power [K])."""
    size = fields.shape[-1]
    power = (np.abs(np.fft.fft2(fields * window)) ** 2).sum(axis=0) / (window ** 2).sum()
    f = np.fft.fftfreq(size)
    bins = np.round(np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) * size).astype(int)
    counts = np.bincount(bins.ravel())
    sums = np.bincount(bins.ravel(), power.ravel())
    keep = counts > 0
    return np.arange(len(counts))[keep] / size, sums[keep] / counts[keep]


def fit_count_dependence(expected: np.ndarray, residual: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """Residual variance against the expected value, both [N, S, S] (m in [0, 1]), over the pixels ``inside``,
    fitted as ``variance = a * m ** b`` on ``MEAN_BINS`` equally filled bins of m -> (a, b)."""
    m, r = expected[inside], residual[inside]
    edges = np.quantile(m, np.linspace(0, 1, MEAN_BINS + 1))
    which = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, MEAN_BINS - 1)
    centres = np.array([m[which == k].mean() for k in range(MEAN_BINS)])
    variances = np.array([r[which == k].var() for k in range(MEAN_BINS)])
    slope, intercept = np.polyfit(np.log(centres), np.log(variances), 1)
    return float(np.exp(intercept)), float(slope)


def fit_correlation(whitened: np.ndarray, inside: np.ndarray, kept=lambda f: np.ones_like(f),
                    band: tuple[float, float] = FIT_BAND) -> tuple[float, float]:
    """The power spectrum of unit-variance noise fields [N, S, S] inside a smooth window around ``inside``, fitted
    as ``c exp(-4 pi^2 sigma^2 f^2) kept(f)`` over ``band`` (cycles/pixel) -> (sigma in pixels, share of the
    fields' variance that this spectrum explains over all frequencies)."""
    window = ndimage.gaussian_filter(inside.astype(np.float64), (0, 1.0, 1.0))
    f, power = _radial_power(whitened, window)
    chosen = (f >= band[0]) & (f <= band[1])
    decline, log_c = np.polyfit(f[chosen] ** 2, np.log(power[chosen] / kept(f[chosen])), 1)
    sigma_px = float(np.sqrt(max(-decline, 0.0) / (4 * np.pi ** 2)))
    grid = np.fft.fftfreq(whitened.shape[-1])
    f2 = grid[:, None] ** 2 + grid[None, :] ** 2
    explained = np.mean(np.exp(log_c - 4 * np.pi ** 2 * sigma_px ** 2 * f2) * kept(np.sqrt(f2)))
    return sigma_px, float(explained / np.mean(whitened[inside] ** 2))


def estimate_noise_model(images: np.ndarray, unit: float) -> NoiseModel:
    """Fit the noise model to slices [N, S, S] in counts; ``unit`` = counts of m = 1 (the cohort's count scale)."""
    if images.ndim != 3 or len(images) < 2:
        raise ValueError(f"need slices [N, S, S] with N >= 2, got shape {images.shape}")
    scaled = images.astype(np.float64) / unit
    expected = ndimage.gaussian_filter(scaled, (0, SEPARATION_SIGMA_PX, SEPARATION_SIGMA_PX))
    residual = scaled - expected
    brain = expected > BRAIN_SHARE * expected.max(axis=(1, 2), keepdims=True)
    a, b = fit_count_dependence(expected, residual, brain)
    floor = np.quantile(expected[brain], 0.5 / MEAN_BINS)
    whitened = residual / np.sqrt(a * np.clip(expected, floor, None) ** b)
    sigma_px, noise_share = fit_correlation(whitened, brain, kept=_kept)
    # the residual's variance a m^b: noise_share of it is noise, itself the separation's share of the whole noise
    gain = float(np.sqrt(a * min(noise_share, 1.0) / _gaussian_noise_share(sigma_px, SEPARATION_SIGMA_PX)))
    return NoiseModel(gain=gain, exponent=b / 2, sigma_px=sigma_px, unit=float(unit))
