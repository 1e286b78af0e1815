"""Sampling a model bundle: ``spectgan.models.fastgan.sample(...)`` and ``spectgan sample``.

Same seed, condition, ``n``, ``psi`` and weights give bit-identical counts on the CPU with the same number of torch
threads (see ``spectgan.models.fastgan.inference``). A
model with defect axes also takes the defect's ``territory`` and ``severity`` (the forms of ``spectgan.lesions``);
what a request leaves out it draws from its training cohort, slice by slice, from the seed
(``FastGANSynthesizer.resolve``).
"""
from __future__ import annotations

import csv
import io
import numbers
import operator
import secrets
from pathlib import Path
from typing import Sequence

import numpy as np

from spectgan.conditions import Condition, describe_allowed, parse_condition
from spectgan.files import atomic_write_bytes, atomic_write_image
from spectgan.lesions import LESION_AXES, lesion_text, with_lesions
from spectgan.models.fastgan.bundle import Bundle, load_bundle
from spectgan.models.fastgan.figures import save_image_grid
from spectgan.models.fastgan.synthesizer import PSI, FastGANSynthesizer
from spectgan.models.synthesizer import check_lesions
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


def model_of(bundle: Bundle | str | Path) -> FastGANSynthesizer:
    """A bundle folder or ``load_bundle``'s result as the model contract's Synthesizer."""
    return FastGANSynthesizer(bundle if isinstance(bundle, Bundle) else load_bundle(bundle))


def checked_condition(model: FastGANSynthesizer, level, pattern, side=None, territory=None, severity=None
                      ) -> Condition:
    """Validate a request against a bundle's levels (ValueError listing the model's valid conditions) and its defect
    axes (InvalidRequestError naming the territories and severities it takes)."""
    try:
        condition = with_lesions(parse_condition(level, pattern, side, levels=model.levels), territory, severity)
    except ValueError as error:
        raise ValueError(f"{error}. Valid conditions for {model.name}: {describe_allowed(model.levels)}") from None
    check_lesions(model, condition)
    return condition


def sample(bundle: Bundle | str | Path, level, pattern, side=None, seed: int | None = None, n: int = 1,
           psi: float = 1.0, territory=None, severity=None) -> tuple[np.ndarray, int]:
    """Generate ``n`` slices of one condition: float32 counts [n, H, W] in the canonical orientation, and the seed.

    ``bundle`` is a bundle folder or ``load_bundle``'s result. ``seed=None`` draws one at random. ``territory`` and
    ``severity`` (a model with defect axes): what they leave out is drawn per slice (``FastGANSynthesizer.resolve``
    with the same seed and ``n`` gives the lesions drawn).
    Raises ValueError for an invalid condition (naming what is allowed), seed, ``n`` or ``psi``, and
    InvalidRequestError for a territory or severity the model does not take.
    """
    model = model_of(bundle)
    condition = checked_condition(model, level, pattern, side, territory, severity)
    n = _integer(n, "n", 1, MAX_IMAGES)
    seed = draw_seed() if seed is None else _integer(seed, "seed", 0, MAX_SEED)
    return model.sample([condition] * n, seed, {PSI.name: _checked_psi(psi)}), seed


def write_samples(counts: np.ndarray, conditions: Sequence[Condition], seed: int, out_dir: Path,
                  count_scale: float) -> list[Path]:
    """Write each slice as a one-slice NIfTI in template geometry, one PNG of all of them and, when the slices have
    lesions (a model with defect axes), a CSV of each file's territory and severity; returns the paths.
    ``conditions``: one per slice, all of one label."""
    out_dir = Path(out_dir)
    label = conditions[0].label
    stem = f"{label}_seed{seed}"
    slices = []
    for index, (image, condition) in enumerate(zip(counts, conditions)):
        path = out_dir / f"{stem}_{index:03d}.nii.gz"
        atomic_write_image(canonical_image(image, condition.level), path)
        slices.append(path)
    png = out_dir / f"{stem}.png"
    save_image_grid([(label, counts)], png, count_scale, title=f"{label}, seed {seed} (counts)")
    if not any(condition.lesions for condition in conditions):
        return slices + [png]
    return slices + [png, _write_lesions(out_dir / f"{stem}.csv", slices, conditions)]


def _write_lesions(path: Path, files: Sequence[Path], conditions: Sequence[Condition]) -> Path:
    """``file,territory,severity`` per slice (manifest cells: ``spectgan.lesions.lesion_text``)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(("file", *LESION_AXES))
    writer.writerows((file.name, *(lesion_text(condition, axis) for axis in LESION_AXES))
                     for file, condition in zip(files, conditions))
    atomic_write_bytes(path, text.getvalue().encode())
    return path


def add_sample_command(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="generate synthetic slices from a trained model bundle")
    parser.add_argument("--bundle", required=True, help="model bundle folder (e.g. models/spect_fastgan_A)")
    parser.add_argument("--level", required=True, help="CER, BG or COR (the bundle's levels)")
    parser.add_argument("--pattern", required=True, help="normal, unilateral or bilateral")
    parser.add_argument("--side", default=None, help="left or right (unilateral only)")
    parser.add_argument("--territory", help="defect territory for a model with defect axes, e.g. MCA, or per side for "
                        "bilateral: left=MCA;right=ACA (default: drawn from the training cohort per slice)")
    parser.add_argument("--severity", help="defect severity (fractional CBF reduction, e.g. 0.3), or per side for "
                        "bilateral: left=0.2;right=0.4 (default: drawn from the training cohort per slice)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    parser.add_argument("--n", type=int, default=1, help="number of slices")
    parser.add_argument("--psi", type=float, default=1.0, help="truncation in [0, 1] (1: none)")
    parser.add_argument("--out", required=True, help="output folder for NIfTI slices and a PNG")
    parser.set_defaults(func=_run_sample)


def _run_sample(args) -> int:
    model = model_of(args.bundle)
    counts, seed = sample(model.bundle, args.level, args.pattern, args.side, args.seed, args.n, args.psi,
                          args.territory, args.severity)
    condition = checked_condition(model, args.level, args.pattern, args.side, args.territory, args.severity)
    conditions = model.resolve([condition] * len(counts), seed)
    paths = write_samples(counts, conditions, seed, Path(args.out), model.bundle.metadata["count_scale"])
    print(f"{condition.label}: {len(counts)} slice(s), seed {seed}; wrote {len(paths)} files to {args.out}")
    return 0
