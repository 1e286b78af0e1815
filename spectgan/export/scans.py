"""Export of generated scans (``spectgan.results.GenerationResult``) to a PACS: DICOM (NM + hemisphere SEG + SR,
``spectgan.export.dicom``) written into a folder, then sent through that folder's outbox (``spectgan.export.pacs``).
The ``generate`` command, the 3D Slicer module and the spectgan page export this way.

highdicom and the DICOM network packages are imported when a scan is encoded or sent, not with this module (the
Slicer module installs them on first export).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from spectgan.errors import InvalidRequestError
from spectgan.results import GenerationResult

if TYPE_CHECKING:
    from spectgan.export.dicom import SyntheticRun
    from spectgan.export.pacs import ExportResult


def require_new_dicom_folder(folder: str | Path) -> Path:
    """``folder`` when it holds no files yet (an export folder holds one batch: one study, one outbox)."""
    folder = Path(folder)
    if folder.exists() and any(path.is_file() for path in folder.rglob("*")):
        raise InvalidRequestError(f"{folder} already holds an export (DICOM files and their outbox); write the new "
                                  f"scans to another folder, or resend that one with: spectgan export {folder} "
                                  "--retry")
    return folder


def write_dicom(results: Sequence[GenerationResult], folder: str | Path, run: SyntheticRun | None = None) -> Path:
    """Encode each scan as DICOM (NM + hemisphere SEG + SR) into ``folder/<scan name>/``; ``folder`` must hold no
    files yet, and every scan must have its statistics (DicomError naming those without, before anything is written).
    The scans over one reference study go into the synthetic study of that reference and ``run`` (a new run when
    None; ``SyntheticRun.study_for``: a result made from the reference that asked to be filed with the source goes
    into the reference's own study): pass the same run for the batches of several models to put them in one
    study."""
    from spectgan.export.dicom import DicomError, SyntheticRun, encode_scan, write_series

    unmeasured = [f"{result.name} ({result.stats_error or 'no statistics'})" for result in results
                  if result.stats is None]
    if unmeasured:
        raise DicomError(f"cannot encode scans without hemisphere statistics as DICOM: {'; '.join(unmeasured)}")
    folder = require_new_dicom_folder(folder)
    run = run or SyntheticRun()
    for result in results:
        write_series(encode_scan(result, run.study_for(result)), folder / result.name)
    return folder


def send_to_pacs(folder: str | Path, pacs_url: str) -> ExportResult:
    """Send a DICOM folder through ``spectgan.export.pacs``'s outbox (what the PACS has not confirmed yet); its
    ExportResult. A PacsError says what stays pending and the command that resends it."""
    from spectgan.export.pacs import PacsError, export_folder

    try:
        return export_folder(folder, pacs_url)
    except PacsError as error:
        raise type(error)(f"{error}\nThe DICOM files stay in {folder}; resend with: spectgan export {folder} "
                          "--retry") from error


def export_results(results: Sequence[GenerationResult], folder: str | Path, pacs_url: str,
                   run: SyntheticRun | None = None) -> ExportResult:
    """``write_dicom`` then ``send_to_pacs``: the scans of one batch, over one reference, as the synthetic study of
    that reference and ``run`` in the PACS."""
    return send_to_pacs(write_dicom(results, folder, run), pacs_url)
