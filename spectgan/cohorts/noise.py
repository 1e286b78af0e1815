"""The noise a cohort's reconstructions carry, estimated from its images alone (no noise-free image needed, so it
works for imported real cohorts too).

Model: a reconstructed slice = its expected image ``m`` + noise whose local SD follows the counts,
``sd = gain * m ** exponent`` (Poisson data through OSEM: exponent near 0.5), and whose correlation is that of white
noise blurred by a Gaussian of ``sigma_px`` pixels (OSEM's own smoothing and the post-filter together).

Estimation, on slices in counts: ``m`` is each slice blurred by a wider Gaussian (``SEPARATION_SIGMA_PX``), the
residual is slice - m. The count dependence is fitted on the residual variance per bin of ``m`` (inside the head);
the residual's correlation at a few pixel lags, whitened by that dependence, is matched to the correlation that
Gaussian-correlated noise less its blur would have, which gives ``sigma_px``; the gain is corrected for the share of
the noise power the separation removes.

Limit: the separation also passes the edges of the structure. Where the noise is weak against them, or correlated
as widely as the anatomy, ``sigma_px`` comes out too large (tested up to noise of sigma 1 px under structure blurred
by 4 px).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SEPARATION_SIGMA_PX = 1.5  # the blur that stands in for the expected image
BRAIN_SHARE = 0.25  # pixels whose expected value is above this share of the slice's maximum are fitted
MEAN_BINS = 12
SIGMA_GRID_PX = np.linspace(0.3, 3.0, 55)
LAGS = ((0, 1), (1, 0), (0, 2), (2, 0), (1, 1), (0, 3), (3, 0))  # (rows, columns) apart


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


def _gaussian_noise_share(sigma_px: float, separation_px: float, size: int = 64) -> float:
    """Share of the variance of Gaussian-correlated noise (``sigma_px``) left by subtracting its blur
    (``separation_px``)."""
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    spectrum = np.exp(-4 * np.pi ** 2 * sigma_px ** 2 * f2)
    kept = (1 - np.exp(-2 * np.pi ** 2 * separation_px ** 2 * f2)) ** 2
    return float((spectrum * kept).sum() / spectrum.sum())


def _correlation_model(sigma_px: float, separation_px: float, size: int = 64) -> np.ndarray:
    """Correlation [len(LAGS)] at ``LAGS`` of Gaussian-correlated noise (``sigma_px``) less its blur
    (``separation_px``), from its power spectrum."""
    f = np.fft.fftfreq(size)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    spectrum = np.exp(-4 * np.pi ** 2 * sigma_px ** 2 * f2) * (1 - np.exp(-2 * np.pi ** 2 * separation_px ** 2 * f2)) ** 2
    covariance = np.real(np.fft.ifft2(spectrum))
    return np.array([covariance[dy % size, dx % size] for dy, dx in LAGS]) / covariance[0, 0]


def _correlation(residual: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Measured correlation [len(LAGS)] of residuals [N, S, S] between pixel pairs both ``inside`` [N, S, S]."""
    size = residual.shape[-1]
    values = []
    for dy, dx in LAGS:
        a = (slice(None), slice(0, size - dy), slice(0, size - dx))
        b = (slice(None), slice(dy, size), slice(dx, size))
        both = inside[a] & inside[b]
        values.append(float((residual[a] * residual[b])[both].sum()
                            / np.sqrt((residual[a] ** 2)[both].sum() * (residual[b] ** 2)[both].sum())))
    return np.array(values)


def estimate_noise_model(images: np.ndarray, unit: float) -> NoiseModel:
    """Fit the noise model to slices [N, S, S] in counts; ``unit`` = counts of m = 1 (the cohort's count scale)."""
    if images.ndim != 3 or len(images) < 2:
        raise ValueError(f"need slices [N, S, S] with N >= 2, got shape {images.shape}")
    scaled = images.astype(np.float64) / unit
    expected = ndimage.gaussian_filter(scaled, (0, SEPARATION_SIGMA_PX, SEPARATION_SIGMA_PX))
    residual = scaled - expected
    brain = expected > BRAIN_SHARE * expected.max(axis=(1, 2), keepdims=True)
    m, r = expected[brain], residual[brain]
    edges = np.quantile(m, np.linspace(0, 1, MEAN_BINS + 1))
    which = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, MEAN_BINS - 1)
    centres = np.array([m[which == k].mean() for k in range(MEAN_BINS)])
    variances = np.array([r[which == k].var() for k in range(MEAN_BINS)])
    slope, intercept = np.polyfit(np.log(centres), np.log(variances), 1)
    exponent = slope / 2
    # the correlation: residuals whitened by the count dependence, at a few lags, against the model's
    sd = np.sqrt(np.exp(intercept) * np.clip(expected, centres.min(), None) ** slope)
    measured = _correlation(residual / sd, brain)
    errors = [np.sum((measured - _correlation_model(sigma, SEPARATION_SIGMA_PX)) ** 2) for sigma in SIGMA_GRID_PX]
    sigma_px = float(SIGMA_GRID_PX[int(np.argmin(errors))])
    gain = float(np.sqrt(np.exp(intercept) / _gaussian_noise_share(sigma_px, SEPARATION_SIGMA_PX)))
    return NoiseModel(gain=gain, exponent=float(exponent), sigma_px=sigma_px, unit=float(unit))
