"""The cohort noise model is recovered from images alone, for known noise."""
import numpy as np
import pytest
from scipy import ndimage

from spectgan.cohorts.noise import estimate_noise_model


def _phantoms(count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth heads in [0, 1]: ellipses of varied size and contrast, blurred well beyond the noise's correlation."""
    y, x = np.mgrid[:size, :size] - size / 2
    heads = []
    for _ in range(count):
        a, b = rng.uniform(0.3, 0.42, 2) * size
        head = ((x / a) ** 2 + (y / b) ** 2 < 1) * rng.uniform(0.5, 1.0)
        head += ((x / (0.5 * a)) ** 2 + (y / (0.5 * b)) ** 2 < 1) * rng.uniform(-0.3, 0.0)
        heads.append(ndimage.gaussian_filter(head, 4.0))
    return np.stack(heads)


@pytest.mark.parametrize("gain, exponent, sigma_px", [(0.06, 0.5, 1.0), (0.04, 0.3, 1.1)])
def test_known_noise_is_recovered(gain, exponent, sigma_px):
    rng = np.random.default_rng(0)
    expected = _phantoms(300, 64, rng)
    white = rng.standard_normal(expected.shape)
    correlated = ndimage.gaussian_filter(white, (0, sigma_px, sigma_px))
    correlated /= correlated.std()
    unit = 250.0
    images = (expected + gain * correlated * np.clip(expected, 0, None) ** exponent) * unit
    model = estimate_noise_model(images, unit=unit)
    assert model.sigma_px == pytest.approx(sigma_px, abs=0.25)
    assert model.exponent == pytest.approx(exponent, abs=0.12)
    assert model.gain == pytest.approx(gain, rel=0.2)
    assert set(model.network_arguments()) == {"gain", "exponent", "sigma_px"}


def test_too_few_slices_are_refused():
    with pytest.raises(ValueError, match=r"N >= 2"):
        estimate_noise_model(np.zeros((1, 8, 8)), unit=1.0)
