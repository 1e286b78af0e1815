"""File helpers shared by every writer (cohorts, checkpoints, figures, DICOM, the PACS outbox, result files): a file
is written completely or not at all, so an interrupted run never leaves half a file under its final name."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import SimpleITK as sitk

NIFTI_SUFFIX = ".nii.gz"  # how spectgan names the NIfTI files it writes (gzip-compressed)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that it is either complete or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_image(image: sitk.Image, path: Path) -> None:
    """Write a SimpleITK image (format from the suffix) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(handle)
    try:
        sitk.WriteImage(image, temporary, True)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
