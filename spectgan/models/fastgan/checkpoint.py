"""A training run's checkpoint: the one file a run resumes from and a bundle is exported from.

``RUN/checkpoint.pt`` is written atomically (a complete file or the previous one, even under SIGKILL) and holds only
tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``:

- ``format``, ``step``, ``settings`` (the run's settings), ``network`` (keyword arguments of the generator and the
  discriminator);
- ``generator``, ``discriminator``, ``ema`` (state dicts), ``optimizer_generator``, ``optimizer_discriminator``,
  ``grad_scaler``;
- ``rng``: one entry per training process (``cpu`` and ``cuda`` generator states);
- ``history`` (mean losses every ``log_every`` steps), ``elapsed_s`` (training time over all sessions),
  ``commands`` (each command that ran the run), ``data`` (count scale, pixel spacing, image size, slices per
  condition, the cohort's ``cohort.json``), ``hardware``.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch

from spectgan.errors import SpectganError
from spectgan.files import atomic_write_bytes
from spectgan.models.fastgan.networks import Generator

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(run_dir: Path, checkpoint: dict) -> None:
    """Write ``RUN/checkpoint.pt`` atomically."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(checkpoint_path(run_dir), buffer.getvalue())


def load_checkpoint(run_dir: Path) -> dict:
    """Read a run's checkpoint on the CPU; a missing or foreign file is a SpectganError."""
    path = checkpoint_path(run_dir)
    if not path.is_file():
        raise SpectganError(f"{run_dir} has no {CHECKPOINT_NAME}: not a training run (start one with spectgan train)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, not a pickle traceback
        raise SpectganError(f"cannot read {path}: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise SpectganError(f"{path} is not a spectgan checkpoint of format {CHECKPOINT_FORMAT}")
    return checkpoint


def ema_generator(checkpoint: dict) -> Generator:
    """The checkpoint's EMA generator on the CPU (its batch-norm statistics are those of the trained generator)."""
    generator = Generator(**checkpoint["network"]["generator"])
    generator.load_state_dict(checkpoint["ema"])
    return generator
