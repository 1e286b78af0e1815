"""Sampling a model bundle: ``spectgan.models.fastgan.sample(...)`` and ``spectgan sample``.

Same seed, condition, ``n``, ``psi`` and weights give bit-identical counts on the CPU (see ``gan.inference``).
"""
from __future__ import annotations

import numbers
import operator
import secrets
from pathlib import Path

import numpy as np

from spectgan.cohorts.format import atomic_write_image
from spectgan.conditions import Condition, describe_allowed, parse_condition, parse_levels
from spectgan.models.fastgan.bundle import Bundle, load_bundle
from spectgan.models.fastgan.figures import save_image_grid
from spectgan.models.fastgan.inference import generate
from spectgan.models.fastgan.networks import to_counts
from spectgan.geometry.template import canonical_image

MAX_SEED = 2 ** 63 - 1
MAX_IMAGES = 10_000  # per request


def draw_seed() -> int:
    """A fresh random seed for a request that gave none (echoed back to the caller)."""
    return secrets.randbelow(2 ** 31)


def _integer(value, what: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high] (Python or NumPy integers; not bool), else a ValueError."""
    try:
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or not low <= number <= high:
        raise ValueError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return number


def _checked_psi(psi) -> float:
    if isinstance(psi, bool) or not isinstance(psi, numbers.Real) or not 0.0 <= psi <= 1.0:
        raise ValueError(f"psi (truncation) must be a number in [0, 1], got {psi!r}")
    return float(psi)


def resolve_condition(metadata: dict, level, pattern, side=None) -> Condition:
    """Validate a request against a bundle's levels; the ValueError lists the model's valid conditions."""
    try:
        return parse_condition(level, pattern, side, levels=parse_levels(metadata["levels"]))
    except ValueError as error:
        raise ValueError(f"{error}. Valid conditions for {metadata['name']}: "
                         f"{describe_allowed(parse_levels(metadata['levels']))}") from None


def sample(bundle: Bundle | str | Path, level, pattern, side=None, seed: int | None = None, n: int = 1,
           psi: float = 1.0) -> tuple[np.ndarray, int]:
    """Generate ``n`` slices of one condition: float32 counts [n, H, W] in the canonical orientation, and the seed.

    ``bundle`` is a bundle folder or ``load_bundle``'s result. ``seed=None`` draws one at random.
    Raises ValueError for an invalid condition (naming what is allowed), seed, ``n`` or ``psi``.
    """
    generator, metadata = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    condition = resolve_condition(metadata, level, pattern, side)
    n = _integer(n, "n", 1, MAX_IMAGES)
    seed = draw_seed() if seed is None else _integer(seed, "seed", 0, MAX_SEED)
    images = generate(generator, [condition] * n, seed, _checked_psi(psi))
    return to_counts(images[:, 0], metadata["count_scale"]).numpy(), seed


def write_samples(counts: np.ndarray, condition: Condition, seed: int, out_dir: Path, count_scale: float
                  ) -> list[Path]:
    """Write each slice as a one-slice NIfTI in template geometry plus one PNG of all of them; returns the paths."""
    out_dir = Path(out_dir)
    stem = f"{condition.label}_seed{seed}"
    paths = []
    for index, image in enumerate(counts):
        path = out_dir / f"{stem}_{index:03d}.nii.gz"
        atomic_write_image(canonical_image(image, condition.level), path)
        paths.append(path)
    png = out_dir / f"{stem}.png"
    save_image_grid([(condition.label, counts)], png, count_scale, title=f"{condition.label}, seed {seed} (counts)")
    return paths + [png]


def add_sample_command(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="generate synthetic slices from a trained model bundle")
    parser.add_argument("--bundle", required=True, help="model bundle folder (e.g. models/spect_fastgan_A)")
    parser.add_argument("--level", required=True, help="CER, BG or COR (the bundle's levels)")
    parser.add_argument("--pattern", required=True, help="normal, unilateral or bilateral")
    parser.add_argument("--side", default=None, help="left or right (unilateral only)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    parser.add_argument("--n", type=int, default=1, help="number of slices")
    parser.add_argument("--psi", type=float, default=1.0, help="truncation in [0, 1] (1: none)")
    parser.add_argument("--out", required=True, help="output folder for NIfTI slices and a PNG")
    parser.set_defaults(func=_run_sample)


def _run_sample(args) -> int:
    bundle = load_bundle(args.bundle)
    counts, seed = sample(bundle, args.level, args.pattern, args.side, args.seed, args.n, args.psi)
    condition = resolve_condition(bundle.metadata, args.level, args.pattern, args.side)
    paths = write_samples(counts, condition, seed, Path(args.out), bundle.metadata["count_scale"])
    print(f"{condition.label}: {len(counts)} slice(s), seed {seed}; wrote {len(paths)} files to {args.out}")
    return 0
